"""Process one notebook for the docs the way `nbdev_proc_nbs` does, executing it on the way.

`process(src, dst, syms)` runs nbdev's docs processors (`nbdev.processors.FilterDefaults.base_procs`) over `src`
with three changes, and writes the result to `dst` (still in nbdev's Quarto-flavoured form; `docs/build.py` turns it
into what myst-nb renders):

- `exec_show_docs` runs every cell (nbdev runs only what `show_doc` needs), so pages show tables and plots, unless the
  notebook is stored with outputs in its ordinary cells (then it is used as stored, exactly as nbdev does). Cells whose
  leading directives include `#| slow` never run: they are shown with their stored outputs, or without outputs and
  marked (metadata `docs_slow`) so the page says the full-size run is not executed for the docs.
- `show_doc` renders with `docs/apidoc.py`: a labelled section with signature, docstring and docments table.
- `#| export` cells are shown after their API docs, folded under "Exported source", as nbdev shows `#| exports` cells
  (nbdev's `rm_export` would drop them).
A cell that raises stops processing with the notebook's name, the cell and the traceback."""
from __future__ import annotations
import os, re, time, warnings
from pathlib import Path

ENV = dict(HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', HF_HUB_DISABLE_TELEMETRY='1', MPLBACKEND='Agg',
           TOKENIZERS_PARALLELISM='false')
_re_dir = re.compile(r'^\s*#\|\s*(.*?)\s*$')

def directives(src:str) -> list[str]:
    "The leading `#| ...` lines of a cell, without the `#|`."
    res = []
    for line in src.splitlines():
        if not line.strip(): continue
        m = _re_dir.match(line)
        if not m: break
        res.append(m.group(1))
    return res

def _names(src): return {re.split(r'[\s:]', d, maxsplit=1)[0] for d in directives(src) if d}
def is_slow(cell) -> bool: return cell.cell_type == 'code' and 'slow' in _names(cell.source)

def split_title(nb):
    "Keep only the H1, the `>` summary and `- key: value` lines in the title cell; the rest becomes its own cell."
    from execnb.nbio import mk_cell
    for i, c in enumerate(nb.cells):
        if c.cell_type != 'markdown': continue
        lines = c.source.splitlines()
        h1 = next((j for j, l in enumerate(lines) if re.match(r'^#\s+\S', l)), None)
        if h1 is None: return
        j = h1 + 1
        while j < len(lines) and (not lines[j].strip() or re.match(r'^>\s', lines[j])
                                  or re.match(r'^-\s+\S.*:.*\S\s*$', lines[j])): j += 1
        head, rest = '\n'.join(lines[:j]).rstrip(), '\n'.join(lines[j:]).strip()
        if rest:
            c.source = head
            nb.cells.insert(i + 1, mk_cell(rest, 'markdown'))
        return

def is_stored(nb) -> bool:
    "Is the notebook stored with outputs in its ordinary (not slow, not exported) cells?"
    return any(c.cell_type == 'code' and c.get('outputs') and not is_slow(c)
               and not {'export', 'exports', 'exporti'} & _names(c.source) for c in nb.cells)

def process(src:str, dst:str, syms:dict) -> dict:
    "Process and execute notebook `src`, write it to `dst`; returns its frontmatter, module and show_doc labels."
    for k, v in ENV.items(): os.environ.setdefault(k, v)
    os.environ['IN_TEST'] = '1'
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from nbdev.process import NBProcessor, Processor
    from nbdev.frontmatter import FrontmatterProc
    from nbdev import processors as P
    from nbdev.processors import _is_showdoc, _default_exp
    from apidoc import make_show_doc, label
    t0, c0, src = time.time(), time.process_time(), Path(src)
    warnings.filterwarnings('ignore', message='Found cells containing imports')   # nbdev's hint for stored notebooks
    nb = read_nb(src)
    stored, module = is_stored(nb), _default_exp(nb)
    for c in nb.cells:
        c.skip_ = is_slow(c)
        if c.skip_: c.metadata['docs_slow'] = True   # shown, never run: with its stored outputs, or marked as not run
        if c.cell_type == 'code' and not stored and not c.skip_: c.outputs = []
    split_title(nb)
    labels = set()

    def resolve(obj, name):
        "The full name `name` is exported under (this notebook's module first), once per notebook."
        for m in ([module] if module else []) + [m for m in syms if m != module]:
            full = f'{m}.{name}'
            if full in syms.get(m, {}) and label(full) not in labels:
                labels.add(label(full)); return full
    show_doc = make_show_doc(resolve)

    class exec_cells(Processor):
        "nbdev's `exec_show_docs`, running every cell of a notebook that is not stored with outputs."
        def begin(self):
            self.k = CaptureShell(src)
            self.k.run_cell('from nbdev.showdoc import show_doc')
        def __call__(self, cell):
            if cell.cell_type != 'code' or getattr(cell, 'skip_', False) or not cell.source: return
            if cell.directives_.get('eval:', [''])[0].lower() == 'false': return
            if 'nbdev_export' + '()' in cell.source: return
            showdoc = _is_showdoc(cell)
            exported = bool({'export', 'exports', 'exporti'} & cell.directives_.keys())
            # a notebook stored with outputs is shown as stored: only the module's own cells run, for show_doc
            if stored and not (self.nb.has_docs_ and (showdoc or exported)): return
            if showdoc: self.k.user_ns['show_doc'] = show_doc
            cell.outputs = []
            self.k.cell(cell)
            if self.k.exc:
                raise RuntimeError(f'{src.name}: cell {cell.idx_} failed:\n{cell.source}\n\n{self.k.prettytb(fname=src)}')
        def end(self):
            import matplotlib.pyplot as plt
            plt.close('all')

    def rm_export(cell):
        "nbdev's `rm_export`, except that `export` cells stay (folded by `add_fold`)."
        if cell.directives_ and cell.directives_.keys() & {'exporti', 'hide', 'default_exp'}: del cell['source']

    def add_fold(cell):
        "nbdev's `add_fold`, for `export` as well as `exports` cells."
        if cell.cell_type == 'code' and cell.directives_ and {'export', 'exports'} & cell.directives_.keys():
            cell.source = f'#| code-fold: show\n#| code-summary: "Exported source"\n{cell.source}'

    class mv_exports(Processor):
        "nbdev's `mv_exports`, moving each exported cell after all the `show_doc` cells added for it."
        def begin(self):
            cells = self.nb.cells
            for cell in reversed([c for c in cells if c.cell_type == 'code' and c.directives_
                                  and {'export', 'exports'} & c.directives_.keys()]):
                i = j = cell.idx_
                while j + 1 < len(cells) and getattr(cells[j + 1], 'has_sd', 0): j += 1
                if j > i: cells[i:j + 1] = cells[i + 1:j + 1] + [cells[i]]

    # nbdev's FilterDefaults.base_procs, with the replacements above
    procs = [FrontmatterProc, P.populate_language, P.add_show_docs, P.insert_warning, P.strip_ansi, P.hide_line,
             P.filter_stream_, P.rm_header_dash, P.clean_show_doc, exec_cells, rm_export, P.ai_magics,
             P.clean_magics, P.hide_, add_fold, mv_exports, P.strip_hidden_metadata]
    cwd = os.getcwd()
    os.chdir(src.parent)
    try:
        import torch; torch.set_num_threads(1)   # the notebooks run side by side, one core each
    except ImportError: pass
    try: NBProcessor(nb=nb, procs=procs).process()
    finally: os.chdir(cwd)
    write_nb(nb, dst)
    fm = getattr(nb, 'frontmatter_', {}) or {}
    return dict(title=fm.get('title'), description=fm.get('description', ''), module=module,
                labels=sorted(labels), stored=stored, seconds=round(time.time() - t0, 1),
                cpu_seconds=round(time.process_time() - c0, 1))
