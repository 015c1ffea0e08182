"""ST-LPIPS: shift-tolerant LPIPS (Ghildyal & Liu, ECCV 2022, arXiv:2207.13686).

LPIPS's formula on anti-aliased trunks (stride-1 convolutions and pools followed by reflect-padded blur
pooling), with the authors' trained trunk *and* linear weights, one file per network, shipped in the
``stlpips-pytorch`` wheel: these are real trained metrics that work on a machine without network.
Input scaling is LPIPS v0.1's (the checkpoints carry the same constants, checked at load).
Lower = more similar.

Porting notes (against ``stlpips_pytorch`` 0.0.2 and pyiqa's ``stlpips``):

- Both load the checkpoint with ``strict=False``; here every key is mapped and loading is strict.
- The reference VGG variant ignores its ``blur_filter_size`` argument (always 3); so does this one.
"""

from __future__ import annotations

from spips_bench import weights
from spips_bench.zoo.backbones import TRUNKS, build_trunk, st_checkpoint_split
from spips_bench.zoo.lpips import LinearHeadDistance, lin_state

#: ST-LPIPS's networks: ``net`` -> its shift-tolerant trunk in :data:`TRUNKS`, whose one weight file holds
#: trunk and linear weights.
_TRUNK_OF = {"alex": "alex-st", "vgg": "vgg-st"}


class STLPIPS(LinearHeadDistance):
    """ST-LPIPS (Ghildyal & Liu 2022): shift-tolerant trunk + learned linear weights; lower = more similar."""

    def __init__(self, net: str = "alex", *, offline: bool | None = None) -> None:
        """Build ST-LPIPS.

        Args:
            net: ``"alex"`` (default) or ``"vgg"``.
            offline: forbid downloads (``None`` reads ``SPIPS_BENCH_OFFLINE``); the weights normally come
                from the installed ``stlpips-pytorch`` wheel, so nothing is downloaded.

        Raises:
            ValueError: unknown ``net``.
            WeightsUnavailableError: the checkpoint is neither installed nor downloadable.
            WeightsIntegrityError: the checkpoint is corrupt or has an unexpected layout.
        """
        if net not in _TRUNK_OF:
            raise ValueError(f"ST-LPIPS net={net!r} is not available; use one of {', '.join(_TRUNK_OF)}.")
        super().__init__(build_trunk(_TRUNK_OF[net], pretrained=False))
        self.net = net
        wname = TRUNKS[_TRUNK_OF[net]].weight
        source = f"weight file {wname!r}"
        # one file holds trunk and linear weights: read it once, split it strictly
        state = weights.load_state_dict(wname, offline=offline)
        weights.load_into(self.trunk, st_checkpoint_split(state, self.trunk, source), source=source)
        lins = lin_state(state, len(self.trunk.channels), source=source, ignore=("net.", "scaling_layer."))
        weights.load_into(self.lins, lins, source=source)

    def extra_repr(self) -> str:
        return f"net={self.net!r}"
