# Copyright (c) mmvit3 authors. All rights reserved.
"""The top-level config keys mmvit3 reads, and a check that catches their
misspellings (``skip_bad_image = True`` would otherwise do nothing)."""
import difflib
from typing import Any, Dict, Iterable, Optional

from ..errors import ConfigError, ProjectKeyError

#: Top-level config keys that mmvit3 reads, with what each does.
PROJECT_KEYS: Dict[str, str] = {
    'skip_bad_images': 'skip unreadable / truncated training images with a warning',
    'trust_checkpoint': 'fully unpickle the checkpoints of the run (only for trusted files)',
    'allow_nonfinite_weights': 'load checkpoints whose weights hold NaN / Inf',
    'allow_partial_checkpoint': 'load what fits of a checkpoint that does not fit the model',
    'check_annotations': 'False skips the check of the annotations before the run',
    'overwrite_checkpoints': 'let a new run replace the checkpoints of an earlier one',
}


def close_project_key(key: str,
                      known: Iterable[str] = PROJECT_KEYS) -> Optional[str]:
    """The project key that ``key`` looks like a misspelling of, or None
    (also for ``key`` itself)."""
    known = list(known)
    if key in known:
        return None
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
    return match[0] if match else None


def check_project_keys(cfg: Any, where: str = '') -> None:
    """Raise :class:`~mmvit3.errors.ProjectKeyError` if a top-level key of
    ``cfg`` is a near miss of a project key, naming the key the user
    probably meant, and :class:`~mmvit3.errors.ConfigError` if a project
    key's value is not a boolean.

    Args:
        cfg (Config | dict): The config.
        where (str): The config file, for the message. Defaults to
            ``cfg.filename`` when it has one.
    """
    where = where or getattr(cfg, 'filename', None) or ''
    for key in list(cfg.keys()):
        if key in PROJECT_KEYS:
            strict_bool(cfg[key], key)
        meant = close_project_key(key)
        if meant is not None:
            raise ProjectKeyError(
                f'Unknown config key {key!r}{f" in {where}" if where else ""}: '
                f'did you mean {meant!r} ({PROJECT_KEYS[meant]})? mmvit3 '
                f'reads only {", ".join(map(repr, PROJECT_KEYS))}; a '
                f'misspelt key would be ignored.')


def strict_bool(value: Any, name: str) -> bool:
    """``value`` if it is a bool (or 0 / 1), else
    :class:`~mmvit3.errors.ConfigError`: a switch is never read from a
    string such as ``'no'``, which Python would take for true."""
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise ConfigError(f'{name} must be True or False, got {value!r}')


def config_flag(cfg: Any, key: str) -> bool:
    """The top-level boolean ``key`` of a config (False when absent),
    checked with :func:`strict_bool`."""
    return strict_bool(cfg.get(key, False), key)
