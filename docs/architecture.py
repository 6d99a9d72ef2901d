"""The package's architecture, read from its own code: which notebook exports which module and in what order, what
each module imports from the package, and the rules that keep the layers honest.

    python docs/architecture.py [OUT_DIR]   # writes OUT_DIR/architecture.md and OUT_DIR/architecture.png (default: _proc/)

One implementation serves two readers, so they cannot disagree:

- `docs/build.py` calls `write(_proc)`, which adds the site's Architecture page: the layers (notebook -> module, in
  notebook order), each module's one-line summary (its docstring), what it imports from the package, and the
  dependency graph drawn with matplotlib from the imports found here;
- `tests/test_architecture.py` runs the checkers over the package, the tests and the benchmarks:
  `upward_imports`, `import_cycles`, `order_violations` (is the notebook order a topological order?),
  `private_uses` and `foreign_patches`.

Everything is read with `ast` (no module is imported, no model is loaded). A module's imports of the package are every
`from .x import`, `from transferrec.x import`, `from transferrec import x`, `import transferrec.x`,
`transferrec.x` after `import transferrec` and `importlib.import_module('transferrec.x')`, at the top of the file or
inside a function (a "lazy" import is still a dependency). `transferrec/__init__.py` and nbdev's generated index
`transferrec/_modidx.py` are not modules of the layers."""
from __future__ import annotations
import ast, json, re, sys
from functools import lru_cache
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = 'transferrec'
NOT_MODULES = {'__init__', '_modidx'}          # the package itself and nbdev's index: not layers
IGNORED_PRIVATE = {'_modidx'}                  # `transferrec._modidx` is nbdev's, not a private name of the package
PAGE = 'architecture'
_re_default_exp = re.compile(r'^\s*#\s*\|\s*default_exp\s+(\S+)', re.M)

def _private(name:str) -> bool:
    "A leading underscore that is not a dunder: `_x`, `__x`; not `__x__`."
    return name.startswith('_') and not (name.startswith('__') and name.endswith('__'))

# ---------------------------------------------------------------- what the code says

@dataclass(frozen=True)
class Layer:
    "One notebook, in notebook order, and the module it exports (`None`: it exports nothing)."
    pos: int
    notebook: str
    module: str|None

@dataclass(frozen=True)
class Import:
    "`src` imports `dst` (both module names) at `file:line`; `lazy`: inside a function."
    src: str
    dst: str
    file: Path
    line: int
    names: tuple = ()
    lazy: bool = False

@dataclass(frozen=True)
class Violation:
    "A broken rule: where (`file:line`), the offending name, and why."
    file: str
    line: int
    name: str
    why: str
    def __str__(self): return f'{self.file}:{self.line}: {self.name}: {self.why}'

@dataclass
class Graph:
    "The package read from its code: layers in notebook order, modules, their summaries and their imports of each other."
    root: Path
    pkg: str
    layers: list
    modules: dict                                   # module name -> its file
    summaries: dict
    imports: list
    order: dict = field(default_factory=dict)      # module name -> position of its notebook
    def __post_init__(self):
        self.order = {l.module: l.pos for l in self.layers if l.module}
    def deps(self, mod:str) -> dict:
        "What `mod` imports from the package: `{module: [Import, ...]}`, in notebook order."
        res = {}
        for i in self.imports:
            if i.src == mod: res.setdefault(i.dst, []).append(i)
        return dict(sorted(res.items(), key=lambda kv: (self.order.get(kv[0], len(self.order)), kv[0])))
    def edges(self) -> dict:
        "`{(importer, imported): [Import, ...]}` over the whole package."
        res = {}
        for i in self.imports: res.setdefault((i.src, i.dst), []).append(i)
        return res

def _cells(nb:Path) -> list[str]:
    return [''.join(c.get('source') or '') if isinstance(c.get('source'), list) else (c.get('source') or '')
            for c in json.loads(nb.read_text(encoding='utf-8')).get('cells', []) if c.get('cell_type') == 'code']

def notebook_layers(nbs:Path) -> list[Layer]:
    "Every notebook of `nbs/` in notebook order (sorted file names) with the module its `#| default_exp` names."
    res = []
    for nb in sorted(p for p in nbs.glob('*.ipynb') if not p.name.startswith(('_', '.'))):
        mod = next((m.group(1) for src in _cells(nb) for m in [_re_default_exp.search(src)] if m), None)
        res.append(Layer(len(res), nb.name, mod))
    return res

def package_modules(pkg_dir:Path) -> dict[str, Path]:
    "The package's modules (`transferrec/*.py` less `__init__` and nbdev's `_modidx`), by name."
    return {p.stem: p for p in sorted(pkg_dir.glob('*.py')) if p.stem not in NOT_MODULES}

def _rel(p:Path, root:Path) -> str:
    try: return str(Path(p).resolve().relative_to(Path(root).resolve()))
    except ValueError: return str(p)

def _parents(tree) -> dict:
    par = {}
    for n in ast.walk(tree):
        for c in ast.iter_child_nodes(n): par[c] = n
    return par

def _in_function(node, par) -> bool:
    while node in par:
        node = par[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)): return True
    return False

def _dotted(node) -> str|None:
    "`a.b.c` of a Name/Attribute chain, else None."
    parts = []
    while isinstance(node, ast.Attribute): parts.append(node.attr); node = node.value
    if isinstance(node, ast.Name): return '.'.join([node.id, *reversed(parts)])
    return None

def _is_import_module(call) -> bool:
    return isinstance(call, ast.Call) and (_dotted(call.func) or '').split('.')[-1] == 'import_module' \
        and len(call.args) >= 1 and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)

class _Refs:
    """Where one file refers to the package: its imports of the package's modules (`imports`), the names bound to the
    package or one of its modules (`aliases`: name -> module name, '' for the package), and imports of private names
    (`private`: `[(line, module, name)]`)."""
    def __init__(self, tree, pkg:str, modules, self_mod:str|None=None):
        self.imports, self.aliases, self.private = [], {}, []
        par = _parents(tree)
        def add(node, mod, names=()):
            if mod in modules and mod != self_mod: self.imports.append((node.lineno, mod, tuple(names), _in_function(node, par)))
        for n in ast.walk(tree):
            if isinstance(n, ast.Import):
                for a in n.names:
                    parts = a.name.split('.')
                    if parts[0] != pkg: continue
                    if len(parts) > 1:
                        add(n, parts[1])
                        if _private(parts[1]) and parts[1] not in IGNORED_PRIVATE: self.private.append((n.lineno, '', parts[1]))
                    if a.asname: self.aliases[a.asname] = parts[1] if len(parts) > 1 else ''
                    else: self.aliases[pkg] = ''
            elif isinstance(n, ast.ImportFrom):
                if n.level: base = pkg + (f'.{n.module}' if n.module else '') if self_mod is not None else None
                else: base = n.module
                if not base or base.split('.')[0] != pkg: continue
                parts = base.split('.')
                if len(parts) == 1:                                           # from transferrec import x
                    for a in n.names:
                        if a.name in modules:
                            add(n, a.name); self.aliases[a.asname or a.name] = a.name
                        elif _private(a.name) and a.name not in IGNORED_PRIVATE: self.private.append((n.lineno, '', a.name))
                else:                                                         # from transferrec.x import names
                    names = [a.name for a in n.names]
                    add(n, parts[1], names)
                    if parts[1] in IGNORED_PRIVATE or parts[1] == self_mod: continue
                    for a in n.names:
                        if _private(a.name): self.private.append((n.lineno, parts[1], a.name))
            elif _is_import_module(n):
                parts = n.args[0].value.split('.')
                if parts[0] == pkg and len(parts) > 1:
                    add(n, parts[1])
                    t = par.get(n)
                    if isinstance(t, ast.Assign) and len(t.targets) == 1 and isinstance(t.targets[0], ast.Name):
                        self.aliases[t.targets[0].id] = parts[1]
        # `transferrec.x` after `import transferrec` (a second pass: the alias may be bound after its first use in the walk)
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.attr in modules \
                    and self.aliases.get(n.value.id) == '':
                add(n, n.attr)
        self.imports = sorted(set(self.imports))

_trees = {}

def _parse(path:Path):
    "The file's syntax tree (parsed once while the file is unchanged)."
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)
    if key not in _trees: _trees[key] = ast.parse(Path(path).read_text(encoding='utf-8'), filename=str(path))
    return _trees[key]

def module_summary(path:Path) -> str:
    "The first line (sentence block) of a module's docstring."
    d = ast.get_docstring(_parse(path)) or ''
    return ' '.join(d.split('\n\n')[0].split())

def read_graph(root:Path=ROOT, pkg:str=PKG, nbs:Path|None=None) -> Graph:
    "The package under `root` read from its code: layers from `root/nbs`, modules and imports from `root/pkg`."
    root = Path(root)
    layers = notebook_layers(Path(nbs) if nbs else root/'nbs')
    modules = package_modules(root/pkg)
    imports = []
    for mod, path in modules.items():
        refs = _Refs(_parse(path), pkg, modules, self_mod=mod)
        for line, dst, names, lazy in refs.imports:
            imports.append(Import(mod, dst, path, line, names, lazy))
    return Graph(root, pkg, layers, modules, {m: module_summary(p) for m, p in modules.items()}, imports)

# ---------------------------------------------------------------- the rules

def _nb_of(g:Graph, mod:str) -> str:
    return next((l.notebook for l in g.layers if l.module == mod), 'no notebook')

def layout_violations(g:Graph) -> list[Violation]:
    "Each module is exported by exactly one notebook, and each exporting notebook's module exists."
    res, seen = [], {}
    for l in g.layers:
        if not l.module: continue
        if l.module in seen:
            res.append(Violation(f'nbs/{l.notebook}', 1, l.module, f'also exported by nbs/{seen[l.module]}: one module per notebook'))
        seen.setdefault(l.module, l.notebook)
        if l.module not in g.modules:
            res.append(Violation(f'nbs/{l.notebook}', 1, l.module, f'exports {g.pkg}/{l.module}.py, which does not exist (run nbdev_export)'))
    for m, p in g.modules.items():
        if m not in seen:
            res.append(Violation(_rel(p, g.root), 1, m, 'no notebook exports this module (`#| default_exp` in nbs/)'))
    return res

def upward_imports(g:Graph) -> list[Violation]:
    "Every import of a module whose notebook comes later than the importer's (or that has no notebook)."
    res = []
    for i in g.imports:
        a, b = g.order.get(i.src), g.order.get(i.dst)
        if a is None or b is None or b > a:
            res.append(Violation(_rel(i.file, g.root), i.line, f'{i.src} imports {i.dst}' + (f' ({", ".join(i.names)})' if i.names else ''),
                                 f'{_nb_of(g, i.dst)} comes after {_nb_of(g, i.src)}: a module imports only from earlier notebooks'
                                 + (' (inside a function, still a dependency)' if i.lazy else '')))
    return res

def import_cycles(g:Graph) -> list[list[Import]]:
    "Every cycle of imports, one per strongly connected group of modules: the imports that close it, in order."
    adj = {}
    for (a, b), ims in g.edges().items(): adj.setdefault(a, {})[b] = ims[0]
    index, low, stack, on, comps, cnt = {}, {}, [], set(), [], [0]
    def strong(v):                     # Tarjan
        index[v] = low[v] = cnt[0]; cnt[0] += 1; stack.append(v); on.add(v)
        for w in adj.get(v, {}):
            if w not in index: strong(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: comps.append(set(comp))
    for v in sorted(adj): 
        if v not in index: strong(v)
    cycles = []
    for comp in comps:
        start = min(comp, key=lambda m: (g.order.get(m, 1e9), m))
        path, seen = [start], {start}
        def walk(v):                    # a path inside the group back to `start`
            for w in sorted(adj.get(v, {}), key=lambda m: (g.order.get(m, 1e9), m)):
                if w not in comp: continue
                if w == start: return True
                if w not in seen:
                    seen.add(w); path.append(w)
                    if walk(w): return True
                    path.pop()
            return False
        walk(start)
        cycles.append([adj[a][b] for a, b in zip(path, path[1:] + [start])])
    return cycles

def cycle_violations(g:Graph) -> list[Violation]:
    res = []
    for c in import_cycles(g):
        loop = ' -> '.join([c[0].src] + [i.dst for i in c])
        for i in c:
            res.append(Violation(_rel(i.file, g.root), i.line, f'{i.src} imports {i.dst}', f'part of the import cycle {loop}'))
    return res

def topological_order(g:Graph) -> list[str]|None:
    "The modules in an order every import respects (notebook order breaks ties); None when imports form a cycle."
    deps = {m: set() for m in g.modules}
    for i in g.imports: deps[i.src].add(i.dst)
    res, done = [], set()
    key = lambda m: (g.order.get(m, 1e9), m)
    while len(res) < len(deps):
        ready = sorted((m for m in deps if m not in done and deps[m] <= done), key=key)
        if not ready: return None
        res.append(ready[0]); done.add(ready[0])
    return res

def order_violations(g:Graph) -> list[Violation]:
    "Is the notebook order (sorted file names) a topological order of the imports? One violation per pair out of order."
    res, topo = [], topological_order(g)
    hint = (f'an order the imports allow: {", ".join(topo)}' if topo else 'no order works: the imports form a cycle')
    for (a, b), ims in sorted(g.edges().items()):
        if a in g.order and b in g.order and g.order[b] > g.order[a]:
            i = ims[0]
            res.append(Violation(_rel(i.file, g.root), i.line, f'{a} imports {b}',
                                 f'notebook order is not a topological order: {_nb_of(g, a)} needs {_nb_of(g, b)}, '
                                 f'which comes later; {hint}'))
    return res

# ---------------------------------------------------------------- private names

def _self_names(fn) -> set:
    names = {'self', 'cls'}
    args = fn.args.posonlyargs + fn.args.args
    if args: names.add(args[0].arg)
    return names

def _attr_stores(fn, selves:set):
    "Private attributes `fn` sets on its first argument: `self._x = ...`, `setattr(self, '_x', ...)`."
    for n in ast.walk(fn):
        if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store) and isinstance(n.value, ast.Name) \
                and n.value.id in selves and _private(n.attr):
            yield n.attr
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ('setattr', 'getattr', 'hasattr') \
                and len(n.args) >= 2 and isinstance(n.args[0], ast.Name) and n.args[0].id in selves \
                and isinstance(n.args[1], ast.Constant) and isinstance(n.args[1].value, str) and _private(n.args[1].value):
            yield n.args[1].value

def _annotation_classes(a) -> list:
    "The class names in a `self` annotation: `C`, `A|B`, `(A, B)`, `'C'`, `mod.C`."
    if a is None: return []
    if isinstance(a, ast.Constant) and isinstance(a.value, str):
        try: a = ast.parse(a.value, mode='eval').body
        except SyntaxError: return [a.value]
    if isinstance(a, ast.BinOp) and isinstance(a.op, ast.BitOr): return _annotation_classes(a.left) + _annotation_classes(a.right)
    if isinstance(a, ast.Tuple): return [c for e in a.elts for c in _annotation_classes(e)]
    d = _dotted(a)
    return [d] if d else []

def _patch_names(tree) -> tuple[dict, set]:
    """How a file names fastcore's `patch` and `patch_to`: `({local name: 'patch' or 'patch_to'}, {fastcore module
    aliases})`, from `from fastcore.basics import patch`, `from fastcore.all import *`, `import fastcore.basics as fb`."""
    names, mods = {}, {'fastcore'}
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and (n.module or '').split('.')[0] == 'fastcore':
            for a in n.names:
                if a.name == '*': names.update(patch='patch', patch_to='patch_to')
                elif a.name in ('patch', 'patch_to'): names[a.asname or a.name] = a.name
        elif isinstance(n, ast.Import):
            for a in n.names:
                if a.name.split('.')[0] == 'fastcore': mods.add(a.asname or a.name)
    return names, mods

def _patches(tree):
    "`(function, 'patch' or 'patch_to', class names, line)` for every function decorated by fastcore's `@patch`/`@patch_to`."
    names, mods = _patch_names(tree)
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)): continue
        for d in fn.decorator_list:
            name = _dotted(d.func if isinstance(d, ast.Call) else d) or ''
            head, _, last = name.rpartition('.')
            kind = names.get(name) or (last if last in ('patch', 'patch_to') and any(head == m or head.startswith(m + '.') for m in mods) else None)
            if kind is None: continue
            if kind == 'patch_to': classes = _annotation_classes(d.args[0]) if isinstance(d, ast.Call) and d.args else []
            else:
                args = fn.args.posonlyargs + fn.args.args
                classes = _annotation_classes(args[0].annotation) if args else []
            yield fn, kind, classes, d.lineno

@lru_cache(maxsize=None)
def class_private_attrs(tree) -> dict[str, set]:
    """The private attributes a file's classes define, `{class: {name, ...}}`: methods and class attributes named `_x`,
    `self._x = ...` in their methods, and `_x` methods or `self._x` stores of functions `@patch`ed onto them."""
    res = {}
    for c in ast.walk(tree):
        if not isinstance(c, ast.ClassDef): continue
        names = res.setdefault(c.name, set())
        for s in c.body:
            if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and _private(s.name): names.add(s.name)
            targets = s.targets if isinstance(s, ast.Assign) else [s.target] if isinstance(s, (ast.AnnAssign, ast.AugAssign)) else []
            for t in targets:
                for e in (t.elts if isinstance(t, ast.Tuple) else [t]):
                    if isinstance(e, ast.Name) and _private(e.id): names.add(e.id)
            if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)): names.update(_attr_stores(s, _self_names(s)))
    for fn, kind, classes, _ in _patches(tree):
        for cname in classes:
            names = res.setdefault(cname.split('.')[-1], set())
            if _private(fn.name): names.add(fn.name)
            names.update(_attr_stores(fn, _self_names(fn)))
    return res

def package_private_attrs(g:Graph) -> dict[str, list[str]]:
    "`{_attr: ['transferrec.module.Class', ...]}`: every private attribute a class of the package defines."
    res = {}
    for mod, path in g.modules.items():
        for cname, names in class_private_attrs(_parse(path)).items():
            for n in names: res.setdefault(n, []).append(f'{g.pkg}.{mod}.{cname}')
    return res

def private_uses(g:Graph, files) -> list[Violation]:
    """Uses of the package's private names outside the module that defines them, in `files` (the package's modules,
    tests, benchmarks): `from transferrec.x import _name`, `mod._name` on a module of the package (also through
    `getattr`/`setattr`/`monkeypatch.setattr` or a `'transferrec.x._name'` string), and `obj._attr` where `obj` is not
    `self`, `cls` or `super()` and `_attr` is a private attribute of a class of the package that no class of the
    using file defines."""
    attrs = package_private_attrs(g)
    re_path = re.compile(rf'{re.escape(g.pkg)}\.(\w+)\.(\w+)')
    res = []
    for f in files:
        f = Path(f)
        self_mod = f.stem if f.parent.resolve() == (g.root/g.pkg).resolve() else None
        tree = _parse(f)
        refs = _Refs(tree, g.pkg, g.modules, self_mod=self_mod)
        own = set().union(*class_private_attrs(tree).values())
        rel = _rel(f, g.root)
        def flag(line, name, why): res.append(Violation(rel, line, name, why))
        for line, mod, name in refs.private:
            flag(line, name, f'a private name of {g.pkg}.{mod}, imported by another module' if mod else
                 f'a private module of {g.pkg}, imported from outside it')
        uses = []                                        # (line, object expression, attribute name, how)
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and _private(n.attr): uses.append((n.lineno, n.value, n.attr, f'.{n.attr}'))
            elif isinstance(n, ast.Call) and len(n.args) >= 2 and isinstance(n.args[1], ast.Constant) \
                    and isinstance(n.args[1].value, str) and _private(n.args[1].value) \
                    and (_dotted(n.func) or '').split('.')[-1] in ('getattr', 'setattr', 'hasattr', 'delattr'):
                uses.append((n.lineno, n.args[0], n.args[1].value, f"{_dotted(n.func)}(..., '{n.args[1].value}')"))
            elif isinstance(n, ast.Constant) and isinstance(n.value, str) and (m := re_path.fullmatch(n.value)):
                if m.group(1) in g.modules and m.group(1) != self_mod and _private(m.group(2)):
                    flag(n.lineno, n.value, f'a private name of {g.pkg}.{m.group(1)}, named from another module')
        for line, obj, attr, how in uses:
            if isinstance(obj, ast.Name) and obj.id in refs.aliases:                       # a module of the package
                mod = refs.aliases[obj.id]
                if mod == '':
                    if attr not in IGNORED_PRIVATE: flag(line, f'{obj.id}.{attr}', f'a private name of {g.pkg}, used outside it')
                elif mod != self_mod: flag(line, f'{obj.id}.{attr}', f'a private name of {g.pkg}.{mod}, used in another module')
                continue
            if isinstance(obj, ast.Attribute) and isinstance(obj.value, ast.Name) and refs.aliases.get(obj.value.id) == '' \
                    and obj.attr in g.modules:                                           # transferrec.x._name
                if obj.attr != self_mod: flag(line, f'{obj.value.id}.{obj.attr}.{attr}', f'a private name of {g.pkg}.{obj.attr}, used in another module')
                continue
            if isinstance(obj, ast.Name) and obj.id in ('self', 'cls'): continue
            if isinstance(obj, ast.Call) and isinstance(obj.func, ast.Name) and obj.func.id == 'super': continue
            if attr in attrs and attr not in own:
                owners = [o for o in attrs[attr] if o.split('.')[1] != self_mod]
                if owners:
                    src = ast.unparse(obj) if hasattr(ast, 'unparse') else '...'
                    flag(line, f'{src}.{attr}' if how.startswith('.') else how,
                         f"a private attribute of {', '.join(sorted(owners))}, used outside its module")
    return sorted(set(res), key=lambda v: (v.file, v.line, v.name))

def usage_files(root:Path=ROOT, pkg:str=PKG) -> list[Path]:
    "Where private names must not leak to: the package's modules, `tests/` and `benchmarks/`."
    root = Path(root)
    return [*package_modules(root/pkg).values(), *sorted((root/'tests').rglob('*.py')), *sorted((root/'benchmarks').rglob('*.py'))]

def foreign_patches(g:Graph) -> list[Violation]:
    "Every fastcore `@patch`/`@patch_to` in the package that adds to a class defined in another module."
    res = []
    for mod, path in g.modules.items():
        tree = _parse(path)
        local = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
        origin = {}
        refs = _Refs(tree, g.pkg, g.modules, self_mod=mod)
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom):
                src = (('.' * n.level) + (n.module or ''))
                for a in n.names: origin[a.asname or a.name] = src.replace('.', f'{g.pkg}.', 1) if n.level else src
            elif isinstance(n, ast.Import):
                for a in n.names: origin[a.asname or a.name.split('.')[0]] = a.name
        for fn, kind, classes, line in _patches(tree):
            if not classes:
                res.append(Violation(_rel(path, g.root), line, fn.name, f'@{kind} without a class annotation on its first argument'))
            for c in classes:
                if c in local: continue
                head = c.split('.')[0]
                where = (f'{g.pkg}.{refs.aliases[head]}' if refs.aliases.get(head) else origin.get(head) or 'another module')
                where = where.rstrip('.')
                res.append(Violation(_rel(path, g.root), line, f'{c}.{fn.name}',
                                     f'@{kind} adds to {c}, defined in {where}, not in {g.pkg}.{mod}: define it in its class'))
    return res

# ---------------------------------------------------------------- the docs page

def page_name(notebook:str) -> str:
    "nbdev's page name (as `docs/build.py`): `06a_two_tower.ipynb` -> `two_tower`."
    return re.sub(r'^\d+[a-zA-Z0-9]*_', '', notebook.lower()).rsplit('.', 1)[0]

def _api_label(mod:str) -> str:
    "The label of `mod`'s section on the API page (`docs/apidoc.label`, as `docs/build.py` writes it)."
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path: sys.path.insert(0, here)
    from apidoc import label
    return label(mod, 'api-module-')

def draw(g:Graph, path:Path):
    """The dependency graph, one row per module in notebook order from the top, and an arc from each module to every
    module that imports it (so every arrow points down); an import inside a function is dashed, an upward import is red."""
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    from matplotlib.lines import Line2D
    import matplotlib.cm as cm
    mods = [l.module for l in g.layers if l.module and l.module in g.modules]
    mods += [m for m in g.modules if m not in mods]                                  # modules without a notebook: last
    y = {m: -i for i, m in enumerate(mods)}
    nb = {l.module: l.notebook.rsplit('.', 1)[0] for l in g.layers if l.module}
    edges = g.edges()
    W, H, rad = 3.6, 0.62, 0.42                                                    # box size (row pitch 1), arc bend
    xu, yu = 0.75, 0.52                                                             # inches a unit across, a row down
    down = sorted(((a, b) for a, b in edges if a in y and b in y and y[b] > y[a]), key=lambda e: abs(y[e[0]] - y[e[1]]))
    up = [(a, b) for a, b in edges if a in y and b in y and y[b] <= y[a]]
    reach = lambda es: rad * max([abs(y[a] - y[b]) for a, b in es] or [0]) / 2 * yu / xu   # how far the widest arc bulges
    x0, x1 = -W / 2 - (reach(up) + 0.35 if up else 0.15), W / 2 + reach(down) + 0.35
    y0, y1 = -len(mods) + 0.45, 0.55
    foot = 0.2 * (3 if up else 2) + 0.1                                             # inches under the graph: the legend
    h = (y1 - y0) * yu + foot
    fig = Figure(figsize=((x1 - x0) * xu, h), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0, foot / h, 1, (y1 - y0) * yu / h])
    ax.set_xlim(x0, x1); ax.set_ylim(y0, y1)
    ax.axis('off')
    colors = {m: cm.tab20(i % 20 / 20 + 0.025) for i, m in enumerate(mods)}
    # ports on the right edge of each box: arrows leave from its lower half (to importers below) and arrive in its
    # upper half (from the modules it imports), spread so they do not overlap; upward imports use the left edge
    out_p, in_p = {}, {}
    for a, b in down:
        out_p.setdefault(b, []).append(a); in_p.setdefault(a, []).append(b)
    def port(m, other, table, lo, hi):
        lst = sorted(table[m], key=lambda o: abs(y[o] - y[m]))
        k = lst.index(other)
        return y[m] + (lo + (hi - lo) * (k + 0.5) / len(lst)) * H / 2
    for a, b in down:                                                               # b is imported by a: b -> a
        ys, ye = port(b, a, out_p, -0.15, -0.95), port(a, b, in_p, 0.95, 0.15)
        lazy = all(i.lazy for i in edges[a, b])
        ax.add_patch(FancyArrowPatch((W / 2, ys), (W / 2, ye), connectionstyle=f'arc3,rad=-{rad}', arrowstyle='-|>',
                                     mutation_scale=9, lw=1.1, color=colors[b], alpha=0.9,
                                     linestyle=(0, (3, 2)) if lazy else '-', shrinkA=0, shrinkB=0, zorder=2))
    for a, b in up:
        ax.add_patch(FancyArrowPatch((-W / 2, y[b]), (-W / 2, y[a]), connectionstyle=f'arc3,rad=-{rad}', arrowstyle='-|>',
                                     mutation_scale=11, lw=2, color='#d62728', shrinkA=2, shrinkB=2, zorder=3))
    for m in mods:
        bad = any(b == m or a == m for a, b in up) or m not in g.order
        ax.add_patch(FancyBboxPatch((-W / 2, y[m] - H / 2), W, H, boxstyle='round,pad=0,rounding_size=0.12',
                                    fc='#fbfbfb', ec='#d62728' if bad else colors[m], lw=1.6, zorder=4))
        ax.text(-W / 2 + 0.13, y[m], m, ha='left', va='center', fontsize=10.5, fontweight='bold', zorder=5, color='#222')
        ax.text(W / 2 - 0.13, y[m], nb.get(m, 'no notebook'), ha='right', va='center', fontsize=7.5, color='#666', zorder=5,
                family='monospace')
    handles = [Line2D([], [], color='#555', lw=1.2, label='imported at the top of the module'),
               Line2D([], [], color='#555', lw=1.2, ls=(0, (3, 2)), label='imported inside functions only')]
    if up: handles.append(Line2D([], [], color='#d62728', lw=2, label='upward import (breaks the layers)'))
    fig.legend(handles=handles, loc='lower center', ncol=1, frameon=False, fontsize=8)
    fig.savefig(path, format='png', metadata={'Software': None})

def markdown(g:Graph, image:str=f'{PAGE}.png') -> str:
    "The Architecture page (MyST markdown) for `g`."
    label = _api_label
    mods = [l for l in g.layers if l.module]
    quiet = [l.notebook for l in g.layers if not l.module]
    ups, cyc, order, lay = upward_imports(g), cycle_violations(g), order_violations(g), layout_violations(g)
    out = ['# Architecture', '', '{.lead}',
           f'How the package is layered: each numbered notebook exports one module of `{g.pkg}`, and the notebook order '
           'is the dependency order. Everything on this page, the picture included, is read from the code itself '
           '(`docs/architecture.py` parses the imports of every module) each time the docs are built.', '',
           '## The layers', '',
           'A module imports only from modules whose notebooks come earlier, so the notebooks read top to bottom and each '
           'module can be understood from the ones above it. `tests/test_architecture.py` fails on an import that points '
           'up, on an import cycle, on a private name (`_name`) used outside the module that defines it, and on a '
           '`@patch` that adds a method to a class of another module.', '',
           '| Notebook | Module | What it is | Imports from the package |', '|---|---|---|---|']
    for l in mods:
        deps = []
        for d, ims in g.deps(l.module).items():
            names = sorted({n for i in ims for n in i.names})
            lazy = all(i.lazy for i in ims)
            deps.append(f'`{d}`' + (f" ({', '.join(names)})" if names else '') + (' *in functions*' if lazy else ''))
        summary = g.summaries.get(l.module, '').replace('|', '\\|')
        mod = (f"{{ref}}`{g.pkg}.{l.module} <{label(f'{g.pkg}.{l.module}')}>`" if l.module in g.modules
               else f'`{g.pkg}.{l.module}` (not exported yet)')
        out.append(f"| [{l.notebook}]({page_name(l.notebook)}.ipynb) | {mod} | {summary} | "
                   f"{'; '.join(deps) if deps else 'nothing'} |")
    out.append('')
    if quiet: out += [f"{' and '.join(', '.join(quiet).rsplit(', ', 1))} export nothing: "
                      f"{'they are' if len(quiet) > 1 else 'it is'} only pages of these docs.", '']
    n_edges, n_lazy = len(g.edges()), sum(all(i.lazy for i in v) for v in g.edges().values())
    out += ['## The dependency graph', '',
            f'One row per module, in notebook order from the top. An arrow goes from a module to each module that '
            f'imports it, so every arrow points down the layers (an import that points up would be drawn in red, on the left); '
            f'dashed arrows are imports made only inside functions (loaded when first needed, still a dependency). {len(g.modules)} modules, {n_edges} imports between them '
            f'({n_lazy} only inside functions).', '',
            f'![The import graph of {g.pkg}: one row per module in notebook order, arrows from each module to the modules '
            f'that import it]({image})', '']
    bad = ups + cyc + order + lay + foreign_patches(g) + private_uses(g, g.modules.values())
    if bad:
        out += ['## Where the layers are broken', '',
                'The code does not follow the rules yet (`tests/test_architecture.py` fails on these):', '']
        out += [f'- `{v.file}:{v.line}` {v.name}: {v.why}' for v in bad] + ['']
    return '\n'.join(out)

def write(out:Path, root:Path=ROOT, pkg:str=PKG) -> set[str]:
    """Write the Architecture page and its picture into the Sphinx source folder `out` (only what changed, so Sphinx
    rebuilds stay incremental); the names written."""
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    g = read_graph(root, pkg)
    md, png = out/f'{PAGE}.md', out/f'{PAGE}.png'
    text = markdown(g, png.name)
    if not md.exists() or md.read_text(encoding='utf-8') != text: md.write_text(text, encoding='utf-8')
    tmp = out/f'.{PAGE}.tmp.png'
    draw(g, tmp)
    if png.exists() and png.read_bytes() == tmp.read_bytes(): tmp.unlink()
    else: tmp.replace(png)
    return {md.name, png.name}

if __name__ == '__main__':
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT/'_proc'
    print('wrote', ', '.join(str(dest/n) for n in sorted(write(dest))))
