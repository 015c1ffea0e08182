"""One parser for every ``--device`` option (``run``, ``score``, ``explain``, ``train``, ``bench``).

The accepted names are ``auto`` (a CUDA GPU when one is visible, else the CPU), ``cpu``, ``cuda`` and
``cuda:N``. Anything else, or a GPU this machine does not have, is a :class:`~spips_bench.errors.DeviceError`
that says what is wrong and which name to pass instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spips_bench.errors import DeviceError

if TYPE_CHECKING:
    import torch

#: What ``--device`` accepts, for help texts and messages.
DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
#: Names people type for a GPU; they get the hint that torch calls it ``cuda``.
_GPU_WORDS = ("gpu", "nvidia", "cuda0", "gpu0")


def resolve_device(requested: str, *, local_rank: int = 0, option: str = "--device") -> torch.device:
    """The ``torch.device`` that ``requested`` names on this machine.

    Args:
        requested: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (case and surrounding spaces ignored).
        local_rank: the process's rank on its node; plain ``"cuda"`` takes GPU ``local_rank % count``, so
            each ``torchrun`` process gets its own GPU.
        option: how messages name the option.

    Raises:
        DeviceError: ``requested`` is not one of the names above, names CUDA where none is visible, or
            names a GPU index this machine does not have.
    """
    import torch

    text = str(requested).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    kind, sep, index = text.partition(":")
    if kind not in ("cpu", "cuda") or (sep and not (kind == "cuda" and index.isdigit())):
        hint = "; torch calls a GPU 'cuda'" if kind in _GPU_WORDS else ""
        raise DeviceError(f"{option} {requested!r} is not a device name{hint}. Use {DEVICE_NAMES} "
                          "(auto takes a GPU when one is visible, else the CPU).")
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = ("this torch build has no CUDA support" if torch.version.cuda is None
               else "no NVIDIA GPU or driver is visible")
        raise DeviceError(f"{option} {requested}: no CUDA device here ({why}). Use {option} cpu, or {option} "
                          "auto to take a GPU only where there is one.")
    count = torch.cuda.device_count()
    number = int(index) if sep else local_rank % count
    if number >= count:
        raise DeviceError(f"{option} {requested}: this machine has {count} CUDA device(s), cuda:0 to "
                          f"cuda:{count - 1}. Use one of those, or {option} cuda for the first.")
    return torch.device("cuda", number)
