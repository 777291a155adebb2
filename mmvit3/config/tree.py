# Copyright (c) mmvit3 authors. All rights reserved.
"""Walking a config tree: dicts (mmengine ``ConfigDict`` too) and lists."""
from typing import Any, Iterator, Tuple


def typed_dicts(node: Any, path: str = '') -> Iterator[Tuple[str, Any]]:
    """Yield ``(dotted path, dict)`` for every dict under ``node`` (``node``
    included) that has a ``'type'`` entry, a parent before its children;
    list items are ``path.i``. The caller may change a yielded dict: its
    children are listed before it is yielded."""
    if hasattr(node, 'items'):
        children = [(key, value) for key, value in node.items() if key != 'type']
        if 'type' in node:
            yield path, node
        for key, value in children:
            yield from typed_dicts(value, f'{path}.{key}' if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from typed_dicts(value, f'{path}.{i}' if path else str(i))
