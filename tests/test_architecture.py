"""The package's layers, read from its code: each numbered notebook exports one module and notebook order is dependency
order, so no module imports from a later notebook, imports form no cycle, private names (`_name`) stay in the module
that defines them, and no module `@patch`es a class of another module.

The checkers live in `docs/architecture.py`, which also draws the docs' Architecture page from the same reading of the
imports, so the page and this test cannot disagree. Nothing is imported from the package and no model is loaded: the
code is parsed with `ast`. Each failure names the file, the line and the name (the files under transferrec/ are
generated: fix the notebook named in the message, then run `nbdev_export`)."""
import importlib.util, json, sys, textwrap
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location('transferrec_docs_architecture', ROOT/'docs'/'architecture.py')
A = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = A          # dataclasses look their module up while the class is built
_spec.loader.exec_module(A)

def _report(violations, what:str) -> str:
    return f'{len(violations)} {what}:\n' + '\n'.join(f'  {v}' for v in violations)

@pytest.fixture(scope='module')
def graph():
    return A.read_graph(ROOT)

def test_one_module_per_notebook(graph):
    "Every module of the package is exported by exactly one notebook, and every exporting notebook's module exists."
    assert graph.modules and graph.order, 'found no modules or no notebooks with `#| default_exp`'
    v = A.layout_violations(graph)
    assert not v, _report(v, 'notebook/module mismatches')

def test_no_upward_imports(graph):
    "A module imports only from modules whose notebooks come earlier (imports inside functions included)."
    v = A.upward_imports(graph)
    assert not v, _report(v, 'imports that point up the layers')

def test_no_import_cycles(graph):
    v = A.cycle_violations(graph)
    assert not v, _report(v, 'imports in cycles')

def test_notebook_order_is_a_topological_order(graph):
    "Sorted notebook file names give an order every import respects."
    v = A.order_violations(graph)
    assert not v, _report(v, 'module pairs out of order')

def test_private_names_stay_in_their_module(graph):
    "No `_name` of one module is used by another module, a test or a benchmark."
    files = A.usage_files(ROOT)
    assert any(f.parent.name == 'tests' for f in files) and any(f.parent.name == A.PKG for f in files)
    v = A.private_uses(graph, files)
    assert not v, _report(v, 'uses of private names outside their module')

def test_no_patching_across_modules(graph):
    "fastcore's `@patch` only adds methods to classes of the module it is in."
    v = A.foreign_patches(graph)
    assert not v, _report(v, '@patch of classes from other modules')

def test_the_docs_page_comes_from_the_imports(graph, tmp_path):
    "The Architecture page lists every module in notebook order with its summary and imports, and draws the graph."
    names = A.write(tmp_path, ROOT)
    assert names == {'architecture.md', 'architecture.png'}
    md = (tmp_path/'architecture.md').read_text()
    mods = [l.module for l in graph.layers if l.module]
    rows = [line for line in md.splitlines() if line.startswith('| [')]
    assert [r.split(f'{A.PKG}.', 1)[1].split(' ', 1)[0] for r in rows] == mods
    for r, m in zip(rows, mods):
        deps = graph.deps(m)
        assert all(f'`{d}`' in r for d in deps) and (deps or r.rstrip(' |').endswith('nothing'))
        assert graph.summaries[m][:40].replace('|', '\\|') in r
    assert (tmp_path/'architecture.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

# ---------------------------------------------------------------- the checkers catch what they should

def _nb(path:Path, first:str):
    path.write_text(json.dumps({'cells': [{'cell_type': 'code', 'metadata': {}, 'source': [first], 'outputs': [],
                                           'execution_count': None}], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}))

def _fake(tmp_path:Path) -> Path:
    "A tiny repository with the package's layout and one of each violation (and look-alikes that are not violations)."
    root = tmp_path/'repo'
    for d in ('nbs', A.PKG, 'tests', 'benchmarks'): (root/d).mkdir(parents=True)
    _nb(root/'nbs'/'00_base.ipynb', '#| default_exp base')
    _nb(root/'nbs'/'01_top.ipynb', '#| default_exp top')
    _nb(root/'nbs'/'index.ipynb', '# Home')
    files = {
        f'{A.PKG}/__init__.py': '__version__ = "0"\n',
        f'{A.PKG}/_modidx.py': 'd = {}\n',
        f'{A.PKG}/base.py': '''\
            """The bottom layer."""
            import transferrec
            from fastcore.basics import patch
            class Thing:
                def __init__(self): self._state, self.public = 1, 2
                def _helper(self): return self._state
            def _private_fn(): return 1
            def ok(t): return t._version                     # a third-party private attribute
            def lazy():
                from transferrec.top import Top              # line 10: up, inside a function
                return Top
            ''',
        f'{A.PKG}/top.py': '''\
            """The top layer."""
            from fastcore.basics import patch
            from .base import Thing, _private_fn             # line 3: a private name of base
            import transferrec.base as B
            class Top(Thing):
                def go(self, other):
                    self._mine = other._state                # line 7: base's private attribute on another object
                    return B._private_fn() + super()._helper() + self._state
            @patch
            def extra(self: Thing): return 1                 # lines 9-10: patches base's class
            @patch
            def fine(self: Top): return self._mine
            ''',
        'tests/test_fake.py': '''\
            import transferrec
            from transferrec import base as E
            def test_it(monkeypatch):
                assert E._private_fn() == 1                  # line 4
                monkeypatch.setattr('transferrec.base._private_fn', lambda: 2)   # line 5
                idx = transferrec._modidx.d                  # nbdev's index: fine
                t = E.Thing(); return t._helper()            # line 7
            ''',
        'benchmarks/bench.py': '''\
            import importlib
            mod = importlib.import_module('transferrec.top')
            def run(rec): return getattr(rec, '_mine'), mod.Top, rec.public   # line 3
            ''',
    }
    for name, src in files.items(): (root/name).write_text(textwrap.dedent(src))
    return root

def test_checkers_catch_planted_violations(tmp_path):
    root = _fake(tmp_path)
    g = A.read_graph(root)
    assert [(l.notebook, l.module) for l in g.layers] == [('00_base.ipynb', 'base'), ('01_top.ipynb', 'top'), ('index.ipynb', None)]
    assert set(g.modules) == {'base', 'top'} and g.summaries == {'base': 'The bottom layer.', 'top': 'The top layer.'}
    assert {(i.src, i.dst, i.line, i.lazy) for i in g.imports} == {('base', 'top', 10, True), ('top', 'base', 3, False), ('top', 'base', 4, False)}
    at = lambda vs: {(v.file, v.line) for v in vs}
    up = A.upward_imports(g)
    assert at(up) == {(f'{A.PKG}/base.py', 10)} and 'base imports top' in str(up[0])
    cyc = A.cycle_violations(g)
    assert {v.name for v in cyc} == {'base imports top', 'top imports base'} and 'base -> top -> base' in cyc[0].why
    order = A.order_violations(g)
    assert at(order) == {(f'{A.PKG}/base.py', 10)} and 'cycle' in order[0].why
    assert A.topological_order(g) is None
    priv = A.private_uses(g, A.usage_files(root))
    assert {(v.file, v.line, v.name) for v in priv} == {
        (f'{A.PKG}/top.py', 3, '_private_fn'), (f'{A.PKG}/top.py', 7, 'other._state'), (f'{A.PKG}/top.py', 8, 'B._private_fn'),
        ('tests/test_fake.py', 4, 'E._private_fn'), ('tests/test_fake.py', 5, 'transferrec.base._private_fn'),
        ('tests/test_fake.py', 7, 't._helper'), ('benchmarks/bench.py', 3, "getattr(..., '_mine')")}, priv
    assert all(str(v).startswith(f'{v.file}:{v.line}: {v.name}: ') for v in priv)
    pat = A.foreign_patches(g)
    assert [(v.file, v.line, v.name) for v in pat] == [(f'{A.PKG}/top.py', 9, 'Thing.extra')] and 'transferrec.base' in pat[0].why
    # the page shows the broken rules, and the picture draws the upward import
    A.write(tmp_path/'site', root)
    md = (tmp_path/'site'/'architecture.md').read_text()
    assert '## Where the layers are broken' in md and f'`{A.PKG}/base.py:10`' in md

def test_a_clean_package_passes(tmp_path):
    "The fixed fake package: nothing to report, so the checks above can pass as well as fail."
    root = _fake(tmp_path)
    (root/A.PKG/'base.py').write_text('"""Bottom."""\nclass Thing:\n    def __init__(self): self._state = 1\n')
    (root/A.PKG/'top.py').write_text('"""Top."""\nfrom fastcore.basics import patch\nfrom .base import Thing\n'
                                     'class Top(Thing):\n    def go(self): return self._state\n'
                                     '@patch\ndef fine(self: Top): return super(Top, self)\n')
    for f in ('tests/test_fake.py', 'benchmarks/bench.py'): (root/f).unlink()
    g = A.read_graph(root)
    assert [str(v) for f in (A.layout_violations, A.upward_imports, A.cycle_violations, A.order_violations, A.foreign_patches)
            for v in f(g)] == []
    assert A.private_uses(g, A.usage_files(root)) == [] and A.topological_order(g) == ['base', 'top']
