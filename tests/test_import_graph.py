"""The package's modules form no import circle, counting imports inside functions too."""
import ast
import os.path as osp
import pkgutil

import tnt_mm

ROOT = osp.dirname(tnt_mm.__file__)


def module_files():
    """{module name: file} for every module of tnt_mm (packages as their __init__)."""
    files = {'tnt_mm': osp.join(ROOT, '__init__.py')}
    for info in pkgutil.walk_packages([ROOT], prefix='tnt_mm.'):
        path = osp.join(ROOT, *info.name.split('.')[1:])
        files[info.name] = osp.join(path, '__init__.py') if info.ispkg else path + '.py'
    return files


def imported_modules(name: str, path: str, modules) -> set:
    """The tnt_mm modules that ``name`` names in an import statement anywhere in its file. A
    ``from package import x`` counts as an import of the submodule x where one exists, else of
    the package. The parents that Python imports on the way are not counted (every module
    would then import its package, and every package its modules)."""
    package = name if path.endswith('__init__.py') else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = package.split('.')
                anchor = '.'.join(parts[:len(parts) - node.level + 1])
                base = f'{anchor}.{base}' if base else anchor
            for alias in node.names:
                found.add(f'{base}.{alias.name}' if f'{base}.{alias.name}' in modules else base)
    return {m for m in found if m in modules and m != name}


def find_cycle(graph):
    """One import circle as a list of modules, or None."""
    state = {}

    def visit(node, stack):
        state[node] = 'open'
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 'open':
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, stack)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 'done'
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def test_no_import_circles():
    modules = module_files()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert 'tnt_mm.models.backbones.tnt_arch' in graph['tnt_mm.models.backbones.tnt_convert']
    cycle = find_cycle(graph)
    assert cycle is None, 'import circle: ' + ' -> '.join(cycle)


def test_the_cycle_finder_finds_circles():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}) is None


def test_layers_and_ops_sit_below_the_models():
    """The generic layers and the ops import nothing of the backbones or heads."""
    modules = module_files()
    for name, path in modules.items():
        if name.startswith(('tnt_mm.models.layers', 'tnt_mm.ops')):
            imports = imported_modules(name, path, modules)
            upward = {m for m in imports
                      if m.startswith(('tnt_mm.models.backbones', 'tnt_mm.models.decode_heads',
                                       'tnt_mm.models.necks'))}
            assert not upward, f'{name} imports {upward}'
