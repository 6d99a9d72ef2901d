"""Build the offline docs site: notebooks -> nbdev processors + execution -> `_proc/` -> Sphinx + myst-nb -> `_docs/`.

    python docs/build.py [--jobs 2] [--force] [--only data,evaluate] [--no-sphinx]

Quarto, which `nbdev_docs` needs, is not available offline, so this does what `nbdev_proc_nbs` does with nbdev's own
processors (hidden cells dropped, `show_doc` cells added for every exported definition and rendered as API docs,
directives stripped), executes each notebook in its default small configuration while processing it (cells flagged
`#| slow` are never run: they are shown with their stored outputs, or marked as not run), and renders the result
with Sphinx.

- Pages come from `nbs/sidebar.yml`, in its order; `NN_name.ipynb` becomes `name.html` as with nbdev.
- A notebook stored with outputs in its ordinary cells (like `index.ipynb`) is used as stored; only what `show_doc`
  needs is run, as `nbdev_docs` would do. Every other notebook is executed top to bottom.
- Exported cells are shown after their API docs, folded under "Exported source" (nbdev's `exports` style).
- `_proc/api.md` lists every exported function and class of every module, each linking to the notebook section
  that documents it; backticked names in the notebooks' text link to those sections.
- `_proc/architecture.md` (and its picture) shows the layers, notebook -> module, with what each module imports from
  the package, read from the code by `docs/architecture.py` (the code `tests/test_architecture.py` checks with).
- A link from a notebook to a file elsewhere in the repository (`../benchmarks/results.md`) opens that file in the
  repository online (`git_url` and `branch` of settings.ini), as the README's links do on GitHub.
- Executed notebooks are cached in `_proc/.cache/` (nbdev's `_proc` form), keyed on the notebook, the package source,
  the other files under nbs/ and `benchmarks/*.md`, and the processing code (`docs/nbproc.py`, `docs/apidoc.py`);
  `--force` ignores the cache.
A notebook that fails to execute stops the build with its name, the cell and the traceback."""
from __future__ import annotations
import argparse, hashlib, json, os, re, shutil, subprocess, sys, time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
import multiprocessing as mp

ROOT = Path(__file__).resolve().parent.parent
DOCS, NBS, PROC, OUT = ROOT/'docs', ROOT/'nbs', ROOT/'_proc', ROOT/'_docs'
CACHE = PROC/'.cache'
sys.path.insert(0, str(DOCS))
from apidoc import label  # noqa: E402
import nbproc  # noqa: E402
import architecture  # noqa: E402
from nbproc import ENV, _re_dir  # noqa: E402
_re_showdoc = re.compile(r'^show_doc', re.M)

# ---------------------------------------------------------------- pages

def page_name(nb:Path) -> str:
    "nbdev's page name: `06a_two_tower.ipynb` -> `two_tower` (as in `nbdev.doclinks._nbpath2html`)."
    return re.sub(r'^\d+[a-zA-Z0-9]*_', '', nb.name.lower()).rsplit('.', 1)[0]

def sidebar() -> list[tuple[str|None, list[Path]]]:
    "Sections `(caption, notebooks)` from nbs/sidebar.yml, in its order; listed files that do not exist are skipped."
    import yaml
    y = yaml.safe_load((NBS/'sidebar.yml').read_text()) or {}
    contents = ((y.get('website') or {}).get('sidebar') or {}).get('contents') or []
    sections, flat = [], []
    def files(entries):
        res = []
        for e in entries:
            if isinstance(e, dict): e = e.get('href') or e.get('file')
            if not isinstance(e, str): continue
            p = NBS/e
            if p.suffix != '.ipynb': print(f'docs: skipping {e} in sidebar.yml (only notebooks are built)'); continue
            if not p.exists(): print(f'docs: {e} is listed in sidebar.yml but does not exist: skipped'); continue
            res.append(p)
        return res
    for e in contents:
        if isinstance(e, dict) and 'section' in e:
            if flat: sections.append((None, flat)); flat = []
            sections.append((str(e['section']), files(e.get('contents') or [])))
        else: flat += files([e])
    if flat: sections.append((None, flat))
    return sections

# ---------------------------------------------------------------- Quarto cell options -> myst-nb tags

_re_ansi = re.compile(r'\x1B(?:[@-Z\\-_]|\[[0-?]*[ -/]*[@-~])')
_re_nblink = re.compile(r'\]\((?:\./)?(\d+[a-zA-Z0-9]*_[^)#\s]+|index)\.ipynb')
_re_repolink = re.compile(r'\]\(\.\./([^)\s]+)\)')   # from nbs/ to a file elsewhere in the repository

def repo_url(path:str) -> str:
    "Where `path` (relative to the repository root) is browsed online: settings.ini's `git_url` on its `branch`."
    from nbdev.config import get_config   # reads settings.ini once (cached)
    cfg = get_config(path=ROOT)
    return f"{cfg.git_url}/blob/{cfg.branch}/{path}"

def _clean_stream(text:str) -> str:
    "Strip ANSI colours and keep what a terminal shows of lines rewritten with carriage returns (progress bars)."
    text = _re_ansi.sub('', text)
    return '\n'.join(l.rsplit('\r', 1)[-1] if '\r' in l.rstrip('\r') else l.rstrip('\r') for l in text.split('\n'))

def _to_myst(nb, fm:dict, page:str):
    "Turn the nbdev-processed notebook into what myst-nb renders: title cell, tags for Quarto options, show_doc as markdown."
    from execnb.nbio import mk_cell
    cells = []
    title = fm.get('title') or page.replace('_', ' ').title()
    head = f'# {title}'
    if fm.get('description'): head += f"\n\n{{.lead}}\n{fm['description']}"
    cells.append(mk_cell(head, 'markdown'))
    slow = False
    for c in nb.cells:
        if c.cell_type == 'raw' and re.match(r'^---\s*\n', c.source or ''): continue   # the frontmatter cell
        if c.cell_type == 'markdown':
            slow = False
            c.source = _re_nblink.sub(lambda m: '](' + page_name(Path(m.group(1) + '.ipynb')) + '.ipynb', c.source)
            c.source = _re_repolink.sub(lambda m: '](' + repo_url(m.group(1)) + ')', c.source)
            if c.source.strip() and not c.source.strip().startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED'): cells.append(c)
            continue
        if c.cell_type != 'code': cells.append(c); continue
        opts, lines = {}, c.source.splitlines()
        while lines and _re_dir.match(lines[0]):
            k, _, v = _re_dir.match(lines[0]).group(1).partition(':')
            opts[k.strip()] = v.strip().strip('"\'')
            lines.pop(0)
        src = '\n'.join(lines).strip()
        outs = c.get('outputs') or []
        if _re_showdoc.search(src):
            md = next((''.join(o['data']['text/markdown']) for o in outs if 'text/markdown' in o.get('data', {})), None)
            if md: cells.append(mk_cell(md, 'markdown'))
            continue
        if not src and not outs: continue
        tags = []
        if opts.get('include') == 'false': continue
        if opts.get('echo') == 'false': tags.append('remove-input')
        if opts.get('output') == 'false': tags.append('remove-output')
        meta = {}
        if 'code-fold' in opts:
            tags.append('hide-input')
            meta['mystnb'] = {'code_prompt_show': opts.get('code-summary') or 'Show code',
                              'code_prompt_hide': 'Hide ' + (opts.get('code-summary') or 'code').lower()}
        for o in outs:
            if o.get('output_type') == 'stream':
                o['text'] = _clean_stream(''.join(o['text']) if isinstance(o['text'], list) else o['text'])
            if o.get('output_type') == 'error': raise RuntimeError(f'{page}: stored error output in cell:\n{src}')
        slow, prev_slow = bool((c.get('metadata') or {}).get('docs_slow')) and not outs, slow
        if slow and not prev_slow:
            cells.append(mk_cell('{.slow-note}\nFull-size run: not executed when these docs are built '
                                 '(run it in JupyterLab, or all of them with `make bench`).', 'markdown'))
        new = mk_cell(src, 'code')
        new.update(outputs=outs, execution_count=c.get('execution_count'),
                   metadata={**{k: v for k, v in (c.get('metadata') or {}).items() if k not in ('tags', 'mystnb', 'docs_slow')},
                             **({'tags': tags} if tags else {}), **meta})
        cells.append(new)
    # the title block comes first in nbdev's pages and the exported imports cell above it is hidden there: keep the
    # introduction right under the title, ahead of folded code that stood above the title cell
    i = next((i for i, c in enumerate(cells[1:], 1) if c.cell_type != 'code' or 'hide-input' not in c.metadata.get('tags', [])), None)
    if i and i > 1 and cells[i].cell_type == 'markdown' and not cells[i].source.lstrip().startswith('#'):
        cells.insert(1, cells.pop(i))
    nb.cells = cells

# ---------------------------------------------------------------- links and the API page (main process)

def _modidx() -> dict:
    from importlib import import_module, reload
    m = reload(import_module('transferrec._modidx'))
    return m.d['syms']

def _public(fullname:str) -> bool:
    return not any(p.startswith('_') for p in fullname.split('.')[2:])

def _linker(syms:dict, labels:set):
    """A function that links backticked exported names in markdown to their notebook section, else their API entry
    (what nbdev's `add_links` does, with the site's own anchors). Names already in a link, code blocks and headings
    are left alone; a short name exported by two modules is linked only in its full form."""
    names, short = {}, {}
    for mod, d in syms.items():
        for full in d:
            if not _public(full): continue
            rel = full[len(mod) + 1:]
            names[full] = names[f"{mod.split('.')[-1]}.{rel}"] = full
            short.setdefault(rel, set()).add(full)
    names.update({k: next(iter(v)) for k, v in short.items() if len(v) == 1})
    def target(full):
        for t in (label(full), label(full, 'api-')):
            if t in labels: return '#' + t
    re_tick = re.compile(r'(?<![\[`\w}])`([A-Za-z_][\w.]*)(\(\))?`(?![`\]])')
    def sub(m):
        full = names.get(m.group(1))
        t = target(full) if full else None
        return f'[{m.group(0)}]({t})' if t else m.group(0)
    def link(md:str) -> str:
        out, fence = [], None
        for line in md.split('\n'):
            f = re.match(r'^\s*(```+|~~~+)', line)
            if fence:
                if f and f.group(1)[0] == fence[0] and len(f.group(1)) >= len(fence): fence = None
            elif f: fence = f.group(1)
            elif not line.lstrip().startswith('#'): line = re_tick.sub(sub, line)
            out.append(line)
        return '\n'.join(out)
    return link

def _api_page(syms:dict, meta:dict, order:list[str]) -> str:
    "MyST markdown of the API reference: every exported function and class of every module."
    import inspect
    from importlib import import_module
    from apidoc import signature_str, docstring, docments_table, kind
    labels = {l for m in meta.values() for l in m['labels']}
    pages = {m['page']: m for m in meta.values()}
    titles = {m['module']: m for m in meta.values() if m.get('module')}
    def mod_page(mod):
        url = next(iter(syms[mod].values()))[0] if syms[mod] else ''
        return url.split('.html')[0]
    mods = sorted(syms, key=lambda m: (order.index(mod_page(m)) if mod_page(m) in order else len(order), m))
    out = ['# API reference', '',
           '{.lead}', 'Every exported function and class of every module, with its signature, docstring and parameters. '
           'Each entry links to the notebook section that defines it, where it is explained and used.', '']
    for mod in mods:
        try: m = import_module(mod)
        except Exception as e: raise RuntimeError(f'API page: cannot import {mod}: {e}') from e
        names = [n for n in getattr(m, '__all__', []) if not n.startswith('_')]
        page = mod_page(mod)
        info = titles.get(mod) or pages.get(page) or {}
        out += [f"({label(mod, 'api-module-')})=", f'## {mod}', '']
        if info.get('description'): out += [info['description'], '']
        if page in pages: out += [f"Notebook: [{pages[page]['title']}]({page}.ipynb)", '']
        rows = []
        for n in names:
            obj = getattr(m, n, None)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                d = (docstring(obj).split('\n\n')[0].replace('\n', ' ').replace('|', '\\|'))
                rows.append(f"| [`{n}`](#{label(f'{mod}.{n}', 'api-')}) | {kind(obj)} | {d} |")
        if rows: out += ['| Name | Kind | Summary |', '|---|---|---|', *rows, '']
        consts = []
        for n in names:
            obj = getattr(m, n, None)
            if obj is None: continue
            if not (inspect.isclass(obj) or inspect.isfunction(obj) or callable(obj) and hasattr(obj, '__wrapped__')):
                consts.append((n, obj)); continue
            out += _api_entry(obj, n, f'{mod}.{n}', labels, page, pages, kind(obj), docstring, signature_str, docments_table)
            if inspect.isclass(obj):
                for full in syms[mod]:
                    pre = f'{mod}.{n}.'
                    if not full.startswith(pre) or '.' in full[len(pre):] or full[len(pre):].startswith('_'): continue
                    meth = inspect.getattr_static(obj, full[len(pre):], None)
                    f = getattr(obj, full[len(pre):], None)
                    if f is None: continue
                    k = 'property' if isinstance(meth, property) else 'method'
                    if isinstance(meth, property): f = meth.fget
                    out += _api_entry(f, f'{n}.{full[len(pre):]}', full, labels, page, pages, k, docstring,
                                      signature_str, docments_table, level=4)
        if consts:
            out += ['### Constants', '']
            out += [f"({label(f'{mod}.{n}', 'api-')})=" for n, _ in consts]
            out += ['| Name | Type | Value |', '|---|---|---|']
            for n, obj in consts:
                r = repr(obj).replace('\n', ' ')
                r = (r if len(r) <= 70 else r[:67] + '...').replace('|', '\\|')
                out.append(f'| `{n}` | `{type(obj).__name__}` | `{r}` |')
            out.append('')
    return '\n'.join(out) + '\n'

def _api_entry(obj, name, full, labels, page, pages, k, docstring, signature_str, docments_table, level=3):
    "One API entry: label, heading, kind, signature, docstring, docments table and the link to its notebook section."
    out = [f"({label(full, 'api-')})=", f"{'#' * level} {name}", '', ':::{container} api-entry', '{.api-kind}', k, '',
           f'```python\n{signature_str(obj, name)}\n```', '']
    if d := docstring(obj): out += [d, '']
    if t := docments_table(obj): out += [t, '']
    title = pages[page]['title'] if page in pages else page
    if label(full) in labels: out += ['{.api-source}', f'Defined in [{title} › {name}](#{label(full)})']
    elif page in pages: out += ['{.api-source}', f'Defined in [{title}]({page}.ipynb)']
    out += [':::', '']
    return out

def _toctree(sections, order) -> str:
    res = []
    for caption, nbs in sections:
        pages = [page_name(p) for p in nbs if page_name(p) != 'index']
        if not pages: continue
        res += ['', '```{toctree}', ':hidden:', ':maxdepth: 2'] + ([f':caption: {caption}'] if caption else [':caption: Notebooks']) + [''] + pages + ['```']
    res += ['', '```{toctree}', ':hidden:', ':caption: Reference', '', 'architecture', 'api', '```']
    return '\n'.join(res)

# ---------------------------------------------------------------- driver

def _hash(*paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p.relative_to(ROOT)).encode()); h.update(p.read_bytes())
    return h.hexdigest()

def _write_if_changed(path:Path, text:str):
    if not path.exists() or path.read_text(encoding='utf-8') != text: path.write_text(text, encoding='utf-8')

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--jobs', type=int, default=int(os.environ.get('DOCS_JOBS', 2)), help='notebooks executed at once')
    ap.add_argument('--force', action='store_true', help='execute every notebook again, ignoring the cache')
    ap.add_argument('--only', default='', help='comma-separated page names to (re)process; others come from the cache')
    ap.add_argument('--no-sphinx', action='store_true', help='stop after writing _proc/')
    a = ap.parse_args(argv)
    for k, v in ENV.items(): os.environ.setdefault(k, v)
    os.chdir(ROOT)
    t0 = time.time()
    sections = sidebar()
    nbs = [p for _, ps in sections for p in ps]
    order = [page_name(p) for p in nbs]
    if 'index' not in order: sys.exit('docs: nbs/sidebar.yml must list index.ipynb (the home page)')
    listed = {p.name for p in nbs}
    for p in sorted(NBS.glob('*.ipynb')):
        if p.name not in listed and not p.name.startswith('_'):
            print(f'docs: {p.name} is not listed in nbs/sidebar.yml, so it is not in the site')
    PROC.mkdir(exist_ok=True); CACHE.mkdir(exist_ok=True)
    syms = _modidx()
    # what a notebook's outputs depend on besides itself: the package, the processing code, and the data files the
    # notebooks read (recorded results under nbs/, benchmark tables)
    data = [f for f in NBS.rglob('*') if f.is_file() and f.suffix != '.ipynb' and not any(q.startswith('.') for q in f.parts)]
    common = sorted([*(ROOT/'transferrec').glob('*.py'), DOCS/'nbproc.py', DOCS/'apidoc.py',
                     *(ROOT/'benchmarks').glob('*.md'), *data])
    only = {s.strip() for s in a.only.split(',') if s.strip()}
    todo, meta = [], {}
    for p in nbs:
        page = page_name(p)
        key = _hash(p, *common)
        mfile, cfile = CACHE/f'{page}.json', CACHE/f'{page}.ipynb'
        cached = json.loads(mfile.read_text()) if mfile.exists() else None
        fresh = cached and cached.get('key') == key and cfile.exists() and not a.force
        if fresh and (not only or page not in only): meta[page] = cached
        elif only and page not in only and cached and cfile.exists(): meta[page] = cached
        else: todo.append((p, page, key))
    if todo:
        # longest first (by the last recorded time, when there is one), so no worker idles at the end
        last = {page: json.loads((CACHE/f'{page}.json').read_text()).get('cpu_seconds', 0)
                for _, page, _ in todo if (CACHE/f'{page}.json').exists()}
        todo.sort(key=lambda t: -last.get(t[1], 0))
        print(f"docs: executing {len(todo)} notebook(s) with {a.jobs} worker(s): {', '.join(p.name for p, _, _ in todo)}", flush=True)
        errors = []
        with ProcessPoolExecutor(max_workers=max(1, a.jobs), mp_context=mp.get_context('spawn')) as ex:
            futs = {ex.submit(nbproc.process, str(p), str(CACHE/f'{page}.ipynb'), syms): (p, page, key) for p, page, key in todo}
            for f in as_completed(futs):
                p, page, key = futs[f]
                try: r = f.result()
                except Exception as e:
                    errors.append(str(e) if str(e).startswith(p.name) else f'{p.name}: {type(e).__name__}: {e}')
                    print(f'docs: FAILED {p.name}', flush=True); continue
                r.update(key=key, page=page, title=r['title'] or page.replace('_', ' ').title())
                (CACHE/f'{page}.json').write_text(json.dumps(r, indent=1))
                meta[page] = r
                print(f"docs: {p.name} -> {page}.html ({'stored outputs' if r['stored'] else 'executed'}, "
                      f"{r['seconds']} s, {r['cpu_seconds']} s CPU)", flush=True)
        if errors:
            sys.stderr.write('\n' + '\n\n'.join(errors) + '\n')
            sys.exit(f'docs: {len(errors)} notebook(s) failed to execute: ' + ', '.join(e.split(':')[0] for e in errors))
    # link names, add the toctree, write the pages Sphinx reads (only when changed, so its rebuilds stay incremental)
    from execnb.nbio import read_nb, write_nb
    api = _api_page(syms, meta, order)
    labels = {l for m in meta.values() for l in m['labels']} | set(re.findall(r'^\((api-[^)]+)\)=$', api, re.M))
    link = _linker(syms, labels)
    keep = {'.cache', '.doctrees', 'api.md', 'conf.py'}
    for page in order:
        nb = read_nb(CACHE/f'{page}.ipynb')
        _to_myst(nb, meta[page], page)
        for c in nb.cells:
            if c.cell_type == 'markdown': c.source = link(c.source)
        if page == 'index':
            from execnb.nbio import mk_cell
            nb.cells.append(mk_cell(_toctree(sections, order), 'markdown'))
        tmp = PROC/f'.{page}.tmp.ipynb'
        write_nb(nb, tmp)
        _write_if_changed(PROC/f'{page}.ipynb', tmp.read_text(encoding='utf-8')); tmp.unlink()
        keep.add(f'{page}.ipynb')
    _write_if_changed(PROC/'api.md', link(api))
    keep |= architecture.write(PROC)   # the Architecture page and its graph, drawn from the package's own imports
    for f in PROC.iterdir():
        if f.name not in keep and not f.name.startswith('.'):
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    print(f'docs: _proc/ ready in {time.time() - t0:.0f} s', flush=True)
    if a.no_sphinx: return
    t1 = time.time()
    cmd = [sys.executable, '-m', 'sphinx', '-b', 'html', '-q', '-c', str(DOCS), '-d', str(PROC/'.doctrees'), str(PROC), str(OUT)]
    r = subprocess.run(cmd)
    if r.returncode: sys.exit(f'docs: sphinx-build failed ({r.returncode})')
    (OUT/'.nojekyll').touch()
    print(f'docs: _docs/ built in {time.time() - t1:.0f} s (total {time.time() - t0:.0f} s); open _docs/index.html', flush=True)

if __name__ == '__main__': main()
