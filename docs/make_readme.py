"""Render README.md from nbs/index.ipynb (Quarto, which nbdev_readme needs, is not available offline).

Markdown cells are copied; code cells become ```python blocks without their `#|` directives; cells marked
`#| hide` are dropped; outputs are rendered as markdown (text/markdown), HTML tables (text/html) or text blocks."""
import os, re, sys, nbformat
from pathlib import Path

_LINK = re.compile(r'(\]\()([^)\s#]+)(#[^)\s]*)?(\))')

def relink(text: str, src_dir: str, dst_dir: str) -> str:
    "Rewrite relative markdown links written from `src_dir` so they resolve from `dst_dir`."
    def fix(m):
        target = m.group(2)
        if re.match(r'[a-z][a-z0-9+.-]*:', target, re.I) or target.startswith('/'): return m.group(0)
        new = os.path.relpath(os.path.normpath(os.path.join(src_dir, target)), dst_dir)
        return m.group(1) + new + (m.group(3) or '') + m.group(4)
    return _LINK.sub(fix, text)

def _directives(src): return [l.strip()[3:].strip() for l in src.splitlines() if l.strip().startswith('#|')]

def _output(o) -> str:
    if o.output_type == 'stream': return '' if o.get('name') == 'stderr' else f"```\n{o.text.rstrip()}\n```"
    data = o.get('data', {})
    if 'text/markdown' in data: return data['text/markdown'].strip()
    if 'text/html' in data and '<table' in data['text/html']:
        return re.sub(r'<style scoped>.*?</style>\s*', '', data['text/html'], flags=re.S).strip()
    if 'text/plain' in data: return f"```\n{data['text/plain'].rstrip()}\n```"
    return ''

def render(nb_path, dst_dir: str='.') -> str:
    nb = nbformat.read(nb_path, as_version=4)
    md = lambda text: relink(text, os.path.dirname(str(nb_path)), dst_dir)
    out = []
    for cell in nb.cells:
        flags = _directives(cell.source)
        if any(f.startswith(('hide', 'export')) for f in flags): continue
        if cell.cell_type == 'markdown': out.append(md(cell.source.strip())); continue
        if cell.cell_type != 'code': continue
        code = '\n'.join(l for l in cell.source.splitlines() if not l.strip().startswith('#|')).strip()
        if code and 'hide_input' not in ' '.join(flags): out.append(f"```python\n{code}\n```")
        out += [md(r) if not r.startswith('```') else r for r in map(_output, cell.get('outputs', [])) if r]
    return '\n\n'.join(out) + '\n'

if __name__ == '__main__':
    src, dst = sys.argv[1:3]
    Path(dst).write_text(render(src, os.path.dirname(dst) or '.'), encoding='utf-8')
