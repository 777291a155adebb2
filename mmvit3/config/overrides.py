# Copyright (c) mmvit3 authors. All rights reserved.
"""``--cfg-options KEY=VALUE`` overrides checked as they are read and as they
are merged: a bad key, unbalanced brackets, a dict value, a word where the
config holds a number, or a value that cannot go where the key points are
named with the option and what would be accepted."""
from typing import Any, Optional

from mmengine.config import Config, DictAction

from ..errors import ConfigError

_MISSING = object()


def override_problem(item: str) -> Optional[str]:
    """What is wrong with one ``KEY=VALUE`` item as typed, or None."""
    key, sep, value = item.partition('=')
    if not sep or not key:
        return ('each override is KEY=VALUE (e.g. train_cfg.max_iters=100 '
                'optim_wrapper.optimizer.lr=0.0001); a value with spaces needs '
                'quotes, KEY="[a, b]"')
    if any(not part for part in key.split('.')):
        return (f'the key {key!r} has an empty part: write the dotted path '
                f'without empty segments, e.g. model.backbone.drop_path_rate')
    if value.strip().startswith('{'):
        return ('a dict value is not taken by --cfg-options: set its keys one '
                f'by one, e.g. {key}.KEY=VALUE')
    if value.count('[') != value.count(']') or value.count('(') != value.count(')'):
        return 'unbalanced brackets: a list is KEY="[a,b]", a tuple KEY="(a,b)"'
    try:
        DictAction._parse_iterable(value)
    except Exception as err:  # mmengine asserts on what it cannot parse
        return f'the value cannot be read ({err})'
    return None


def _lookup(cfg: Any, key: str) -> Any:
    """The config's current value at a dotted key (list indices allowed),
    or ``_MISSING``."""
    node = cfg
    for part in key.split('.'):
        if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif hasattr(node, 'get') and part in node:
            node = node.get(part)
        else:
            return _MISSING
    return node


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def merge_overrides(cfg: Config, options: dict) -> None:
    """Merge ``{dotted.key: value}`` overrides into ``cfg``, one by one.

    Raises:
        ConfigError: A value is a word where the config holds a number, or
            cannot be merged where its key points (e.g. a key inside a
            string value); the message names the option.
    """
    for key, value in options.items():
        shown = f'--cfg-options {key}={value!r}'
        parts = key.split('.')
        for i in range(1, len(parts)):
            above = _lookup(cfg, '.'.join(parts[:i]))
            if above is not _MISSING and not isinstance(above, (dict, list, tuple)):
                raise ConfigError(
                    f'{shown}: {".".join(parts[:i])} is {above!r} in the config, not a '
                    f'dict: no key goes under it (set it whole, or in a config file '
                    f'that inherits this one)')
        current = _lookup(cfg, key)
        if _is_number(current) and not _is_number(value) and value is not None:
            raise ConfigError(f'{shown}: {key} is a number in the config '
                              f'({current!r}); give a number')
        try:
            cfg.merge_from_dict({key: value})
        except (TypeError, KeyError, IndexError, AttributeError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ConfigError(f'{shown} cannot be merged into the config: {first}') from None
