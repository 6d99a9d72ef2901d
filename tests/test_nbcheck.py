"""`docs/nbcheck.py`, which `make nbtest` runs: the notebooks run as with `nbdev_test`, and the outputs stored in them
must be what their cells give. Tiny generated notebooks in tmp_path (no model, no package import); the command line
runs in a subprocess, as `make` runs it (execnb's shell would otherwise switch this process's matplotlib backend)."""
import json, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/'docs'))
import nbcheck  # noqa: E402

def _out(text): return [{'output_type': 'execute_result', 'execution_count': None, 'metadata': {},
                         'data': {'text/plain': text.splitlines(True)}}]
def _stream(text, name='stdout'): return [{'output_type': 'stream', 'name': name, 'text': text.splitlines(True)}]

def _nb(path:Path, *cells) -> Path:
    "A notebook of `cells`: markdown strings starting with '# ', else code `src` or `(src, stored_outputs)`."
    res = []
    for i, c in enumerate(cells):
        src, outs = c if isinstance(c, tuple) else (c, [])
        cell = {'id': f'c{i}', 'metadata': {}, 'source': src.splitlines(True)}
        if src.startswith('# '): cell['cell_type'] = 'markdown'
        else: cell.update(cell_type='code', execution_count=None, outputs=outs)
        res.append(cell)
    nb = {'cells': res, 'nbformat': 4, 'nbformat_minor': 5,
          'metadata': {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}}}
    path.write_text(json.dumps(nb, indent=1) + '\n')
    return path

def _run(*args, workers=0):
    r = subprocess.run([sys.executable, str(ROOT/'docs'/'nbcheck.py'), '--n_workers', str(workers), *map(str, args)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout, r.stderr

def _line(stdout, name): return next(l for l in stdout.splitlines() if l.startswith(name + ':'))

# ---------------------------------------------------------------- run mode on hand-made stored outputs

@pytest.fixture(scope='module')
def checked(tmp_path_factory):
    d = tmp_path_factory.mktemp('nbcheck')
    _nb(d/'ok.ipynb', '# Within tolerance',
        ('x = 1/3\nx', _out('0.33334')),                                    # 0.333333.. within 1e-4
        ("import sys\nprint('mean', 2/3, '  ')\nprint('progress 10%', file=sys.stderr)",
         _stream('mean 0.6666667\n') + _stream('a progress bar 99%', 'stderr')),  # stderr ignored
        ('class Model: pass\nModel()', _out('<__main__.Model>')),          # as nbdev_clean stores an address
        "print('not stored, not compared')")
    _nb(d/'number.ipynb', '# A number edited by hand',
        ("res = {'ndcg@10': 0.3457, 'n_users': 60}\nres", _out("{'ndcg@10': 0.3467, 'n_users': 60}")))
    _nb(d/'fewer.ipynb', '# Stored outputs, none now', ('y = 2', _out('2')))
    _nb(d/'raises.ipynb', '# Raises', 'a = 1', '1 / 0')
    _nb(d/'slow.ipynb', '# Slow', 'a = 1',
        ("#| slow\nraise RuntimeError('the slow cell ran')", _out('full-size result 42')))
    _nb(d/'varies.ipynb', '# Varies', ('#| varies timing\nimport time\ntime.time()', _out('12.5')))
    return _run(*sorted(d.glob('*.ipynb')))

def test_a_number_changed_beyond_tolerance_fails(checked):
    rc, out, err = checked
    assert rc == 1 and 'FAILED' in _line(out, 'number.ipynb')
    assert 'number.ipynb: cell 2 does not give its stored outputs' in err
    assert "res = {'ndcg@10': 0.3457" in err                             # the cell's first lines
    assert '0.3467 != 0.3457' in err and "-{'ndcg@10': 0.3467" in err and "+{'ndcg@10': 0.3457" in err

def test_within_tolerance_stderr_and_addresses_pass(checked):
    rc, out, err = checked
    assert _line(out, 'ok.ipynb').startswith("ok.ipynb: 3 cells' outputs checked")
    assert 'ok.ipynb' not in err

def test_outputs_that_no_longer_come_fail(checked):
    "execnb keeps a cell's stored outputs when it gives none: nbcheck clears them first."
    rc, out, err = checked
    assert 'FAILED' in _line(out, 'fewer.ipynb') and 'fewer.ipynb: cell 2' in err and 'now none' in err

def test_a_raising_cell_fails_with_nbdevs_traceback(checked):
    rc, out, err = checked
    assert 'FAILED' in _line(out, 'raises.ipynb')
    assert 'ZeroDivisionError in' in err and 'raises.ipynb' in err and 'While Executing Cell #3' in err
    assert err.rstrip().endswith('\tfewer.ipynb\n\tnumber.ipynb\n\traises.ipynb')

def test_a_slow_cell_is_not_run_and_keeps_its_outputs(checked):
    rc, out, err = checked
    assert _line(out, 'slow.ipynb').startswith("slow.ipynb: 0 cells' outputs checked") and 'slow cell ran' not in err

def test_a_varying_cell_is_not_compared(checked):
    rc, out, err = checked
    assert _line(out, 'varies.ipynb').startswith("varies.ipynb: 0 cells' outputs checked")

# ---------------------------------------------------------------- --store

def test_store_writes_outputs_that_then_pass(tmp_path):
    from nbdev.clean import clean_nb
    from execnb.nbio import nb2str
    fn = _nb(tmp_path/'store.ipynb', '# Store',
             "import sys\nprint('hello')\nprint('noise', file=sys.stderr)",
             ('{"a": 1/7}', _out('stale')),
             "import matplotlib.pyplot as plt\nplt.plot([1, 2]);",
             ('#| slow\nraise RuntimeError("the slow cell ran")', _out('full-size result 42')),
             ('#| varies\nimport time\ntime.time()', _out('12.5')))
    rc, out, err = _run('--store', fn)
    assert rc == 0, err
    assert _line(out, 'store.ipynb').startswith('store.ipynb: stored outputs of 3 cells')
    text = fn.read_text()
    nb = json.loads(text)
    code = [c for c in nb['cells'] if c['cell_type'] == 'code']
    assert code[0]['outputs'] == _stream('hello\n')                         # stderr dropped
    assert code[1]['outputs'] == _out(repr({'a': 1/7}))
    assert 'image/png' in code[2]['outputs'][0]['data']
    assert code[3]['outputs'] == _out('full-size result 42')               # slow: kept as stored
    assert code[4]['outputs'] == []                                          # varies: stored bare
    again = json.loads(text); clean_nb(again)
    assert nb2str(again) == text                                             # nbdev_clean leaves it as it is
    # stored outputs pass, twice; an image is only checked to be there
    img = json.loads(text)
    img['cells'][3]['outputs'][0]['data']['image/png'] = 'iVBORw0KGgo='
    (tmp_path/'image.ipynb').write_text(json.dumps(img))
    rc, out, err = _run(fn, tmp_path/'image.ipynb', workers=1)       # one worker process runs both in turn
    assert rc == 0, err
    assert _line(out, 'store.ipynb').startswith("store.ipynb: 3 cells' outputs checked")
    assert _line(out, 'image.ipynb').startswith("image.ipynb: 3 cells' outputs checked")

def test_store_needs_named_notebooks():
    rc, out, err = _run('--store')
    assert rc == 2 and '--store needs the notebooks' in err

# ---------------------------------------------------------------- the comparison rules

@pytest.mark.parametrize('stored,now,same', [
    ('0.3457', '0.34571', True), ('0.3457', '0.3467', False), ('60 users', '61 users', False),
    ('1e-09', '2e-09', True),                                    # absolute tolerance 1e-8
    ('a  b   \n\n', 'a b', True), ('\x1b[31mred\x1b[0m', 'red', True),
    ('<Model at 0x7f3a2b1c0d90>', '<Model>', True), ('id 0x7f3a2b1c0d90', 'id 0x55d1e0a3b2c0', True),
    ('pop 0.1', 'ease 0.1', False), ('0.1 0.2', '0.1', False)])
def test_text_rules(stored, now, same):
    assert (nbcheck.same_text(stored, now) is None) == same

def test_output_rules():
    def img(b): return {'output_type': 'display_data', 'metadata': {}, 'data': {'image/png': b, 'text/plain': '<Fig>'}}
    assert nbcheck.compare([img('AAAA')], [img('BBBB')]) is None                       # image: only its presence
    assert 'different outputs' in nbcheck.compare([img('AAAA')], _out('<Fig>'))
    html = {'output_type': 'execute_result', 'metadata': {}, 'data': {'text/html': '<td>0.5</td>', 'text/plain': '0.5'}}
    html2 = {**html, 'data': {'text/plain': '0.5', 'text/html': '<td>0.50001</td>'}}   # mime order does not matter
    assert nbcheck.compare([html], [html2]) is None
    assert nbcheck.compare(_stream('a\n') + _stream('b\n'), _stream('a\nb\n')) is None  # stdout joined
    assert nbcheck.compare(_stream('a\n') + _stream('warn', 'stderr'), _stream('a\n')) is None

def test_the_marker_is_no_nbdev_or_docs_directive(tmp_path):
    "`#| varies` means nothing to nbdev's processors, its test flags and docs/nbproc.py, and is stripped like them."
    import nbproc
    from nbdev import processors, export
    from nbdev.config import get_config
    from nbdev.process import NBProcessor
    from execnb.nbio import read_nb
    assert nbcheck.MARKER == 'varies'
    assert not hasattr(processors, 'varies_') and not hasattr(export.ExportModuleProc, '_varies_')
    assert 'varies' not in get_config(path=ROOT).tst_flags.split()
    fn = _nb(tmp_path/'m.ipynb', '#| varies\nx = 1', '#| export\ndef f(): pass')
    nb = NBProcessor(fn).nb
    assert nb.cells[0].source == 'x = 1' and nb.cells[0].directives_ == {'varies': []}
    cell = read_nb(fn).cells[0]
    assert not nbproc.is_slow(cell) and nbproc.directives(cell.source) == ['varies']
