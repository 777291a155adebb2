# Copyright (c) mmvit3 authors. All rights reserved.
"""Loading checkpoints without running code from them, from any source.

* :mod:`.policy`: what the checkpoints loaded now may do (trusted,
  non-finite weights allowed, how the user opts in), set for a ``with`` block;
* :mod:`.authors`: the yacs config the authors' ImageNet files pickle,
  allowed by its name without yacs;
* :mod:`.files`: one file loaded safely (refused pickled objects, a stored
  config that is code, damaged bytes named), NaN / Inf weights refused;
* :mod:`.sources`: every scheme of mmengine's ``CheckpointLoader`` (local
  files, URLs downloaded with timeouts, the names mmengine resolves to URLs)
  through :func:`load_checkpoint_file`.
"""
from .authors import YACS_CFGNODE, YacsCfgNode, authors_safe_globals
from .files import (check_finite_weights, check_stored_config, file_problem,
                    load_checkpoint_file, mmengine_safe_globals, nonfinite_tensors,
                    safe_globals, stored_config_problem, unsafe_globals)
from ..config.keys import config_flag, strict_bool
from .policy import (CONFIG_HINT, DEFAULT_HINT, NONFINITE_OPT_OUT, TOOLS_HINT, LoadPolicy,
                     allow_nonfinite_weights, load_policy, set_opt_in_hint, trust_checkpoints)
from .sources import (SAFE_SCHEMES, TIMEOUT_ENV_VAR, cached_path, download_checkpoint,
                      download_timeout, load_checkpoint_source, register_checkpoint_loader,
                      safe_scheme_loader)

__all__ = [
    'YACS_CFGNODE', 'YacsCfgNode', 'authors_safe_globals', 'safe_globals',
    'check_finite_weights', 'check_stored_config', 'file_problem', 'load_checkpoint_file',
    'mmengine_safe_globals', 'nonfinite_tensors', 'stored_config_problem', 'unsafe_globals',
    'CONFIG_HINT', 'DEFAULT_HINT', 'NONFINITE_OPT_OUT', 'TOOLS_HINT', 'LoadPolicy',
    'allow_nonfinite_weights', 'config_flag', 'load_policy', 'set_opt_in_hint', 'strict_bool',
    'trust_checkpoints', 'SAFE_SCHEMES', 'TIMEOUT_ENV_VAR', 'cached_path',
    'download_checkpoint', 'download_timeout', 'load_checkpoint_source',
    'register_checkpoint_loader', 'safe_scheme_loader'
]
