"The README, rendered from nbs/index.ipynb: its relative links resolve from the repository root."
import re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'docs'))
from make_readme import relink, render

def test_relative_links_resolve():
    text = (ROOT/'README.md').read_text()
    targets = [t for t in re.findall(r'\]\(([^)\s#]+)', text) if not re.match(r'[a-z][a-z0-9+.-]*:', t, re.I)]
    assert targets, "the README links to nothing"
    missing = [t for t in targets if not (ROOT/t).exists()]
    assert not missing, f"README links that do not resolve from the repository root: {missing}"

def test_relink_rewrites_only_relative_targets():
    text = "[a](06_transfer.ipynb#cold) [b](../benchmarks/results.md) [c](https://x.org/y) [d](#top)"
    assert relink(text, 'nbs', '.') == ("[a](nbs/06_transfer.ipynb#cold) [b](benchmarks/results.md) "
                                        "[c](https://x.org/y) [d](#top)")

def test_readme_is_rendered_from_the_index_notebook():
    "README.md is exactly what docs/make_readme.py renders from nbs/index.ipynb: no number in it is typed by hand."
    assert render(ROOT/'nbs'/'index.ipynb', str(ROOT)) == (ROOT/'README.md').read_text(), \
        '`make readme` (docs/make_readme.py nbs/index.ipynb README.md) after changing nbs/index.ipynb'
