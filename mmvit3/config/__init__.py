# Copyright (c) mmvit3 authors. All rights reserved.
"""Config helpers: reading a config (:func:`load_config`), the library it
belongs to (:func:`config_scope`), walking its typed dicts
(:func:`~.tree.typed_dicts`), mmvit3's own top-level keys (:mod:`.keys`),
``--cfg-options`` overrides checked (:mod:`.overrides`) and a clear message
for a misspelt ``type`` (:mod:`.types`)."""
import ast
import copy
from typing import Optional, Union

from mmengine.config import Config

from ..errors import ConfigError
from .keys import PROJECT_KEYS, check_project_keys, close_project_key, config_flag, strict_bool
from .overrides import merge_overrides, override_problem
from .tree import typed_dicts
from .types import CUSTOM_IMPORTS, explain_unknown_types, unknown_type_message

#: The libraries mmvit3 serves, by their registry scopes.
SCOPES = ('mmdet', 'mmseg')


def _syntax_error(config: str, err: SyntaxError) -> ConfigError:
    """The file and line of a config's syntax error (or of the config it
    inherits that has one)."""
    try:
        with open(config, encoding='utf-8') as f:
            ast.parse(f.read(), filename=config)
    except SyntaxError as own:
        return ConfigError(f'{config}, line {own.lineno}: {own.msg}: '
                           f'{(own.text or "").strip()}')
    return ConfigError(f'{config}: a config it inherits (_base_) has a syntax error: '
                       f'{err.msg} (line {err.lineno}: {(err.text or "").strip()})')


def load_config(config: Union[str, Config],
                cfg_options: Optional[dict] = None) -> Config:
    """Read a config file (or copy a :class:`Config`) and merge overrides.

    Args:
        config (str | Config): Config file or object.
        cfg_options (dict, optional): ``{dotted.key: value}`` overrides, as
            ``--cfg-options`` gives them. Defaults to None.

    Raises:
        ConfigError: A syntax error (named with its file and line), or an
            override that does not fit (:func:`merge_overrides`).
    """
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:
        try:
            cfg = Config.fromfile(config)
        except SyntaxError as err:
            raise _syntax_error(config, err) from None
    if cfg_options:
        merge_overrides(cfg, cfg_options)
    return cfg


def config_scope(cfg: Config, tool: Optional[str] = None) -> str:
    """``'mmdet'`` or ``'mmseg'``: the library a config belongs to, from its
    ``default_scope``.

    Args:
        cfg (Config): The config.
        tool (str, optional): The tool reading it, for the message (e.g.
            ``'tools/train.py'``). Defaults to None.

    Raises:
        ConfigError: ``default_scope`` is missing or another library's.
    """
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        where = f' in {cfg.filename}' if cfg.filename else ''
        raise ConfigError(
            f'{tool or "mmvit3"} serves MMDetection and MMSegmentation '
            f'configs: default_scope must be one of {SCOPES}, got '
            f'{scope!r}{where}. Configs inheriting mmdet::/mmseg:: bases (or '
            f'their _base_ default_runtime.py) set it.')
    return scope


__all__ = [
    'SCOPES', 'load_config', 'config_scope', 'typed_dicts', 'PROJECT_KEYS',
    'check_project_keys', 'close_project_key', 'config_flag', 'strict_bool', 'CUSTOM_IMPORTS', 'explain_unknown_types',
    'unknown_type_message', 'merge_overrides', 'override_problem'
]
