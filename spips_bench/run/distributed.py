"""Ranks under ``torchrun``: rank 0's decisions shared with every rank, totals and lists gathered.

Only control messages travel between ranks (scores travel through the store), so the process group is
always ``gloo``, also when the metrics run on CUDA.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from spips_bench.run.store import ScoreStore

# -- torchrun --------------------------------------------------------------------------------------------


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    #: Whether :meth:`from_env` started the process group (then :meth:`close` ends it; a group that the
    #: caller started stays the caller's).
    owns_group: bool = False

    @classmethod
    def from_env(cls) -> _Dist:
        from spips_bench.settings import distributed

        world, local_rank = distributed()
        if world <= 1:
            return cls()
        import torch.distributed as dist

        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group(backend="gloo")
        return cls(dist.get_rank(), world, local_rank, owns)

    def close(self) -> None:
        """End the process group this object started. A gloo group still alive when the interpreter exits
        can abort the process in its threads' teardown ("terminate called without an active exception",
        exit by SIGABRT) after all the work is done."""
        if self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns_group = False

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def share(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def total(self, value: Any) -> Any:
        """The sum over ranks of ``value`` (a number, or a dict of numbers)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        if isinstance(value, dict):
            return {k: sum(v.get(k, 0) for v in values) for k in sorted(set().union(*values))}
        return sum(values)

    def gather(self, items: list[Any]) -> list[Any]:
        """Every rank's ``items``, concatenated in rank order."""
        if self.world == 1:
            return items
        import torch.distributed as dist

        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, items)
        return [x for v in values for x in v]


@contextlib.contextmanager
def _maybe_lock(store: ScoreStore, d: _Dist) -> Iterator[None]:
    if d.rank == 0:
        with store.lock():
            yield
    else:
        yield
