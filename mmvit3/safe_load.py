# Copyright (c) mmvit3 authors. All rights reserved.
"""Loading checkpoint files without running code from them.

``torch.load(weights_only=True)`` unpickles tensors, containers and a short
list of plain types only: a file that pickles any other Python object (a
config object, say, or something crafted to run a command) is refused before
any of its code runs. Opting in for a file you trust (``trusted=True``) is
explicit, per call, and logged.
"""
import logging
import os
import pickle
import re
from typing import Any, List, Optional

import torch
from mmengine.fileio import get_local_path
from mmengine.logging import print_log


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds pickled Python objects that safe loading refuses."""


def unsafe_globals(filename: str, error: Optional[BaseException] = None) -> List[str]:
    """The classes and functions a checkpoint file would import when
    unpickled (read without unpickling)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(filename))
    except Exception:  # older torch or an unreadable archive: parse the error
        return re.findall(r'GLOBAL ([\w.]+)', str(error or ''))


def load_checkpoint_file(filename: str,
                         map_location: Any = 'cpu',
                         trusted: bool = False,
                         opt_in_hint: Optional[str] = None) -> Any:
    """Load a checkpoint file (a path or any URI mmengine's file backends
    read), refusing pickled Python objects unless ``trusted``.

    Args:
        filename (str): Path or URI of the file.
        map_location: Passed to ``torch.load``. Defaults to ``'cpu'``.
        trusted (bool): Unpickle everything (can run code from the file):
            only for files you trust. Defaults to False.
        opt_in_hint (str, optional): How the caller's user opts in, for the
            error message. Defaults to a generic sentence.

    Raises:
        FileNotFoundError: No such file.
        UnsafeCheckpointError: The file pickles objects and ``trusted`` is off.
    """
    if '://' not in filename and not os.path.isfile(filename):
        raise FileNotFoundError(f'Checkpoint file not found: {filename!r}')
    with get_local_path(filename) as local_path:
        if trusted:
            print_log(
                f'Loading {filename} with full unpickling (trusted): only do '
                f'this for files you trust.', logger='current',
                level=logging.WARNING)
            try:
                return torch.load(local_path, map_location=map_location,
                                  weights_only=False)
            except ModuleNotFoundError as err:
                raise ModuleNotFoundError(
                    f'{filename} pickles objects from the module {err.name!r}, '
                    f'which is not installed: install it (for the authors\' '
                    f'ImageNet checkpoints: pip install yacs) to unpickle this '
                    f'trusted file.') from err
        try:
            return torch.load(local_path, map_location=map_location,
                              weights_only=True)
        except pickle.UnpicklingError as err:
            found = unsafe_globals(local_path, err)
            hint = opt_in_hint or ('If you trust this file, load it with '
                                   'trusted=True.')
            raise UnsafeCheckpointError(
                f'Refused to load {filename}: it holds pickled Python objects '
                f'({", ".join(found) or "unknown types"}), and unpickling '
                f'them could run code from the file. Nothing from it was run. '
                f'{hint}') from None
