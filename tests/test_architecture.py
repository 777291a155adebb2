"""The house keeps its shape (docs/architecture.md): read from the source,
every import of the package (lazy ones inside functions too) flows one way
through the rooms, with no circle; kernels/ imports nothing else of mmvit3;
models/ imports neither mmdet / mmseg nor a run-time room; no module takes a
private name of another; the tools are thin."""
import ast
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'mmvit3'

#: The rooms, from the ground floor up: a room imports only itself and the
#: rooms before it (docs/architecture.md draws the same order).
ROOMS = ['version', 'errors', 'kernels', 'config', 'safe_load', 'tuning', 'models',
         'datasets', 'engine', 'registration', 'analysis', 'deploy', 'apis', 'benchmark',
         'cli', '__init__']
#: What models/ must never import: the libraries it is registered into, and
#: the rooms that run things.
MODELS_FORBIDDEN = ('mmdet', 'mmseg', 'mmvit3.datasets', 'mmvit3.engine', 'mmvit3.cli',
                    'mmvit3.apis', 'mmvit3.registration', 'mmvit3.benchmark',
                    'mmvit3.analysis', 'mmvit3.deploy')


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def modules() -> Dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob('*.py'))}


def room(module: str) -> str:
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else '__init__'


def imports(module: str, path: Path, known: Dict[str, Path]) -> List[Tuple[str, int, ast.AST]]:
    """``(imported module, line, node)`` for every import in ``path``:
    ``from pkg import name`` counts as ``pkg.name`` where that is a module."""
    package = module if path.name == '__init__.py' else module.rpartition('.')[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')[:len(package.split('.')) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                sub = f'{target}.{alias.name}'
                found.append((sub if sub in known else target, node.lineno, node))
    return found


def graph() -> Tuple[Dict[str, Set[str]], List[str], Dict[str, Path]]:
    """The package's import graph (edges inside mmvit3), and every import
    as ``'module:line -> target'``."""
    known = modules()
    edges: Dict[str, Set[str]] = {m: set() for m in known}
    listed = []
    for module, path in known.items():
        for target, line, _ in imports(module, path, known):
            listed.append(f'{module}:{line} -> {target}')
            if target in known and target != module:
                edges[module].add(target)
    return edges, listed, known


def test_imports_form_no_circle():
    edges, _, _ = graph()
    state: Dict[str, int] = {}
    circles = []

    def visit(node: str, trail: List[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circles.append(' -> '.join(trail[trail.index(nxt):] + [node, nxt])
                               if nxt in trail else f'{node} -> {nxt}')
            elif nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert not circles, 'import circles:\n' + '\n'.join(circles)


def test_rooms_import_only_the_rooms_below():
    edges, _, known = graph()
    assert {room(m) for m in known} <= set(ROOMS), 'a room missing from ROOMS'
    upward = [f'{a} ({room(a)}) imports {b} ({room(b)})' for a in sorted(edges)
              for b in sorted(edges[a]) if ROOMS.index(room(b)) > ROOMS.index(room(a))]
    assert not upward, 'imports that run back up:\n' + '\n'.join(upward)


def test_kernels_import_only_torch_and_themselves():
    _, listed, _ = graph()
    bad = [line for line in listed if line.startswith('mmvit3.kernels')
           and not line.split(' -> ')[1].startswith(('mmvit3.kernels', 'torch'))
           and line.split(' -> ')[1].split('.')[0] not in sys.stdlib_module_names]
    assert not bad, 'kernels/ imports beyond torch:\n' + '\n'.join(bad)


def test_models_import_no_library_and_no_run_time_room():
    _, listed, _ = graph()
    bad = [line for line in listed if line.startswith('mmvit3.models')
           and line.split(' -> ')[1].startswith(MODELS_FORBIDDEN)]
    assert not bad, 'models/ imports what it must not:\n' + '\n'.join(bad)


def test_no_private_name_is_taken_across_modules():
    known = modules()
    taken = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        bound = {}  # local name -> mmvit3 module it is bound to
        for target, line, node in imports(module, path, known):
            if not target.startswith('mmvit3') or target == module:
                continue
            for alias in node.names:
                name = alias.name.split('.')[-1]
                if isinstance(node, ast.ImportFrom) and name.startswith('_') \
                        and not name.startswith('__'):
                    taken.append(f'{module}:{line} imports {target}.{name}')
                if target in known and (target.endswith(f'.{name}') or target == name):
                    bound[alias.asname or name] = target
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                    node.value.id in bound and node.attr.startswith('_') and \
                    not node.attr.startswith('__'):
                taken.append(f'{module}:{node.lineno} uses {bound[node.value.id]}.{node.attr}')
    assert not taken, 'private names taken across modules:\n' + '\n'.join(taken)


@pytest.mark.parametrize('tool', sorted(p.name for p in (ROOT / 'tools').glob('*.py')))
def test_tools_are_fronts_of_the_package(tool):
    """A tool parses its arguments and makes one call into mmvit3: nothing
    else of it is logic that tests could not reach through the package."""
    source = (ROOT / 'tools' / tool).read_text()
    tree = ast.parse(source)
    defs = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert len(defs) <= 2, f'tools/{tool} defines {defs}: move the logic into mmvit3/'
    assert len(source.splitlines()) <= 300
    assert 'mmvit3' in source


def test_exit_status_table_lists_every_error_with_its_status():
    """docs/reliability.md's table names each class of mmvit3/errors.py with
    the exit status the tools give it, and nothing else."""
    from mmvit3 import errors
    text = (ROOT / 'docs' / 'reliability.md').read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip('|').split('|')]
        if len(cells) == 3 and cells[0].startswith('`') and cells[1].isdigit():
            rows[cells[0].strip('`')] = int(cells[1])
    assert rows == {cls.__name__: cls.exit_status for cls in errors.error_classes()}


def test_every_error_has_its_exit_status_through_a_tool(capsys):
    """The tools' wrapper turns each mmvit3 error into one line on stderr
    and the class's exit status; another exception stays a bug (it
    propagates)."""
    from mmvit3 import errors
    from mmvit3.cli.common import tool_main

    for cls in errors.error_classes():
        args = ('message', 't', 's', 'r', []) if cls is errors.UnknownTypeError else \
            ('message', []) if cls is errors.DatasetNotFoundError else ('message', )

        @tool_main('tools/x.py')
        def main():
            raise cls(*args)

        assert main() == cls.exit_status
        assert capsys.readouterr().err == 'tools/x.py: message\n'
        assert errors.exit_status(cls(*args)) == cls.exit_status
    assert errors.exit_status(ValueError('x')) == errors.EXIT_FAILURE

    @tool_main('tools/x.py')
    def bug():
        raise ValueError('a bug')

    with pytest.raises(ValueError, match='a bug'):
        bug()
