"""API documentation as MyST markdown: signatures, docstrings and docments tables (fastcore.docments).

Used twice by `docs/build.py`: as `show_doc` while the notebooks are executed (each documented symbol becomes a
section of its notebook's page, with a label other pages link to) and for the API reference page."""
from __future__ import annotations
import inspect, re
from types import FunctionType
from fastcore.docments import docments

def label(fullname:str, prefix:str='nb-') -> str:
    """The MyST label of the notebook section documenting `fullname` (`prefix='api-'`: of its API reference entry).
    Labels are case-insensitive, so capitals are marked (`Split` -> `_split`) to keep `Split` apart from `split`."""
    return prefix + re.sub(r'[A-Z]', lambda m: '_' + m.group(0).lower(), fullname)

def _anno(a) -> str:
    if a is inspect.Parameter.empty: return ''
    if isinstance(a, str): return a
    return inspect.formatannotation(a)

def _default(d) -> str:
    if d is inspect.Parameter.empty: return ''
    if isinstance(d, FunctionType) or inspect.isclass(d): return d.__name__
    return repr(d)

def _signature(obj):
    try: return inspect.signature(obj)
    except (TypeError, ValueError): return None

def _params(obj) -> list:
    sig = _signature(obj)
    if sig is None: return []
    ps = list(sig.parameters.values())
    if inspect.isclass(obj) and ps and ps[0].name == 'self': ps = ps[1:]
    return ps

def _param_str(p) -> str:
    s = {p.VAR_POSITIONAL: '*', p.VAR_KEYWORD: '**'}.get(p.kind, '') + p.name
    a, d = _anno(p.annotation), _default(p.default)
    if a: s += f': {a}'
    if d: s += f' = {d}' if a else f'={d}'
    return s

def signature_str(obj, name:str, width:int=88) -> str:
    "`name(params) -> return`, on one line when it fits `width`, else one parameter per line."
    sig = _signature(obj)
    if sig is None: return name
    ps, ret = _params(obj), ''
    if not inspect.isclass(obj) and sig.return_annotation is not inspect.Signature.empty:
        ret = f' -> {_anno(sig.return_annotation)}'
    one = f"{name}({', '.join(map(_param_str, ps))}){ret}"
    if len(one) <= width or not ps: return one
    return f"{name}(\n" + ''.join(f'    {_param_str(p)},\n' for p in ps) + f"){ret}"

def _cell(s:str) -> str:
    "Make `s` safe inside a markdown table cell."
    return s.replace('\\', '\\\\').replace('|', '\\|').replace('\n', ' ').strip()

def _code(s:str) -> str:
    return f'`{_cell(s)}`' if s else ''

def docments_table(obj) -> str:
    "A markdown table of the parameters of `obj`: type, default and the docment (the comment after each parameter)."
    try: dm = docments(obj, full=True)
    except Exception: return ''
    ps = [p for p in _params(obj) if p.name != 'self']
    if not ps: return ''
    rows = ['| Parameter | Type | Default | Details |', '|---|---|---|---|']
    for p in ps:
        doc = (dm.get(p.name) or {}).get('docment') or ''
        name = {p.VAR_POSITIONAL: '*', p.VAR_KEYWORD: '**'}.get(p.kind, '') + p.name
        # {code} rather than backticks: a parameter named like an exported function is not a link to it
        rows.append(f'| {{code}}`{name}` | {_code(_anno(p.annotation))} | {_code(_default(p.default))} | {_cell(doc)} |')
    ret = dm.get('return') or {}
    sig = _signature(obj)
    ranno = '' if inspect.isclass(obj) or sig is None else _anno(sig.return_annotation)
    if ret.get('docment') or ranno:
        rows.append(f"| **Returns** | {_code(ranno)} |  | {_cell(ret.get('docment') or '')} |")
    return '\n'.join(rows)

def docstring(obj) -> str:
    d = obj.__doc__ if inspect.isclass(obj) else inspect.getdoc(obj)   # a class without one does not inherit object's
    return inspect.cleandoc(d) if d else ''

def kind(obj) -> str:
    if inspect.isclass(obj): return 'exception' if issubclass(obj, BaseException) else 'class'
    return 'function' if callable(obj) else type(obj).__name__

def render(obj, name:str, fullname:str|None=None, level:int=3) -> str:
    "A notebook section documenting `obj`: label, heading, signature, docstring and docments table."
    out = []
    if fullname: out.append(f'({label(fullname)})=')
    out.append(f"{'#' * level} {name}\n")
    body = [f'```python\n{signature_str(obj, name)}\n```']
    if d := docstring(obj): body.append(d)
    if t := docments_table(obj): body.append(t)
    out.append(':::{container} api-entry\n' + f'{{.api-kind}}\n{kind(obj)}\n\n' + '\n\n'.join(body) + '\n:::')
    return '\n'.join(out)

class ShowDoc:
    "What `show_doc` returns during the docs build: markdown for the notebook page, plus the symbol it documents."
    def __init__(self, md:str, fullname:str|None): self.md, self.fullname = md, fullname
    def _repr_markdown_(self): return self.md

def make_show_doc(resolve):
    "A `show_doc(sym, name=None, title_level=3)` whose output is `render`'s markdown; `resolve(obj, name)` gives the full name."
    def show_doc(sym, renderer=None, name:str|None=None, title_level:int=3):
        sym = getattr(sym, '__func__', sym)
        nm = name or getattr(sym, '__qualname__', None) or getattr(sym, '__name__', str(sym))
        full = resolve(sym, nm)
        return ShowDoc(render(sym, nm, full, title_level), full)
    return show_doc
