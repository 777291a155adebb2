# Copyright (c) mmvit3 authors. All rights reserved.
"""Every exception mmvit3 raises on purpose, with the exit status its tools
give it.

Each class keeps the builtin exception it specialises (a missing dataset is
still a ``FileNotFoundError``), so ``except`` clauses written for those keep
working. The tools turn an :class:`MMViT3Error` into one message on stderr and
:attr:`~MMViT3Error.exit_status` (:func:`exit_status`); docs/reliability.md
has the table.
"""
import pickle
from typing import List, Optional, Sequence, Tuple

#: Exit statuses of the tools.
EXIT_OK = 0
#: A bug, or a failure nobody can fix by changing the input (out of memory).
EXIT_FAILURE = 1
#: Something the user can fix: a config, a path, data, a checkpoint.
EXIT_USER = 2
#: Training diverged (the loss stopped being finite).
EXIT_DIVERGED = 3


class MMViT3Error(Exception):
    """Base of mmvit3's errors; ``exit_status`` is what the tools exit with.
    ``str()`` is the message alone (also for ``KeyError`` subclasses)."""
    exit_status = EXIT_USER

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


# --------------------------------------------------------------------------
# checkpoints


class CheckpointNotFoundError(MMViT3Error, FileNotFoundError):
    """No checkpoint file at the path given."""


class CheckpointDownloadError(MMViT3Error, OSError):
    """A checkpoint URL could not be downloaded (the message names it)."""


class CorruptCheckpointError(MMViT3Error, RuntimeError):
    """A checkpoint file is empty, cut short, damaged or no checkpoint at
    all. ``path`` is the file (``source`` the URL it came from, if any)."""

    def __init__(self, message: str, path: str = '', source: str = ''):
        super().__init__(message)
        self.path = path
        self.source = source or path


class UnsafeCheckpointError(MMViT3Error, pickle.UnpicklingError):
    """A checkpoint holds pickled Python objects that safe loading refuses."""


class NonFiniteCheckpointError(MMViT3Error, ValueError):
    """A checkpoint's weights hold NaN or Inf values."""


class CheckpointMismatchError(MMViT3Error, ValueError):
    """A checkpoint does not fit the model it is loaded into (another arch,
    task, head layout or number of classes), or holds nothing for it."""


class CheckpointEntryError(CheckpointMismatchError, KeyError):
    """A checkpoint has no entry of the name asked for (``key=...``)."""


class CheckpointModuleError(MMViT3Error, ModuleNotFoundError):
    """A trusted checkpoint pickles objects of a module that is not
    installed."""


# --------------------------------------------------------------------------
# configs


class ConfigError(MMViT3Error, ValueError):
    """A config (or an override of it) that cannot be used: another
    library's, a setting out of range, a launcher this machine cannot run."""


class UnknownTypeError(MMViT3Error, KeyError):
    """A config names a ``type`` that is not registered where it is built."""

    def __init__(self, message: str, type_name: str, scope: str,
                 registry: str, suggestions: Sequence[str]):
        super().__init__(message)
        self.type_name = type_name
        self.scope = scope
        self.registry = registry
        self.suggestions = list(suggestions)


class ProjectKeyError(MMViT3Error, ValueError):
    """A config key is a near miss of one of mmvit3's own keys."""


class AmpUnavailableError(MMViT3Error, RuntimeError):
    """Mixed-precision training was asked for where mmengine cannot run it."""


# --------------------------------------------------------------------------
# data


class DatasetNotFoundError(MMViT3Error, FileNotFoundError):
    """Data that a config points to is not on disk; ``missing`` lists
    ``(config key, path)``."""

    def __init__(self, message: str, missing: Sequence[Tuple[str, str]]):
        super().__init__(message)
        self.missing: List[Tuple[str, str]] = list(missing)


class BadAnnotationError(MMViT3Error, ValueError):
    """An annotation file (or label map) of a dataset cannot be used; the
    message names the file and what is wrong."""


class BadImageError(MMViT3Error, OSError):
    """An image file of a dataset cannot be read or decoded, or is cut
    short. ``path`` is the file (None after a DataLoader worker re-raised
    it: the path is in the message)."""

    def __init__(self, message: str, path: Optional[str] = None):
        super().__init__(message)
        self.path = path


# --------------------------------------------------------------------------
# runs and outputs


class WorkDirBusyError(MMViT3Error, RuntimeError):
    """Another live training run holds the work dir."""


class EarlierRunError(MMViT3Error, FileExistsError):
    """A new training run would replace the checkpoints of an earlier run
    in its work dir."""


class OutputError(MMViT3Error, ValueError):
    """An output path that cannot be written (not a folder, not writable)."""


class OutputOverwritesInputError(OutputError):
    """An output file of the run would replace one of its inputs."""


class NonFiniteLossError(MMViT3Error, FloatingPointError):
    """The training loss was NaN / Inf for too many iterations."""
    exit_status = EXIT_DIVERGED


def exit_status(error: BaseException) -> int:
    """The exit status the tools give ``error``: its ``exit_status`` for
    mmvit3's errors, :data:`EXIT_FAILURE` for anything else."""
    return getattr(error, 'exit_status', EXIT_FAILURE) \
        if isinstance(error, MMViT3Error) else EXIT_FAILURE


def error_classes() -> List[type]:
    """Every exception class of this module, in the order defined."""
    return [v for v in globals().values()
            if isinstance(v, type) and issubclass(v, MMViT3Error) and v is not MMViT3Error]
