"""perceptual_fast: fast deep-feature image distances (LPIPS and the functions of Kumar et al. 2022).

    import perceptual_fast as pf
    scorer = pf.Scorer("alexnet", weights="torchvision", lin="lpips", distances=("lpips", "spatial"))
    scorer.distance(x0, x1)            # {name: Tensor[N]}; images [N, 3, H, W] in [-1, 1] or uint8
    scorer.score({"ref": r, "p0": a, "p1": b, "judge": h})   # d0, d1, 2AFC per triplet and mean
    loss_fn = pf.LPIPS(net="alex")     # a drop-in for lpips.LPIPS (training losses)

No device is touched and nothing is downloaded at import time.
"""

from .build_info import build_info
from .dropin import LPIPS
from .ops.fused_distance import DISTANCES, BackendUnavailable, fused_distance
from .scorer import Scorer, score
from .trunks import CheckpointError, list_trunks, load_trunk, save_trunk
from .util.allocator import tune_cpu_allocator

__version__ = "0.1.0"

__all__ = [
    "DISTANCES",
    "LPIPS",
    "BackendUnavailable",
    "CheckpointError",
    "Scorer",
    "build_info",
    "fused_distance",
    "list_trunks",
    "load_trunk",
    "save_trunk",
    "score",
    "tune_cpu_allocator",
]
