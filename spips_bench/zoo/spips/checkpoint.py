"""Reading and writing SPIPS checkpoints: the trained heads plus the configuration they belong to.

A checkpoint is a safetensors file (what ``spips-bench train`` writes) whose metadata holds
``format = "spips-heads/1"`` and ``config`` (JSON: backbone, streams and every option that changes
the meaning of the weights). A zip file written by ``torch.save`` is accepted too when it holds
``{"state_dict": {name: tensor}, "config": "<json>"}`` or a bare ``{name: tensor}`` mapping; it is read
with ``torch.load(weights_only=True)``. Anything else, in particular a bare pickle stream, is refused
before any unpickler sees it.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from spips_bench.errors import WeightsIntegrityError, WeightsUnavailableError
from spips_bench.io import atomic_write_bytes
from spips_bench.weights import check_tensors

FORMAT = "spips-heads/1"
_ZIP_MAGIC = b"PK\x03\x04"


def _is_safetensors(head: bytes, size: int) -> bool:
    # safetensors: 8-byte little-endian header length, then a JSON object.
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def deterministic_safetensors(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None,
                              ) -> bytes:
    """The bytes of a safetensors file holding ``tensors`` and ``metadata``, the same on every run.

    ``safetensors`` serialises the metadata from a Rust hash map, whose order is seeded afresh in each
    process, so one state saved twice gives files of different bytes (and SHA-256). Here the header is
    written again with the metadata keys sorted; the tensor entries keep the library's order (a sort by
    dtype and name, as their data offsets are) and the data is the library's, byte for byte. The header
    is padded with spaces to a multiple of 8 bytes, as the library pads it.
    """
    from safetensors.torch import save

    raw = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
               metadata=dict(metadata) if metadata else None)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", None)
    ordered: dict[str, Any] = {"__metadata__": dict(sorted(meta.items()))} if meta else {}
    ordered.update(sorted(header.items(), key=lambda item: (item[1]["data_offsets"], item[0])))
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + n:]


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, torch.Tensor],
                    config: Mapping[str, Any], extra: Mapping[str, str] | None = None) -> Path:
    """Write ``state`` and ``config`` as a safetensors checkpoint (atomically: :func:`spips_bench.io.atomic_path`).

    The same state, configuration and ``extra`` give the same bytes, hence the same SHA-256, in every
    process (:func:`deterministic_safetensors`).
    """
    p = Path(path)
    meta = {"format": FORMAT, "config": json.dumps(dict(config), sort_keys=True)}
    meta.update(extra or {})
    atomic_write_bytes(p, deterministic_safetensors(state, meta), error=None)
    return p


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None,
                                                              dict[str, str]]:
    """Load a checkpoint safely.

    Returns:
        ``(state, config, metadata)``: tensors on the CPU, the configuration it was trained with (``None``
        for a bare torch state dict without one) and the raw string metadata.

    Raises:
        WeightsUnavailableError: ``path`` does not exist.
        WeightsIntegrityError: the file is neither safetensors nor a ``torch.save`` zip of tensors, holds
            a pickle payload (refused, never executed), a tensor that is not floating point or holds NaN or
            infinite values (named in the message), or its metadata is malformed.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsUnavailableError(f"{p}: no such checkpoint file; check the path (train one with "
                                      "`spips-bench train`).")
    size = p.stat().st_size
    with p.open("rb") as fh:
        head = fh.read(16)
    if _is_safetensors(head, size):
        return _read_safetensors(p)
    if head.startswith(_ZIP_MAGIC):
        return _read_torch_zip(p)
    raise WeightsIntegrityError(
        f"{p}: refused: not a safetensors file nor a torch.save zip archive (a bare pickle or an unknown "
        "format). Checkpoints are never unpickled beyond torch.load(weights_only=True); use the "
        "safetensors file written by `spips-bench train`."
    )


def _read_safetensors(p: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(p), framework="pt", device="cpu") as fh:
            meta = dict(fh.metadata() or {})
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsIntegrityError(f"{p}: unreadable safetensors file ({exc}); it is truncated or corrupt, "
                                    "write it again.") from exc
    check_tensors(state, str(p))
    config = _parse_config(p, meta.get("config")) if "config" in meta else None
    if config is not None and meta.get("format") != FORMAT:
        raise WeightsIntegrityError(f"{p}: checkpoint format {meta.get('format')!r} is not {FORMAT!r}; "
                                    "it was written by another program or version.")
    return state, config, meta


def _read_torch_zip(p: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, dict[str, str]]:
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise WeightsIntegrityError(
            f"{p}: refused: it holds objects other than tensors ({type(exc).__name__}: {first}). Only "
            "torch.load(weights_only=True) is used, so pickled code is never run; use a safetensors file."
        ) from exc
    config: dict[str, Any] | None = None
    meta: dict[str, str] = {}
    if isinstance(obj, Mapping) and "state_dict" in obj:
        raw = obj.get("config")
        if raw is not None:
            if not isinstance(raw, str):
                raise WeightsIntegrityError(f"{p}: 'config' must be a JSON string, got {type(raw).__name__}.")
            config = _parse_config(p, raw)
            meta["config"] = raw
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsIntegrityError(f"{p}: expected a mapping of parameter names to tensors, got "
                                    f"{type(obj).__name__}.")
    state = {str(k): v for k, v in obj.items()}
    check_tensors(state, str(p))
    return state, config, meta


def _parse_config(p: Path, raw: str | None) -> dict[str, Any]:
    try:
        config = json.loads(raw or "")
    except json.JSONDecodeError as exc:
        raise WeightsIntegrityError(
            f"{p}: the checkpoint's 'config' metadata is not valid JSON ({exc})."
        ) from exc
    if not isinstance(config, dict):
        raise WeightsIntegrityError(f"{p}: the checkpoint's 'config' metadata must be a JSON object.")
    return config
