"""Exceptions raised by spips-bench. Each message names the file or value at fault and the fix."""

from __future__ import annotations

import difflib
import errno
from collections.abc import Sequence


class SpipsBenchError(Exception):
    """Base class: the CLI prints these as one-line errors without a traceback."""


class ImageReadError(SpipsBenchError, ValueError):
    """An image file is missing, unreadable, truncated or not an image."""


class DatasetError(SpipsBenchError, ValueError):
    """A dataset folder is missing files, has unpaired files or holds invalid judgments."""


class WeightsUnavailableError(SpipsBenchError, FileNotFoundError):
    """A weight file is absent and cannot (or may not) be downloaded."""


class WeightsIntegrityError(SpipsBenchError, ValueError):
    """A weight or checkpoint file has the wrong SHA-256, unsafe content or unexpected keys."""


class RunConfigError(SpipsBenchError, ValueError):
    """A run folder holds results of a different configuration, or is locked by another run."""


class UnknownMetricError(SpipsBenchError, KeyError):
    """No metric is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class DownloadError(SpipsBenchError, OSError):
    """A download failed, stayed incomplete after its retries, or does not match its SHA-256."""


class UnsafeArchiveError(SpipsBenchError, ValueError):
    """An archive holds members that could write outside the target folder (absolute paths, ``..``,
    links, device files) or does not have the expected layout."""


class StoreWriteError(SpipsBenchError, OSError):
    """A run folder cannot be written (disk full, no permission); what was stored before stays intact."""


class DeviceError(SpipsBenchError, ValueError):
    """A ``--device`` that is not a device name, or names a device this machine does not have."""


class UntrainedHeadsWarning(UserWarning):
    """A learned metric was created without trained parameters: its heads keep their data-free
    initialisation (SPIPS without ``checkpoint=``). Harness code that labels untrained metrics itself
    silences it with ``warnings.simplefilter("ignore", UntrainedHeadsWarning)``."""


def did_you_mean(value: str, choices: Sequence[str]) -> str:
    """``" Did you mean 'x'?"`` for the choice closest to a mistyped ``value``; empty when none is close."""
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def write_failure_fix(exc: OSError, other: str) -> str:
    """What to do about a local write that failed with ``exc``: the disk, the permissions, or ``other``
    (the option that picks another place, e.g. ``"--out"``)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk is full: free some space (or choose another {other})"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"the folder is read-only or not writable: make it writable (or choose another {other})"
    return f"check the disk and the folder's permissions (or choose another {other})"
