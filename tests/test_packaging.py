"""The package as users install it: every third-party module that `transferrec/` imports is declared in settings.ini,
in the runtime requirements, or (for an optional extra) only imported inside `try: ... except ImportError`."""
import ast, os, re, subprocess, sys, configparser
from importlib.metadata import packages_distributions
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]


def declared() -> dict[str, set[str]]:
    "Distribution names per requirement group of settings.ini: {'requirements': {...}, 'faiss_requirements': {...}, ...}."
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(ROOT/'settings.ini')
    norm = lambda r: re.split(r'[<>=!~\[; ]', r, maxsplit=1)[0].lower().replace('_', '-')
    return {k: {norm(r) for r in v.split()} for k, v in cfg['DEFAULT'].items() if k.endswith('requirements')}


def guarded(tree: ast.AST) -> set[int]:
    "Line numbers of imports inside a `try` whose handlers catch ImportError."
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any('ImportError' in ast.unparse(h.type or ast.Name('BaseException')) for h in node.handlers):
            lines |= {n.lineno for b in node.body for n in ast.walk(b) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lines


def third_party_imports(folder: Path) -> list[tuple[str, int, str, bool]]:
    "(file, line, top-level module, guarded) for every import of a module outside the standard library and the package."
    out = []
    for p in sorted(folder.glob('*.py')):
        tree = ast.parse(p.read_text())
        safe = guarded(tree)
        for n in ast.walk(tree):
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else \
                    [n.module] if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module else []
            for name in names:
                top = name.split('.')[0]
                if top in sys.stdlib_module_names or top == folder.name: continue
                out.append((p.name, n.lineno, top, n.lineno in safe))
    return out


def undeclared(imports, groups, dists) -> list[str]:
    "The imports that a plain install (or the extra that names them, when guarded) does not provide."
    runtime, extras = groups.get('requirements', set()), set().union(*(v for k, v in groups.items() if k not in ('requirements', 'dev_requirements')))
    bad = []
    for file, line, top, is_guarded in imports:
        names = {d.lower().replace('_', '-') for d in dists.get(top, [top])}
        if names & runtime: continue
        if is_guarded and names & extras: continue
        why = 'only in an extra, but imported without an ImportError guard' if names & extras else 'not in the runtime requirements'
        bad.append(f"transferrec/{file}:{line}: imports {top!r} ({', '.join(sorted(names))}): {why}")
    return bad


def test_every_runtime_import_is_declared():
    problems = undeclared(third_party_imports(ROOT/'transferrec'), declared(), packages_distributions())
    assert not problems, 'add these to settings.ini `requirements` (or guard the import):\n' + '\n'.join(problems)


def test_the_check_catches_an_undeclared_import(tmp_path):
    pkg = tmp_path/'transferrec'; pkg.mkdir()
    (pkg/'a.py').write_text("import numpy\nimport fastcore.basics\ntry: import faiss\nexcept ImportError: faiss = None\n"
                            "import faiss as f2\nfrom . import b\nimport os\n")
    groups = {'requirements': {'numpy'}, 'dev_requirements': {'fastcore'}, 'faiss_requirements': {'faiss-cpu'}}
    dists = {'numpy': ['numpy'], 'fastcore': ['fastcore'], 'faiss': ['faiss-cpu']}
    problems = undeclared(third_party_imports(pkg), groups, dists)
    assert [p.split(':')[1] for p in problems] == ['2', '5'], problems   # fastcore (dev only) and the unguarded faiss
    assert 'not in the runtime requirements' in problems[0] and 'without an ImportError guard' in problems[1]


# ---------------------------------------------------------------------------------------------- the wheel, installed
WHEEL_TEST = os.environ.get('TRANSFERREC_WHEEL_TEST') == '1'


def sh(*args, **kw):
    "Run a command; fail the test with its output when it fails."
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.mark.skipif(not WHEEL_TEST, reason='slow (minutes: a fresh venv from the registries): run by `make wheel-test` (TRANSFERREC_WHEEL_TEST=1)')
def test_the_wheel_installs_without_extras_and_runs_quickstart(tmp_path):
    "Build the wheel, install it with its declared dependencies only (no extras) into a fresh venv, run the quick start elsewhere."
    # the sdist, then the wheel built from it (so the sdist is complete), as `python -m build` does
    sh(sys.executable, '-m', 'build', '--no-isolation', '--outdir', tmp_path/'dist', ROOT, cwd=tmp_path)
    sdist, = (tmp_path/'dist').glob('transferrec-*.tar.gz')
    wheel, = (tmp_path/'dist').glob('transferrec-*.whl')
    venv = tmp_path/'venv'
    sh(sys.executable, '-m', 'venv', venv)
    pip = venv/'bin'/'pip'
    install = [pip, 'install', '-q', '--no-compile']   # byte-compiling every file is a third of pip's time; imports compile
    sh(*install, 'torch==2.13.0')      # the CPU build on disk, before anything asks for torch (else a CUDA download)
    sh(*install, wheel)                # and the runtime requirements from PyPI: what `pip install transferrec` gets
    work = tmp_path/'elsewhere'; work.mkdir()      # outside the repository: nothing is imported from the checkout
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false',
           'MPLBACKEND': 'Agg', 'TRANSFERREC_DATA': str(tmp_path/'cache'), 'PYTHONPATH': ''}
    where = sh(venv/'bin'/'python', '-c', 'import transferrec, transferrec.cli, transferrec.recommend, transferrec.retrieval; '
               'print(transferrec.__file__)', cwd=work, env=env).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    # the synthetic catalogue: offline, and the whole path (encoder bundled as a package, training, report) in about a minute
    r = sh(venv/'bin'/'transferrec', 'quickstart', '--fast', '--dataset', 'synthetic', '--out', work/'report', cwd=work, env=env, timeout=1200)
    assert 'report:' in r.stdout and 'ndcg@10' in r.stdout
    assert {p.name for p in (work/'report').iterdir()} >= {'results.md', 'metrics.json', 'model'}
