"""The docs site (`make docs` -> `_docs/`) in a real browser: headless Chromium driven by selenium.

Every page of the sidebar loads without console errors and only from the site itself; plots are real images; math is
typeset by the bundled MathJax; every internal link and anchor resolves; search finds results. Screenshots of each page
go to `_docs/_screenshots/`. `make test` builds the docs and installs Chromium first (`make docs browser`)."""
import html.parser, http.server, json, os, shutil, sys, tempfile, threading, urllib.error, urllib.request
from functools import partial
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse, unquote
import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT/'_docs'
SHOTS = SITE/'_screenshots'
CHROMIUM, CHROMEDRIVER = Path('/usr/bin/chromium'), Path('/usr/bin/chromedriver')
sys.path.insert(0, str(ROOT/'docs'))
import importlib.util  # noqa: E402
_spec = importlib.util.spec_from_file_location('transferrec_docs_build', ROOT/'docs'/'build.py')
_build = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(_build)
sidebar, page_name = _build.sidebar, _build.page_name

PAGES = [page_name(p) for _, ps in sidebar() for p in ps] + ['architecture', 'api']
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--disable-dev-shm-usage', '--window-size=1280,1000', '--hide-scrollbars']

def _need_site():
    if not (SITE/'index.html').exists(): pytest.fail('the docs are not built: run `make docs` (or `make docs-test`)')
    missing = [p for p in PAGES if not (SITE/f'{p}.html').exists()]
    if missing: pytest.fail(f"pages missing from _docs/: {', '.join(missing)}; run `make docs` again")

class _Handler(http.server.SimpleHTTPRequestHandler):
    missing = []
    def log_message(self, *a): pass
    def send_error(self, code, *a, **k):
        if code == 404: self.missing.append(self.path)
        super().send_error(code, *a, **k)

@pytest.fixture(scope='module')
def server():
    _need_site()
    _Handler.missing = []
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), partial(_Handler, directory=str(SITE)))
    t = threading.Thread(target=srv.serve_forever, daemon=True); t.start()
    yield f'http://127.0.0.1:{srv.server_address[1]}/'
    srv.shutdown(); srv.server_close()

@pytest.fixture(scope='module')
def driver():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail('Chromium is not installed: run `make browser` (Debian packages chromium, chromium-driver)')
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix='docs-chromium-')
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for f in FLAGS + [f'--user-data-dir={profile}']: opts.add_argument(f)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    d = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()
    shutil.rmtree(profile, ignore_errors=True)

def _load(driver, url):
    "Open `url`, wait until it and its math are done, return the console messages it logged."
    from selenium.webdriver.support.ui import WebDriverWait
    driver.get_log('browser')   # drop what earlier pages logged
    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script('return document.readyState') == 'complete')
    driver.set_script_timeout(60)
    driver.execute_async_script("""const done = arguments[arguments.length - 1];
        if (window.MathJax && MathJax.startup && MathJax.startup.promise) MathJax.startup.promise.then(() => done(1), () => done(0));
        else done(1);""")
    return driver.get_log('browser')

@pytest.fixture(scope='module')
def visited(server, driver):
    "Load every page once: console messages, resources fetched, images and math elements of each; screenshots saved."
    shutil.rmtree(SHOTS, ignore_errors=True); SHOTS.mkdir(parents=True)
    res = {}
    for page in PAGES:
        log = _load(driver, server + f'{page}.html')
        info = driver.execute_script("""return {
            title: document.title,
            h1: [...document.querySelectorAll('article h1')].map(h => h.textContent.trim()),
            text: (document.querySelector('article') || document.body).innerText.length,
            resources: performance.getEntriesByType('resource').map(r => r.name),
            images: [...document.querySelectorAll('article img')].map(i => ({src: i.currentSrc || i.src, w: i.naturalWidth,
                      h: i.naturalHeight, complete: i.complete, output: !!i.closest('.cell_output')})),
            math: document.querySelectorAll('mjx-container').length,
            mathErrors: document.querySelectorAll('mjx-merror').length,
            sidebar: [...document.querySelectorAll('.bd-sidebar-primary nav a.reference.internal')].map(a => a.getAttribute('href')),
        }""")
        info['log'] = log
        driver.save_screenshot(str(SHOTS/f'{page}.png'))
        first_plot = driver.execute_script("""const i = document.querySelector('.cell_output img');
            if (i) { i.scrollIntoView({block: 'center'}); return true } return false""")
        if first_plot: driver.save_screenshot(str(SHOTS/f'{page}-plot.png'))
        if driver.execute_script("""const e = document.querySelector('.api-entry');
            if (e) { e.scrollIntoView({block: 'start'}); window.scrollBy(0, -120); return true } return false"""):
            driver.save_screenshot(str(SHOTS/f'{page}-api.png'))
        res[page] = info
    return res

@pytest.mark.parametrize('page', PAGES)
def test_page_loads(visited, page):
    info = visited[page]
    assert info['h1'], f'{page}.html has no title'
    assert info['text'] > 500, f'{page}.html is almost empty'
    assert (SHOTS/f'{page}.png').stat().st_size > 10_000

def test_no_console_errors(visited):
    errors = {p: [e['message'] for e in v['log'] if e['level'] in ('SEVERE', 'WARNING')] for p, v in visited.items()}
    assert not any(errors.values()), json.dumps({p: e for p, e in errors.items() if e}, indent=1)

def test_browser_log_is_read(visited, driver):
    "The console check above would pass vacuously if the log were not collected."
    driver.execute_script("console.warn('docs-test-probe')")
    assert any('docs-test-probe' in e['message'] for e in driver.get_log('browser'))

def test_everything_loads_from_the_site(visited, server):
    outside = {p: [r for r in v['resources'] if not r.startswith(server) and not r.startswith('data:')] for p, v in visited.items()}
    assert not any(outside.values()), f'resources loaded from elsewhere: {outside}'
    assert not _Handler.missing, f'the site asked for files it does not have: {sorted(set(_Handler.missing))}'

def test_sidebar_in_tutorial_order(visited):
    expected = [p for p in PAGES if p != 'index']
    links = [l.split('#')[0].removesuffix('.html') for l in visited['index']['sidebar']]
    found = [p for p in links if p in expected]
    assert found == expected, f'sidebar order {found} != nbs/sidebar.yml order {expected}'

def test_plots_are_images(visited):
    plots = {p: [i for i in v['images'] if i['output']] for p, v in visited.items()}
    broken = {p: [i['src'] for i in imgs if not (i['complete'] and i['w'] > 0 and i['h'] > 0)] for p, imgs in plots.items()}
    assert not any(broken.values()), f'images that did not load: {broken}'
    assert len(plots['gradient_descent']) >= 3, 'the gradient descent notebook draws several plots'
    assert sum(map(len, plots.values())) >= 5

def test_math_is_typeset(visited, server):
    gd = visited['gradient_descent']
    assert gd['math'] >= 20, f"only {gd['math']} MathJax elements on the gradient descent page"
    assert gd['mathErrors'] == 0
    assert any(r.startswith(server + '_static/mathjax/') for r in gd['resources']), 'MathJax does not come from the site'

def test_search_finds_results(server, driver):
    from selenium.webdriver.support.ui import WebDriverWait
    log = _load(driver, server + 'search.html?q=ndcg')
    found = WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#search-results ul.search li a')].map(a => a.getAttribute('href'))") or None)
    driver.save_screenshot(str(SHOTS/'search.png'))
    assert any('metrics' in h for h in found), found   # ndcg is taught in 03_metrics
    assert not [e for e in log if e['level'] == 'SEVERE'], log

class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(); self.links, self.ids = [], set()
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('id'): self.ids.add(a['id'])
        if tag == 'a' and a.get('name'): self.ids.add(a['name'])
        if tag == 'a' and a.get('href') is not None: self.links.append(a['href'])

def _fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r: return r.status, r.headers.get_content_type(), r.read()
    except urllib.error.HTTPError as e: return e.code, None, b''

def test_internal_links_resolve(server):
    "Crawl the site from every sidebar page: each same-site link answers 200, and each #anchor exists on its page."
    pages, todo, broken = {}, [server + f'{p}.html' for p in PAGES], []
    wanted = []   # (from page, target url, fragment)
    while todo:
        url = todo.pop()
        if url in pages: continue
        status, ctype, body = _fetch(url)
        pages[url] = p = _Links()
        if status != 200: broken.append(f'{url}: HTTP {status}'); continue
        if ctype != 'text/html': continue
        p.feed(body.decode('utf-8', 'replace'))
        for href in p.links:
            target, frag = urldefrag(urljoin(url, href))
            if not target.startswith(server): continue
            wanted.append((url, target, unquote(frag)))
            if target not in pages: todo.append(target)
    for src, target, frag in wanted:
        if target not in pages or not frag: continue
        if frag not in pages[target].ids: broken.append(f'{src} -> {target}#{frag}: no such anchor')
    assert len(pages) > len(PAGES)
    assert not broken, '\n'.join(sorted(set(broken)))

def test_repository_files_link_to_the_repository(server):
    "A notebook's link to a file outside nbs/ (the home page's `../benchmarks/results.md`) opens it in the repository."
    p = _Links(); p.feed(_fetch(server + 'index.html')[2].decode('utf-8'))
    assert _build.repo_url('benchmarks/results.md') in p.links
    assert _build.repo_url('benchmarks/results.md').startswith('https://github.com/transferrec/transferrec/blob/main/')

def test_api_page_lists_every_export(server):
    "Every exported function and class of every module has an entry on the API page, linked to its notebook."
    import inspect, importlib
    sys.path.insert(0, str(ROOT))
    syms = importlib.import_module('transferrec._modidx').d['syms']
    status, _, body = _fetch(server + 'api.html')
    assert status == 200
    page = body.decode()
    p = _Links(); p.feed(page)
    missing = []
    for mod in syms:
        m = importlib.import_module(mod)
        for n in getattr(m, '__all__', []):
            obj = getattr(m, n, None)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                if f'>{n}<' not in page and f'>{n}<a' not in page: missing.append(f'{mod}.{n}')
    assert not missing, f'not on the API page: {missing}'
    assert page.count('Defined in') >= 20

# ---------------------------------------------------------------- the processing rules, on a small notebook (no browser)

def _nb(tmp_path, name, cells):
    import nbformat
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'language': 'python', 'display_name': 'Python 3'}})
    for kind, src in cells:
        nb.cells.append(nbformat.v4.new_markdown_cell(src) if kind == 'md' else nbformat.v4.new_code_cell(src))
    p = tmp_path/name
    nbformat.write(nb, p)
    return p

def test_processing_rules(tmp_path):
    "Hidden cells run but vanish, slow cells never run, exports get API docs and stay folded, outputs are captured."
    import nbproc
    from execnb.nbio import read_nb
    src = _nb(tmp_path, '00_demo.ipynb', [
        ('code', '#| default_exp demo'),
        ('md', '# Demo\n\n> A one-line summary.\n\nAn introduction that stays.'),
        ('code', '#| hide\nSECRET = 41'),
        ('code', '#| export\ndef add(a:int, # the first number\n        b:int=1, # the second number\n       ) -> int:\n    "Add `a` and `b`."\n    return a + b'),
        ('code', 'print(add(SECRET))'),
        ('code', '#| slow\nprint("never runs")\nraise SystemExit'),
    ])
    meta = nbproc.process(str(src), str(tmp_path/'demo.ipynb'), {'demo': {'demo.add': ('demo.html#add', 'demo.py')}})
    assert meta['title'] == 'Demo' and meta['description'] == 'A one-line summary.' and not meta['stored']
    assert meta['labels'] == ['nb-demo.add']
    cells = read_nb(tmp_path/'demo.ipynb').cells
    text = '\n'.join(c.source for c in cells)
    assert 'SECRET = 41' not in text and 'default_exp' not in text
    slow = next(c for c in cells if 'never runs' in c.source)
    assert slow.metadata.get('docs_slow') and not slow.get('outputs')
    assert 'An introduction that stays.' in text
    doc = next(c for c in cells if c.cell_type == 'code' and 'show_doc(add)' in c.source)
    md = ''.join(doc.outputs[0]['data']['text/markdown'])
    assert '(nb-demo.add)=' in md and '### add' in md and 'add(a: int, b: int = 1) -> int' in md
    assert '| {code}`a` | `int` |  | the first number |' in md and 'Add `a` and `b`.' in md
    exp = next(c for c in cells if 'def add' in c.source)
    assert exp.source.startswith('#| code-fold: show') and cells.index(exp) > cells.index(doc)
    run = next(c for c in cells if c.source.startswith('print(add'))
    assert ''.join(run.outputs[0]['text']).strip() == '42'

def test_failing_notebook_names_itself(tmp_path):
    import nbproc
    src = _nb(tmp_path, 'broken.ipynb', [('md', '# Broken'), ('code', 'x = 1'), ('code', '1 / 0')])
    with pytest.raises(RuntimeError) as e: nbproc.process(str(src), str(tmp_path/'out.ipynb'), {})
    assert str(e.value).startswith('broken.ipynb: cell') and 'ZeroDivisionError' in str(e.value) and '1 / 0' in str(e.value)
