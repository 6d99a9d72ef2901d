"""Render README.md from nbs/index.ipynb (Quarto, which nbdev_readme needs, is not available offline).

Markdown cells are copied; code cells become ```python blocks without their `#|` directives; cells marked
`#| hide` are dropped; outputs are rendered as markdown (text/markdown), HTML tables (text/html) or text blocks."""
import re, sys, nbformat
from pathlib import Path

def _directives(src): return [l.strip()[3:].strip() for l in src.splitlines() if l.strip().startswith('#|')]

def _output(o) -> str:
    if o.output_type == 'stream': return '' if o.get('name') == 'stderr' else f"```\n{o.text.rstrip()}\n```"
    data = o.get('data', {})
    if 'text/markdown' in data: return data['text/markdown'].strip()
    if 'text/html' in data and '<table' in data['text/html']:
        return re.sub(r'<style scoped>.*?</style>\s*', '', data['text/html'], flags=re.S).strip()
    if 'text/plain' in data: return f"```\n{data['text/plain'].rstrip()}\n```"
    return ''

def render(nb_path) -> str:
    nb = nbformat.read(nb_path, as_version=4)
    out = []
    for cell in nb.cells:
        flags = _directives(cell.source)
        if any(f.startswith(('hide', 'export')) for f in flags): continue
        if cell.cell_type == 'markdown': out.append(cell.source.strip()); continue
        if cell.cell_type != 'code': continue
        code = '\n'.join(l for l in cell.source.splitlines() if not l.strip().startswith('#|')).strip()
        if code and 'hide_input' not in ' '.join(flags): out.append(f"```python\n{code}\n```")
        out += [r for r in map(_output, cell.get('outputs', [])) if r]
    return '\n\n'.join(out) + '\n'

if __name__ == '__main__':
    src, dst = sys.argv[1:3]
    Path(dst).write_text(render(src), encoding='utf-8')
