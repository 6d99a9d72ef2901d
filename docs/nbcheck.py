"""Run the notebooks as `nbdev_test` does, and check that the outputs stored in them are what their cells produce.

    python docs/nbcheck.py [NOTEBOOK ...] [--n_workers 2] [--flags slow] [--store]

Without notebooks: every notebook `nbdev_test` would run (`nbs/**/*.ipynb` except names and folders starting with `_`
or `.` and folders holding a `.notest` file). `PYTHONHASHSEED` is 0 (as `make` exports it) unless set otherwise, so
that the order of sets of strings printed by a cell is the same in every run.

**Run mode** (the default; `make nbtest`). Each notebook is executed the way `nbdev.test.test_nb` does it: read with
`NBProcessor(fn, procs=FrontmatterProc, process=True)`, run by execnb's `CaptureShell(fn).run_all(nb, exc_stop=True)`
in the notebook's folder with the repository root on `sys.path`, `IN_TEST=1` and the offline environment of
`docs/nbproc.py`; cells flagged with one of settings.ini's `tst_flags` (`#| slow`) are skipped unless `--flags` names
the flag, as are cells with `#| eval: false` and `nbdev_export()` calls, and a notebook whose frontmatter says
`skip_exec: true` is not run. Notebooks run side by side in `--n_workers` processes; a cell that raises fails its
notebook with nbdev's traceback. Then every executed code cell that has outputs stored in the .ipynb is compared with
its fresh outputs; a difference fails the notebook with its name, the cell's number (counting the notebook's cells
from 1), the first lines of its source and a short diff. Cells stored without outputs are not
compared, so a notebook stored clean still just runs. The time each notebook took is printed, as `--timing` does.

**Comparison**, so that a run on another machine of the same kind passes while a changed result fails:

- stderr streams are ignored (progress bars, warnings); the stdout streams of a cell count as one text (Jupyter
  interleaves them with displays, execnb collects them ahead of the displays);
- a display is compared MIME type by MIME type, and both sides must have the same types in the same order; metadata
  and execution counts are ignored;
- images (`image/png`, `image/svg+xml`, ...) and other non-text types (`application/json`, widgets) only have to be
  present: their bytes are not compared;
- text (stdout and `text/plain`, `text/html`, `text/markdown`, any `text/*`): ANSI colour codes are stripped, trailing
  whitespace of every line and trailing blank lines are ignored, a run of spaces or tabs counts as one space (a column
  shifts when a number's printed width changes), memory addresses are equal (`<Foo at 0x7f..>` is `<Foo>`, as
  nbdev_clean stores it; any other `0x` with 6 or more hex digits is any address); the text is then split into
  numbers and the rest: numbers must agree within a relative tolerance of 1e-4 and an absolute one of 1e-8
  (`math.isclose`), which makes integers below 10,000 exact; everything else must be identical.

**Varying cells.** A cell whose output cannot be deterministic (it shows a timing, a date, a path of the machine)
carries the directive line `#| varies` (optionally followed by a reason: `#| varies fit_seconds is a timing`) among its
leading `#|` lines: it is run but never compared, and `--store` stores it without outputs (so the docs, which show a
stored notebook as stored, show none either); keep what varies in a cell of its own so the rest stays checked. nbdev
has no `varies` directive (it only acts on export, exporti, exports, default_exp, hide, hide_line, filter_stream,
exec_doc, `eval:`, Quarto `key: value` options and settings.ini's `tst_flags`), so nbdev_export, nbdev_clean and
nbdev_test leave it alone and the docs processors drop it with the other directives; `docs/nbproc.py` only acts on
slow and export*.

**Store mode** (`--store NOTEBOOK ...`, `make outputs NB=nbs/XX.ipynb`): each notebook is executed as above and, when
no cell raised, its file gets the fresh outputs of every executed cell (stderr streams dropped; varying cells get no
outputs); skipped cells (slow ones) keep the outputs stored in the file. The file is then cleaned exactly as
`nbdev_clean --fname FILE` cleans it (`nbdev.clean.clean_nb` with settings.ini's options), so it is in its committed
form. `docs/nbproc.py` uses a notebook stored with outputs as stored instead of executing it for the docs."""
from __future__ import annotations
import argparse, difflib, json, math, os, re, sys, time, traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT/'docs'))
from nbproc import ENV  # noqa: E402

MARKER = 'varies'                      # `#| varies`: run, never compared, stored without outputs
RTOL, ATOL = 1e-4, 1e-8

# ---------------------------------------------------------------- normalisation and comparison

_re_ansi = re.compile(r'\x1B(?:[@-Z\\-_]|\[[0-?]*[ -/]*[@-~])')
_re_repr_id = re.compile('(<.*?)( at 0x[0-9a-fA-F]+)(>)')    # what nbdev_clean removes (clean_ids)
_re_addr = re.compile(r'0x[0-9a-fA-F]{6,}')
_re_num = re.compile(r'[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?')
_re_blank = re.compile(r'[ \t]+')

def _text(v) -> str: return ''.join(v) if isinstance(v, list) else str(v)
def _is_stream(o, name) -> bool: return o.get('output_type') == 'stream' and o.get('name') == name

def norm_text(s:str) -> str:
    "Text as compared: no ANSI codes, addresses masked, spaces collapsed, no trailing whitespace or blank lines."
    s = _re_ansi.sub('', s.replace('\r\n', '\n'))
    s = _re_addr.sub('0x…', _re_repr_id.sub(r'\1\3', s))
    return '\n'.join(_re_blank.sub(' ', l).rstrip() for l in s.split('\n')).rstrip('\n')

def tokens(s:str) -> list:
    "`s` split into numbers (floats) and the strings between them."
    res, i = [], 0
    for m in _re_num.finditer(s):
        if m.start() > i: res.append(s[i:m.start()])
        res.append(float(m.group()))
        i = m.end()
    if i < len(s): res.append(s[i:])
    return res

def same_text(a:str, b:str) -> str|None:
    "None when normalised `a` and `b` agree (numbers within tolerance), else the first difference."
    ta, tb = tokens(norm_text(a)), tokens(norm_text(b))
    for x, y in zip(ta, tb):
        if isinstance(x, float) and isinstance(y, float):
            if not math.isclose(x, y, rel_tol=RTOL, abs_tol=ATOL): return f'{x!r} != {y!r}'
        elif x != y: return f'{str(x)[:60]!r} != {str(y)[:60]!r}'
    if len(ta) != len(tb):
        extra = (ta if len(ta) > len(tb) else tb)[min(len(ta), len(tb))]
        return f'one side goes on with {str(extra)[:60]!r}'
    return None

def norm_outputs(outputs) -> list[tuple]:
    "Outputs as compared: `(kind, {mime: text or None})`, stdout joined first, stderr dropped."
    out = outputs or []
    stdout = ''.join(_text(o.get('text', '')) for o in out if _is_stream(o, 'stdout'))
    res = [('stdout', {'text': stdout})] if norm_text(stdout) else []
    for o in out:
        t = o.get('output_type')
        if t == 'stream': continue
        if t == 'error': res.append(('error', {'ename': o.get('ename', ''), 'evalue': o.get('evalue', '')})); continue
        data = sorted((o.get('data') or {}).items())
        res.append((t, {k: (_text(v) if k.startswith('text/') else None) for k, v in data}))
    return res

def render(normed) -> list[str]:
    "The normalised outputs as lines, for a diff."
    lines = []
    for kind, data in normed:
        for k, v in data.items():
            lines.append(f'[{kind} {k}]' + ('' if v is not None else ' (present)'))
            if v is not None: lines += norm_text(v).split('\n')
    return lines

def compare(stored, fresh) -> str|None:
    "None when `fresh` outputs match `stored` ones under the rules above, else why not and a short diff."
    a, b = norm_outputs(stored), norm_outputs(fresh)
    why = None
    if [(k, list(d)) for k, d in a] != [(k, list(d)) for k, d in b]:
        why = 'different outputs: stored ' + ', '.join(f'{k} {"/".join(d)}' for k, d in a) + \
              '; now ' + (', '.join(f'{k} {"/".join(d)}' for k, d in b) or 'none')
    else:
        for (kind, da), (_, db) in zip(a, b):
            for mime, va in da.items():
                if va is None: continue
                d = same_text(va, db[mime])
                if d: why = f'{kind} {mime}: {d}'; break
            if why: break
    if why is None: return None
    diff = list(difflib.unified_diff(render(a), render(b), 'stored', 'now', n=1, lineterm=''))
    if len(diff) > 24: diff = diff[:24] + [f'... ({len(diff) - 24} more diff lines)']
    return why + '\n' + '\n'.join(diff)

# ---------------------------------------------------------------- running one notebook (in a worker process)

def _head(src:str, n=3) -> str:
    lines = src.splitlines()
    return '\n'.join('    ' + l for l in lines[:n]) + ('\n    ...' if len(lines) > n else '')

def check_nb(fn, skip_flags=(), force_flags=(), store=False) -> dict:
    """Execute notebook `fn` like `nbdev.test.test_nb`; compare (or with `store`, write) the outputs.
    Returns `dict(name, ok, seconds, checked, error)`; `error` is nbdev's traceback or the mismatches."""
    from execnb.nbio import read_nb
    from execnb.shell import CaptureShell
    from fastcore.basics import str2bool
    from fastcore.xtras import working_directory
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor, nb_lang
    fn = Path(fn).absolute()
    res = dict(name=fn.name, path=str(fn), ok=True, seconds=0., checked=0, stored=None, error='')
    for k, v in ENV.items(): os.environ.setdefault(k, v)
    os.environ['IN_TEST'] = '1'
    if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))      # nbdev_test's basepath
    flags = set(skip_flags) - set(force_flags)
    start = time.time()
    try:
        nb = read_nb(fn)
        for i, c in enumerate(nb.cells): c.nbcheck_i_ = i            # the cell's index in the file
        nb = NBProcessor(nb=nb, procs=FrontmatterProc, process=True).nb
    except Exception:
        return {**res, 'ok': False, 'error': f'{fn.name}: could not be read:\n{traceback.format_exc()}'}
    fm = getattr(nb, 'frontmatter_', {}) or {}
    if str2bool(fm.get('skip_exec', False)) or nb_lang(nb) != 'python': return {**res, 'skipped': True}

    ran = []
    def no_eval(cell):
        "nbdev's `_no_eval`; a cell that will run has its stored outputs put aside (execnb keeps them if none come)."
        if cell.cell_type != 'code': return True
        if 'nbdev_export' + '(' in cell.source: return True
        direc = getattr(cell, 'directives_', {}) or {}
        if direc.get('eval:', [''])[0].lower() == 'false': return True
        if flags & direc.keys(): return True
        cell.stored_, cell.outputs = list(cell.get('outputs') or []), []
        ran.append(cell)
        return False

    k = CaptureShell(fn)
    try:
        with working_directory(fn.parent): k.run_all(nb, exc_stop=True, preproc=no_eval)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt): raise
        tb = k.prettytb(fname=fn) if k.exc is not None else traceback.format_exc()
        return {**res, 'ok': False, 'seconds': time.time() - start, 'error': tb}
    finally:
        try:
            import matplotlib.pyplot as plt; plt.close('all')
        except Exception: pass
    res['seconds'] = time.time() - start

    if store: return {**res, **store_outputs(fn, ran)}
    problems = []
    for cell in ran:
        if not cell.stored_ or MARKER in (cell.directives_ or {}): continue
        res['checked'] += 1
        d = compare(cell.stored_, [dict(o) for o in (cell.get('outputs') or [])])
        if d: problems.append(f'{fn.name}: cell {cell.nbcheck_i_ + 1} does not give its stored outputs:\n'
                              f'{_head(cell.source)}\n' + '\n'.join('  ' + l for l in d.split('\n')))
    if problems:
        res.update(ok=False, error='\n\n'.join(problems) +
                   f'\n\n(if the change is intended: python docs/nbcheck.py --store {_rel(fn)}; if the output '
                   'cannot be deterministic, mark the cell `#| varies`)\n')
    return res

def _rel(fn:Path) -> str:
    try: return str(fn.relative_to(ROOT))
    except ValueError: return str(fn)

def store_outputs(fn:Path, ran:list) -> dict:
    "Write the fresh outputs of the cells in `ran` into `fn` (stderr dropped, varying cells bare), then nbdev-clean it."
    from execnb.nbio import nb2dict, write_nb
    from nbdev.clean import clean_nb
    from nbdev.config import get_config
    raw = json.loads(fn.read_text(encoding='utf-8'))
    n = 0
    for cell in ran:
        outs = [] if MARKER in (cell.directives_ or {}) else \
               [nb2dict(o) for o in (cell.get('outputs') or []) if not _is_stream(o, 'stderr')]
        raw['cells'][cell.nbcheck_i_]['outputs'] = outs
        n += bool(outs)
    cfg = get_config(path=ROOT)                    # what `nbdev_clean --fname FILE` does (`nbdev.clean._nbdev_clean`)
    clean_nb(raw, cfg.clear_all, cfg.get('allowed_metadata_keys').split(),
             cfg.get('allowed_cell_metadata_keys').split(), cfg.clean_ids)
    before = fn.read_text(encoding='utf-8')
    write_nb(raw, fn)
    return dict(stored=n, changed=fn.read_text(encoding='utf-8') != before)

# ---------------------------------------------------------------- command line

def notebooks(paths:list[str]) -> list[Path]:
    "The notebooks named (folders: those in them), or all those `nbdev_test` runs; `.notest` folders skipped."
    from nbdev.doclinks import nbglob
    from nbdev.config import get_config
    files = []
    for p in paths or [str(get_config(path=ROOT).nbs_path)]:
        p = Path(p)
        if p.is_dir():
            with_cfg = Path.cwd()
            os.chdir(ROOT)
            try: files += nbglob(p, as_path=True)
            finally: os.chdir(with_cfg)
        elif p.exists(): files.append(p)
        else: sys.exit(f'nbcheck: no such notebook: {p}')
    files = sorted({f.absolute() for f in files})
    return [f for f in files if not (f.parent/'.notest').exists()]

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('notebooks', nargs='*', help='notebooks (default: all that nbdev_test runs)')
    ap.add_argument('--n_workers', type=int, default=None, help='processes (default: 0 = in this one for one notebook, '
                    'else the CPUs, at most 8, as nbdev_test)')
    ap.add_argument('--flags', default='', help='space-separated tst_flags to run anyway (as nbdev_test --flags)')
    ap.add_argument('--store', action='store_true', help='write the fresh outputs into the notebooks (named ones only)')
    args = ap.parse_args(argv)
    if args.store and not args.notebooks: ap.error('--store needs the notebooks to store, e.g. nbs/03_metrics.ipynb')
    from nbdev.config import get_config
    skip_flags = get_config(path=ROOT).get('tst_flags', '').split()
    files = notebooks(args.notebooks)
    if not files: print('No files were eligible for testing'); return 0
    n = args.n_workers
    if n is None: n = 0 if len(files) == 1 else min(os.cpu_count() or 1, 8)
    for k, v in ENV.items(): os.environ.setdefault(k, v)
    os.environ['IN_TEST'] = '1'
    kw = dict(skip_flags=skip_flags, force_flags=args.flags.split(), store=args.store)
    t0, results = time.time(), []

    def report(r):
        results.append(r)
        if r.get('skipped'): what = 'skipped (skip_exec)'
        elif not r['ok']: what = 'FAILED'
        elif args.store: what = f"stored outputs of {r['stored']} cells" + ('' if r.get('changed') else ', file unchanged')
        else: what = f"{r['checked']} cells' outputs checked"
        print(f"{r['name']}: {what} ({r['seconds']:.1f}s)", flush=True)
        if not r['ok']: sys.stderr.write(r['error'].rstrip() + '\n\n'); sys.stderr.flush()

    if n == 0:
        for f in files: report(check_nb(f, **kw))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed
        # a fresh process per notebook: no global state (pandas display options, rcParams, torch threads) leaks between them
        with ProcessPoolExecutor(n, mp_context=mp.get_context('forkserver'), max_tasks_per_child=1) as ex:
            futs = {ex.submit(check_nb, f, **kw): f for f in files}
            for fut in as_completed(futs):
                try: r = fut.result()
                except Exception:
                    f = futs[fut]
                    r = dict(name=f.name, path=str(f), ok=False, seconds=0., checked=0, error=traceback.format_exc())
                report(r)
    failed = [r for r in sorted(results, key=lambda r: r['name']) if not r['ok']]
    if failed:
        sys.stderr.write(f"\nnbcheck failed on the following notebooks:\n{'=' * 50}\n\t" +
                         '\n\t'.join(r['name'] for r in failed) + '\n')
    else: print('Success.')
    for r in sorted(results, key=lambda r: r['seconds'], reverse=True): print(f"{r['name']}: {int(r['seconds'])} secs")
    print(f'nbcheck: {len(results)} notebooks in {time.time() - t0:.0f}s with {n or 1} worker(s)')
    return 1 if failed else 0

if __name__ == '__main__':
    if os.environ.get('PYTHONHASHSEED') is None:       # `make` exports PYTHONHASHSEED=0; the same when run by hand
        os.environ['PYTHONHASHSEED'] = '0'
        os.execv(sys.executable, [sys.executable] + sys.argv)
    import nbcheck   # workers unpickle `nbcheck.check_nb`: IPython's shell replaces a worker's `__main__` module
    sys.exit(nbcheck.main())
