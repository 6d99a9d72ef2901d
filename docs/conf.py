"""Sphinx configuration of the offline docs site; `docs/build.py` runs Sphinx over `_proc/` with this file.

Everything a page loads comes from the site itself: the theme's assets, and MathJax from `.venv/share/mathjax`
(fetched from the npm registry by `make docs`), never from a CDN."""
from configparser import ConfigParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_cfg = ConfigParser(); _cfg.read(ROOT/'settings.ini')
_s = _cfg['DEFAULT']
MATHJAX = ROOT/'.venv'/'share'/'mathjax'

project = _s['title']
author = _s['author']
copyright = _s['copyright']
release = version = _s['version']

extensions = ['myst_nb', 'sphinx.ext.mathjax']
exclude_patterns = ['.cache', '.doctrees', '.*', '**/.ipynb_checkpoints']
root_doc = 'index'

# notebooks arrive executed (docs/build.py runs them while processing), so myst-nb only renders them
nb_execution_mode = 'off'
nb_output_stderr = 'remove'          # warnings and progress bars are not part of the docs
nb_merge_streams = True
nb_render_markdown_format = 'myst'   # text/markdown outputs (tables, show_doc) are full MyST
nb_mime_priority_overrides = [('html', 'text/markdown', 5)]
myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence', 'attrs_block', 'attrs_inline', 'deflist', 'html_image']
myst_heading_anchors = 3
myst_dmath_double_inline = True
suppress_warnings = ['myst.header', 'mystnb.unknown_mime_type']

# MathJax 3 bundled with the site (mathjax_path is relative to _static)
mathjax_path = 'mathjax/tex-mml-chtml.js'
if not (MATHJAX/'mathjax'/'tex-mml-chtml.js').exists():
    raise RuntimeError(f'MathJax is missing from {MATHJAX}: run `make docs` (it fetches mathjax from the npm registry)')

html_theme = 'sphinx_book_theme'
html_title = project
html_static_path = [str(ROOT/'docs'/'_static'), str(MATHJAX)]
html_css_files = ['custom.css']
html_logo = str(ROOT/'docs'/'_static'/'logo.svg')
html_favicon = str(ROOT/'docs'/'_static'/'logo.svg')
html_show_sourcelink = False
html_copy_source = True
html_last_updated_fmt = None
html_theme_options = {
    'home_page_in_toc': True,
    'logo': {'text': project},
    'show_toc_level': 2,
    'use_download_button': True,
    'use_fullscreen_button': False,
    'use_repository_button': False,
    'use_issues_button': False,
    'use_edit_page_button': False,
    'navigation_with_keys': False,
    'search_bar_text': 'Search the docs…',
    'extra_footer': f"<p>{_s['description']}.</p>",
}
html_context = {'default_mode': 'light'}

def _output_folder(app):
    "myst-nb writes images next to the output folder (the repository root here): keep them in _proc/ instead."
    cfg = app.env.mystnb_config
    app.env.mystnb_config = cfg.copy(output_folder=str(ROOT/'_proc'/'.jupyter_execute'),
                                     execution_cache_path=str(ROOT/'_proc'/'.jupyter_cache'))

def setup(app):
    app.connect('builder-inited', _output_folder, priority=900)
