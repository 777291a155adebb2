# Copyright (c) mmvit3 authors. All rights reserved.
"""A clear message for a misspelt ``type``, which mmengine reports
obscurely.

A misspelt ``type`` (``'VIT3'``, ``'ViT33'``, or ``'ViT3'`` in a config
that does not import mmvit3): mmengine's registry raises a ``KeyError`` from
deep inside ``Runner`` construction, wrapped in the messages of every
enclosing build. :func:`unknown_type_message` turns it into one message
naming the type asked for, where in the config it is, the registry and scope
that were searched, the closest registered names, and that the config's
``custom_imports`` must name ``mmvit3`` for ``ViT3`` to be registered;
:func:`explain_unknown_types` raises it as an
:class:`~mmvit3.errors.UnknownTypeError` around the code that builds a
Runner.
"""
import contextlib
import difflib
import importlib
import inspect
import re
from typing import Any, Iterator, List, Optional, Tuple

from ..errors import ConfigError, UnknownTypeError
from .tree import typed_dicts

#: What mmengine's registries raise for an unknown type: ``'<type> is not in
#: the <scope>::<name> registry'`` (parameter schedulers omit the scope).
_REGISTRY_MISS = re.compile(
    r'`?(?P<type>[\w.\-]+)`? is not in the (?:(?P<scope>[\w.]+)::)?'
    r'(?P<registry>[\w ]+?) registry')

CUSTOM_IMPORTS = "custom_imports = dict(imports=['mmvit3'], allow_failed_imports=False)"


def _find_registry(scope: str, name: str) -> Any:
    """The ``Registry`` called ``name`` that ``<scope>.registry`` exports
    (``mmengine.registry`` for the root scope), or None."""
    from mmengine.registry import Registry
    try:
        module = importlib.import_module(f'{scope or "mmengine"}.registry')
    except ImportError:
        return None
    for value in vars(module).values():
        # mmdet.registry also imports mmengine's registries: match the scope
        if isinstance(value, Registry) and value.name == name and \
                value.scope == (scope or 'mmengine'):
            return value
    return None


def registered_names(registry: Any) -> List[str]:
    """Every name ``registry.get`` resolves without a scope prefix: the
    registry's own and those of its parents, sorted."""
    names = set()
    while registry is not None:
        registry.import_from_location()  # the libraries register lazily
        names.update(registry.module_dict)
        registry = registry.parent
    return sorted(names)


def close_matches(name: str, candidates: List[str], n: int = 3) -> List[str]:
    """Up to ``n`` of ``candidates`` closest to ``name``: case-insensitive
    equals first, then ``difflib`` matches (ratio >= 0.6, ignoring case)."""
    exact = [c for c in candidates if c.lower() == name.lower()]
    folded = {c.lower(): c for c in candidates}
    fuzzy = [folded[m] for m in difflib.get_close_matches(
        name.lower(), list(folded), n=n + len(exact), cutoff=0.6)]
    return list(dict.fromkeys(exact + fuzzy))[:n]


def _typed_paths(cfg: Any, type_name: str) -> List[str]:
    """Dotted paths (``model.backbone``) of the dicts of ``cfg`` of type
    ``type_name``, searching dicts and lists; none without a config."""
    if cfg is None:
        return []
    return [path for path, node in typed_dicts(cfg) if node['type'] == type_name]


def _config_keys(cfg: Any, type_name: str) -> List[str]:
    """Dotted keys (``model.backbone.type``) of the entries of ``cfg`` whose
    value is ``type_name``, searching dicts and lists."""
    return [f'{path}.type' if path else 'type' for path in _typed_paths(cfg, type_name)]


def _imports_mmvit3(cfg: Any) -> bool:
    imports = (cfg.get('custom_imports') or {}).get('imports', [])
    if isinstance(imports, str):
        imports = [imports]
    return any(m == 'mmvit3' or str(m).startswith('mmvit3.') for m in imports)


def parse_registry_miss(error: BaseException) -> Optional[Tuple[str, str, str]]:
    """``(type, scope, registry name)`` if ``error`` is mmengine's
    unknown-type ``KeyError`` (possibly wrapped by the enclosing builds),
    else None. ``scope`` is ``''`` when mmengine does not say."""
    if not isinstance(error, KeyError) or not error.args:
        return None
    match = _REGISTRY_MISS.search(str(error.args[0]))
    if match is None:
        return None
    return match['type'], match['scope'] or '', match['registry']


def unknown_type_message(error: BaseException,
                         cfg: Any = None) -> Optional[str]:
    """A message for mmengine's unknown-type ``KeyError``, or None if
    ``error`` is something else.

    It names the type asked for and the config keys that hold it, the
    registry and scope searched (with the libraries' meaning of a scope), up
    to three close registered names, and the ``custom_imports`` line that
    registers ``ViT3`` (saying whether ``cfg`` has it).

    Args:
        error (BaseException): The exception raised while building.
        cfg (Config | dict, optional): The config being built, to locate the
            type and check its ``custom_imports``. Defaults to None.
    """
    parsed = parse_registry_miss(error)
    if parsed is None:
        return None
    type_name, scope, registry_name = parsed
    registry = _find_registry(scope, registry_name)
    names = registered_names(registry) if registry is not None else []
    suggestions = close_matches(type_name, names)

    where = f'{scope}::{registry_name}' if scope else registry_name
    lines = [f'Unknown type {type_name!r}: it is not registered in the '
             f'{where!r} registry']
    if scope:
        lines[0] += (f' ({scope}.registry, searched with its parent '
                     f'registries; scope {scope!r} comes from the config\'s '
                     f'default_scope)')
    lines[0] += '.'
    keys = _config_keys(cfg, type_name) if cfg is not None else []
    if keys:
        lines.append(f'The config sets it at: {", ".join(keys)}.')
    if suggestions:
        lines.append('Did you mean: ' + ', '.join(repr(s) for s in suggestions)
                     + '?')
    elif registry is not None:
        lines.append(f'No registered name is close to it ({len(names)} '
                     f'names in that registry).')
    if cfg is not None and not _imports_mmvit3(cfg):
        lines.append('This config does not import mmvit3, so ViT3 is not '
                     'registered when it is built by other tools or scripts: '
                     f'add\n    {CUSTOM_IMPORTS}')
    else:
        lines.append('ViT3 and the other mmvit3 types are registered by '
                     "importing mmvit3: the config's custom_imports must name "
                     f'it,\n    {CUSTOM_IMPORTS}')
    return '\n'.join(lines)


#: What a class built from a config raises for a key it does not take,
#: inside mmengine's ``class `Name` in file.py: ...`` wrappers.
_UNKNOWN_ARGUMENT = re.compile(
    r"(?:(?P<cls>\w+)\.__init__\(\) )?got an unexpected keyword argument '(?P<arg>\w+)'")
_BUILT_CLASS = re.compile(r'class `(?P<cls>[\w.]+)` in (?P<file>[^:]+):')


def _registered_class(name: str, cfg: Any) -> Any:
    """The class registered as ``name`` in the config's library (any of its
    registries), or None."""
    from mmengine.registry import Registry
    scope = (cfg.get('default_scope') if cfg is not None else None) or 'mmengine'
    try:
        module = importlib.import_module(f'{scope}.registry')
    except ImportError:
        return None
    for registry in vars(module).values():
        if isinstance(registry, Registry):
            found = registry.get(name)
            if found is not None:
                return found
    return None


def unknown_argument_message(error: BaseException, cfg: Any = None) -> Optional[str]:
    """A message for a class built from a config that got a keyword it does
    not take (``TypeError: ... got an unexpected keyword argument 'archh'``),
    or None if ``error`` is something else: the class and its file, where the
    config sets the key, the closest arguments the class takes."""
    text = str(error)
    arg = _UNKNOWN_ARGUMENT.search(text)
    if arg is None:
        return None
    built = [m for m in _BUILT_CLASS.finditer(text) if m.start() < arg.start()]
    name = arg['cls'] or (built[-1]['cls'] if built else None)
    if name is None:
        return None
    key = arg['arg']
    cls = _registered_class(name, cfg)
    where = built[-1]['file'] if built else getattr(inspect.getmodule(cls), '__file__', '')
    keys = [f'{path}.{key}' for path, node in (typed_dicts(cfg) if cfg is not None else [])
            if node['type'] == name and key in node]
    lines = [f'{name}{f" ({where})" if where else ""} takes no argument {key!r}' +
             (f', which the config sets at {", ".join(keys)}' if keys else '') + '.']
    try:
        taken = [p for p in inspect.signature(cls).parameters if p not in ('self', 'kwargs')]
    except (TypeError, ValueError):
        taken = []
    meant = close_matches(key, taken)
    if meant:
        lines.append('Did you mean: ' + ', '.join(repr(m) for m in meant) + '?')
    if taken:
        lines.append(f'{name} takes: {", ".join(taken)}.')
    return ' '.join(lines)


#: What a class built from a config raises for an argument the config does
#: not give it.
_MISSING_ARGUMENT = re.compile(
    r"(?P<cls>\w+)\.__init__\(\) missing \d+ required (?:positional |keyword-only )?"
    r"arguments?: (?P<args>[^\n]+)")


def missing_argument_message(error: BaseException, cfg: Any = None) -> Optional[str]:
    """A message for a class built from a config without an argument it
    needs (``TypeError: RandomChoiceResize.__init__() missing 1 required
    positional argument: 'scales'``), or None if ``error`` is something
    else: the class, its file, the argument and where the config builds it."""
    text = str(error)
    miss = _MISSING_ARGUMENT.search(text)
    if miss is None:
        return None
    name = miss['cls']
    cls = _registered_class(name, cfg)
    if cls is None:
        return None
    where = getattr(inspect.getmodule(cls), '__file__', '')
    paths = _typed_paths(cfg, name)
    args = miss['args'].strip()
    return (f'{name}{f" ({where})" if where else ""} needs {args}, which the config does '
            f'not give it' + (f' at {", ".join(paths)}' if paths else '') +
            f'; add {"them" if " and " in args else "it"} to that dict.')


@contextlib.contextmanager
def explain_unknown_types(cfg: Any = None) -> Iterator[None]:
    """Re-raise mmengine's unknown-type ``KeyError`` inside the block as an
    :class:`~mmvit3.errors.UnknownTypeError` with :func:`unknown_type_message`,
    and a built class's unknown argument (a misspelt config key) or missing
    one as a :class:`~mmvit3.errors.ConfigError` with
    :func:`unknown_argument_message` / :func:`missing_argument_message`;
    other exceptions pass through unchanged.

    Args:
        cfg (Config | dict, optional): The config the block builds from.
            Defaults to None.
    """
    try:
        yield
    except KeyError as error:
        message = unknown_type_message(error, cfg)
        if message is None:
            raise
        type_name, scope, registry_name = parse_registry_miss(error)
        registry = _find_registry(scope, registry_name)
        raise UnknownTypeError(
            message, type_name, scope, registry_name,
            close_matches(type_name, registered_names(registry))
            if registry is not None else []) from None
    except TypeError as error:
        message = (unknown_argument_message(error, cfg)
                   or missing_argument_message(error, cfg))
        if message is None:
            raise
        raise ConfigError(message) from None
