"""``Scorer`` and ``score``: images -> trunk taps -> one distance op -> distances and 2AFC."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import threading
from collections import OrderedDict, namedtuple
from pathlib import Path
from typing import Dict, Hashable, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .lin import load_channel_weights
from .metrics import two_afc
from .ops.fused_distance import fused_distance, requested_backend
from .ops.fused_distance.reference import check_distance_names
from .ops.pairwise import Embedding, concat, embed, pairwise_terms, take
from .preprocess import RangeSpec, check_images, check_same_shape, optional_judge, parse_range, scaled_batch
from .trunks import list_trunks, load_trunk, trunk_name, trunk_spec
from .util.passes import PassSpec, check_pass_size, cpu_threads, images_per_pass, is_count, pass_sizes
from .util.precision import STORAGE, autocast_dtype, resolve_precision

LinSource = Union[str, os.PathLike, Sequence[Tensor]]
LinSpec = Union[None, LinSource, Mapping[str, LinSource]]

_MEMORY_FORMATS = {"auto": None, "channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def _with_threads(method):
    """Runs a Scorer method under its ``num_threads`` (see ``Scorer``)."""

    @functools.wraps(method)
    def run(self: "Scorer", *args, **kwargs):
        with cpu_threads(self.num_threads):
            return method(self, *args, **kwargs)

    return run


class Scorer:
    """Deep-feature distances between images, for one trunk.

    trunk: a registry name (``pf.list_trunks()``: ``alexnet``, ``resnet50``, ``vit_b_8``, ...), the
        path of an exported trunk (``perceptual-fast export``: ``.pt2`` or TorchScript) or of a weights file carrying
        its trunk config (``save_trunk``), or a module with ``forward_taps(x) -> List[Tensor]``
        (and optionally ``min_input_size()``, ``tap_channels``).
    weights: for a name: a local file, ``"torchvision"`` (torch hub cache) or ``"random"``
        (seeded by ``seed``). Required: nothing is downloaded. None for a path.
    trunk_config: config overrides for a named trunk, e.g. ``{"width": 0.25}`` (see ``load_trunk``).
    compile: wrap the trunk's ``forward_taps`` in ``torch.compile``: True (default backend) or a
        ``torch.compile`` backend name (e.g. ``"eager"``, ``"inductor"``).
    lin: the learned channel weights of a weighted distance. For ``lpips``: ``"lpips"`` (the v0.1
        file of the installed ``lpips`` package), a file in that format, or L tensors ``[C_l]``. For
        ``dists`` (trunk ``dists_vgg16``): ``"dists"`` (the alpha/beta file of the installed
        ``DISTS_pytorch`` package), a file in that format, or L tensors ``[2, C_l]`` (alpha; beta,
        normalised over all layers). Both: a mapping ``{"lpips": ..., "dists": ...}`` of those.
        ``Scorer.lin`` / ``Scorer.dists_weights`` hold what was read.
    distances: any of ``lpips``, ``spatial``, ``meanpool``, ``style``, ``dists``.
    device: where the trunk runs (default CPU). backend: ``auto``, ``cpp``, ``triton``, ``cuda`` or ``torch``.
    precision: ``fp32`` or ``fp64`` (trunk and distances; outputs in that dtype); ``bf16`` (or ``fp16``,
        CUDA only): the trunk under that autocast, distances accumulated and returned in float32;
        ``auto``: bf16 where the hardware runs it faster than fp32, else fp32 (``util/precision.py``).
        ``Scorer.precision`` is the one chosen.
    input_range: float image convention, ``"-1,1"`` (default), ``"0,1"`` or ``"0,255"``.
    memory_format: the trunk's layout: ``"channels_last"``, ``"contiguous"`` (NCHW) or ``"auto"``:
        channels_last on the CPU (the fastest layout there for every trunk; the cpp kernel reads its
        taps in place), NCHW on CUDA (the GPU kernels read NCHW taps).
    check_values: check that float images are finite and in ``input_range`` (default). False skips
        it (no device sync per call), for a loss on unconstrained outputs as the ``lpips`` package.
    pass_size: the most images one trunk pass takes; a larger batch runs in equal sub-batches whose
        taps are concatenated (the same values). ``"auto"`` (default): the size measured fastest
        for this trunk on a CPU, scaled by the image area (``util/passes.py``), no split on GPUs
        or for trunks the table does not know; None: the whole batch in one pass.
    num_threads: CPU threads for this Scorer's calls (``torch.set_num_threads`` for their duration,
        restored after; the cpp kernels follow it). None (default): torch's setting as it is. A
        backward pass (``loss.backward()``) runs later, with the setting then in force.
    """

    def __init__(
        self,
        trunk: Union[str, nn.Module] = "alexnet",
        weights: Union[None, str, os.PathLike] = None,
        lin: LinSpec = None,
        distances: Union[str, Sequence[str]] = ("spatial",),
        device: Union[None, str, torch.device] = None,
        backend: str = "auto",
        precision: str = "fp32",
        input_range: RangeSpec = None,
        seed: int = 0,
        trunk_config: Optional[Mapping[str, object]] = None,
        compile: Union[bool, str] = False,
        memory_format: str = "auto",
        check_values: bool = True,
        pass_size: PassSpec = "auto",
        num_threads: Optional[int] = None,
    ):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.precision = resolve_precision(precision, self.device)
        self.dtype = STORAGE[self.precision]
        self.autocast = autocast_dtype(self.precision)
        self.distances = check_distance_names(distances)
        requested_backend(backend)  # fail early on a misspelt name
        self.backend = backend
        parse_range(input_range)
        self.input_range = input_range
        self.check_values = check_values
        self.pass_size = check_pass_size(pass_size)
        if num_threads is not None and not is_count(num_threads):
            raise ValueError(f"num_threads must be None (torch's setting) or a positive int; got {num_threads!r}")
        self.num_threads = num_threads
        if isinstance(trunk, (str, os.PathLike)):
            module = load_trunk(trunk, weights, seed=seed, head=False, **dict(trunk_config or {}))
        else:
            module = trunk
        self.trunk_name = trunk_name(module)
        spec = trunk_spec(self.trunk_name) if self.trunk_name in list_trunks() else None
        self._pass_keys = () if spec is None else (spec.name, spec.family)
        if memory_format not in _MEMORY_FORMATS:
            raise ValueError(f"memory_format {memory_format!r} is not one of {', '.join(_MEMORY_FORMATS)}")
        if memory_format == "auto":
            memory_format = "channels_last" if self.device.type == "cpu" else "contiguous"
        self.memory_format = _MEMORY_FORMATS[memory_format]
        self.trunk = module.eval().to(device=self.device, dtype=self.dtype, memory_format=self.memory_format)
        for p in self.trunk.parameters():  # not module.requires_grad_: ScriptModules lack it
            p.requires_grad_(False)
        self._compiled_taps = None
        if compile:
            self._compiled_taps = torch.compile(self.trunk.forward_taps, **({} if compile is True else {"backend": compile}))
        self.min_size = int(module.min_input_size()) if hasattr(module, "min_input_size") else 1
        weights = self._load_lin(lin, spec)
        self.lin = weights.get("lpips")
        self.dists_weights = weights.get("dists")
        if "lpips" in self.distances and self.lin is None:
            raise ValueError(
                "the 'lpips' distance needs channel weights: pass lin='lpips' (the v0.1 weights inside the "
                "installed lpips package) or lin='path/to/alex.pth'; 'spatial' is the unweighted distance"
            )
        if "dists" in self.distances and self.dists_weights is None:
            raise ValueError(
                "the 'dists' distance needs its alpha/beta weights: pass lin='dists' (the file inside the installed "
                "DISTS_pytorch package) or lin='path/to/weights.pt', with trunk='dists_vgg16'"
            )

    def _load_lin(self, lin: LinSpec, spec) -> Dict[str, List[Tensor]]:
        """The weights ``lin`` names by distance: ``{"lpips": L x [C_l], "dists": L x [2, C_l]}`` (those given)."""
        if lin is None:
            return {}
        if isinstance(lin, Mapping):
            out = {}
            for key, source in lin.items():
                kind, weights = self._load_lin_source(source, spec)
                if key != kind:
                    raise ValueError(f"lin[{key!r}] holds {kind} weights; the keys are 'lpips' ([C_l] per tap) and "
                                     "'dists' ([2, C_l] per tap)")
                out[kind] = weights
            return out
        kind, weights = self._load_lin_source(lin, spec)
        return {kind: weights}

    def _load_lin_source(self, lin: LinSource, spec) -> tuple:
        """``(kind, weights)`` of one source: ``("lpips", L x [C_l])`` or ``("dists", L x [2, C_l])``."""
        if isinstance(lin, (str, os.PathLike)):
            channels = getattr(self.trunk, "tap_channels", None)
            if channels is None:
                raise ValueError("lin from a file needs a trunk that declares its tap_channels")
            kind, weights = load_channel_weights(lin, channels, spec.lpips_net if spec is not None else None)
        else:
            weights = [torch.as_tensor(v) for v in lin]
            kind = "dists" if weights and all(w.dim() == 2 and w.shape[0] == 2 for w in weights) else "lpips"
            weights = weights if kind == "dists" else [w.reshape(-1) for w in weights]
        return kind, [w.to(device=self.device, dtype=self.dtype) for w in weights]

    def _scaled(self, named: Mapping[str, Tensor]) -> Tensor:
        """Validates each named batch ``[N, 3, H, W]`` (same shapes) and returns them concatenated in
        LPIPS's scaled space, ``[k N, 3, H, W]`` in the scorer's dtype and device."""
        items = list(named.items())
        ranges = [check_images(x, name, self.input_range, self.min_size, self.check_values) for name, x in items]
        for name, x in items[1:]:
            check_same_shape(items[0][1], x, items[0][0], name)
        return scaled_batch([(x, r) for (_, x), r in zip(items, ranges)], self.dtype, self.device, self.memory_format)

    @_with_threads
    def features(self, x: Tensor) -> List[Tensor]:
        """Tap feature maps of images ``x`` ``[N, 3, H, W]`` (validated like every input): L x ``[N, C_l, H_l, W_l]``."""
        return self._taps(self._scaled({"images": x}))

    def images_per_pass(self, height: int, width: int) -> Optional[int]:
        """The most images of ``height`` x ``width`` one trunk pass takes under ``pass_size`` (None: no limit)."""
        return images_per_pass(self.pass_size, self._pass_keys, self.device, height, width)

    def _taps(self, x: Tensor) -> List[Tensor]:
        """x: LPIPS-scaled images ``[N, 3, H, W]`` -> the trunk's taps.

        With ``precision="bf16"`` / ``"fp16"`` the trunk runs under that autocast; otherwise under whatever
        autocast the caller has on (a training loop's ``torch.autocast``), as any module would.
        """
        autocast = torch.autocast(self.device.type, dtype=self.autocast) if self.autocast else contextlib.nullcontext()
        limit = self.images_per_pass(x.shape[-2], x.shape[-1])
        with torch.set_grad_enabled(torch.is_grad_enabled() and x.requires_grad), autocast:
            forward_taps = self.trunk.forward_taps if self._compiled_taps is None else self._compiled_taps
            passes = [list(forward_taps(part)) for part in x.split(pass_sizes(x.shape[0], limit))]
        taps = passes[0] if len(passes) == 1 else [torch.cat(parts) for parts in zip(*passes)]
        if len({t.dtype for t in taps}) > 1:
            # Mixed tap dtypes (e.g. a ViT's float32 residual stream under autocast): one dtype for the fused op.
            taps = [t.float() for t in taps]
        # All-bf16 taps go to the fused op as they are: the kernels read bf16 and accumulate in float32.
        return taps

    def _head(self, *taps: List[Tensor]) -> object:
        """The fused distance op of every later tap list against the first, in float32 or wider.

        Outside autocast (whose bf16 matmuls would round the style Gram products). Taps of reduced
        precision (an autocast trunk) go to float32 first when gradients flow through them (the
        differentiable head then accumulates in float32) or when the lists differ in dtype.
        """
        grads = torch.is_grad_enabled() and any(t.requires_grad for ts in taps for t in ts)
        if grads or len({t.dtype for ts in taps for t in ts}) > 1:
            taps = tuple([t.float() if t.dtype in (torch.bfloat16, torch.float16) else t for t in ts] for ts in taps)
        with torch.autocast(self.device.type, enabled=False):
            return fused_distance(*taps, distances=self.distances, lin=self.lin, backend=self.backend,
                                  dists_weights=self.dists_weights)

    def _input_taps(self, named: Mapping[str, Tensor]) -> List[List[Tensor]]:
        """The taps of each named batch ``[N, 3, H, W]`` (validated, same shapes), in order.

        One trunk pass over all of them, or, when gradients are on and only some of them require
        grad (a loss: a prediction against a fixed target), one pass with grad over those and one
        under ``no_grad`` over the others: the others then save no activations for backward and
        get no input gradient computed.
        """
        items = list(named.items())
        wants = [torch.is_grad_enabled() and isinstance(x, Tensor) and x.requires_grad for _, x in items]
        groups = [[i for i in range(len(items))]] if all(wants) or not any(wants) else \
            [[i for i, w in enumerate(wants) if w], [i for i, w in enumerate(wants) if not w]]
        if len(groups) > 1:
            for name, x in items[1:]:  # each group is validated below; this checks across groups
                check_same_shape(items[0][1], x, items[0][0], name)
        out: List[List[Tensor]] = [[] for _ in items]
        for group in groups:
            with torch.set_grad_enabled(torch.is_grad_enabled() and wants[group[0]]):
                taps = self._taps(self._scaled({items[i][0]: items[i][1] for i in group}))
            n = items[group[0]][1].shape[0]
            # split, not slices: a slice's backward builds an NCHW gradient for channels_last taps (the
            # trunk's ReLU backward then takes a slow path), a split's concatenates in the taps' layout
            chunks = [t.split(n) for t in taps] if len(group) > 1 else [(t,) for t in taps]
            for j, i in enumerate(group):
                out[i] = [c[j] for c in chunks]
        return out

    def _terms(self, named: Mapping[str, Tensor]) -> tuple:
        """The distance op of every later named batch against the first (taps from ``_input_taps``):
        a tuple of ``{name: [N, L]}``, one per later batch.

        A batch larger than a trunk pass runs in passes of whole pairs or triplets (``pass_size``):
        each pass's taps go to the distance op while they are still in cache, and no taps are
        concatenated; only the ``[n, L]`` terms are.
        """
        items = list(named.values())
        sizes = [items[0].shape[0]] if isinstance(items[0], Tensor) and items[0].dim() == 4 else []
        if sizes and all(isinstance(x, Tensor) and x.shape == items[0].shape for x in items):
            limit = self.images_per_pass(items[0].shape[-2], items[0].shape[-1])
            sizes = pass_sizes(sizes[0], None if limit is None else max(1, limit // len(items)))
        if len(sizes) <= 1:  # one pass (or inputs that the checks in _input_taps will reject)
            return self._pass_terms(named)
        passes = [self._pass_terms(dict(zip(named, parts))) for parts in zip(*(x.split(sizes) for x in items))]
        return tuple({k: torch.cat([p[i][k] for p in passes]) for k in passes[0][i]} for i in range(len(passes[0])))

    def _pass_terms(self, named: Mapping[str, Tensor]) -> tuple:
        terms = self._head(*self._input_taps(named))
        return terms if isinstance(terms, tuple) else (terms,)

    @_with_threads
    def target(self, y: Tensor) -> "Target":
        """The taps of fixed images ``y`` ``[N, 3, H, W]``, computed once without gradients, for later
        ``distance(x, target)`` calls (a loss against a fixed reference: its trunk pass is not repeated)."""
        with torch.no_grad():
            (taps,) = self._input_taps({"target": y})
        return Target(self, tuple(y.shape), taps)

    @_with_threads
    def distance(self, x0: Tensor, x1: Union[Tensor, "Target"], per_layer: bool = False) -> Dict[str, Tensor]:
        """Distances between ``x0`` and ``x1`` (``[N, 3, H, W]`` each, paired by index), or between ``x0``
        and a :class:`Target` of this Scorer (``scorer.target(y)``: its taps are reused).

        Returns ``{name: [N]}``, or ``{name: [N, L]}`` per layer with ``per_layer=True``.
        Differentiable with respect to the images that require grad; the trunk's backward runs only
        through those (see ``_input_taps``).
        """
        if isinstance(x1, Target):
            taps1 = x1.taps_for(self, x0)
            (taps0,) = self._input_taps({"x0": x0})
            terms = self._head(taps0, taps1)
        else:
            (terms,) = self._terms({"x0": x0, "x1": x1})
        return terms if per_layer else {k: v.sum(dim=1) for k, v in terms.items()}

    @_with_threads
    def score(self, batch: Mapping[str, Tensor], per_layer: bool = False) -> Dict[str, object]:
        """Scores triplets: ``batch`` holds ``ref``, ``p0``, ``p1`` (``[N, 3, H, W]``) and optional ``judge``.

        The trunk runs once on ``ref``, ``p0`` and ``p1`` (3N images, not 4N). Returns a dict:
          ``d0``, ``d1``: ``{name: [N]}`` (``[N, L]`` with ``per_layer``) distances of p0/p1 to ref;
          with ``judge`` (``[N]`` share of people preferring p1): ``2afc`` ``{name: [N]}`` float64
          per-triplet agreement and ``2afc_mean`` ``{name: float}``.
        """
        missing = [k for k in ("ref", "p0", "p1") if k not in batch]
        if missing:
            raise ValueError(f"batch is missing {missing}; it needs 'ref', 'p0', 'p1' ([N, 3, H, W]) and optional 'judge' ([N])")
        terms0, terms1 = self._terms({k: batch[k] for k in ("ref", "p0", "p1")})  # validates the images
        judge = optional_judge(batch.get("judge"), batch["ref"].shape[0])
        d0 = {k: v.sum(dim=1) for k, v in terms0.items()}
        d1 = {k: v.sum(dim=1) for k, v in terms1.items()}
        out: Dict[str, object] = {"d0": terms0 if per_layer else d0, "d1": terms1 if per_layer else d1}
        if judge is not None:
            agreement = {k: two_afc(d0[k].detach().cpu(), d1[k].detach().cpu(), judge) for k in self.distances}
            out["2afc"] = agreement
            out["2afc_mean"] = {k: float(v.mean()) for k, v in agreement.items()}
        return out

    @_with_threads
    def embed(self, x: Tensor) -> Embedding:
        """The pairwise embedding of images ``x`` ``[N, 3, H, W]`` (``ops/pairwise``): one trunk pass per
        image (in passes of ``pass_size``), each pass's taps reduced to what ``pairwise`` needs at once."""
        if not isinstance(x, Tensor):
            raise ValueError(f"images must be a torch.Tensor [N, 3, H, W]; got {type(x).__name__} (use torch.as_tensor)")
        with torch.no_grad():
            parts = []
            for part in x.split(pass_sizes(x.shape[0], self.images_per_pass(x.shape[-2], x.shape[-1]))):
                parts.append(embed(self._taps(self._scaled({"images": part})), self.distances, self.lin,
                                   self.dists_weights))
        return concat(parts)

    @_with_threads
    def pairwise(self, x: Union[Tensor, Embedding], y: Union[None, Tensor, Embedding] = None, per_layer: bool = False,
                 block: int = 256) -> Dict[str, Tensor]:
        """Every distance between every image of ``x`` and every image of ``y``: ``{name: [N, M]}`` float64
        (``[N, M, L]`` per layer), from N + M trunk passes instead of 2 N M.

        x, y: images ``[N, 3, H, W]`` / ``[M, 3, H, W]`` (one size within each set; the two sets may
        differ in size for meanpool and style, not for spatial/lpips), or embeddings from
        ``scorer.embed``. y None: ``x`` against itself, with an exact 0 diagonal. Entry ``[i, j]``
        equals ``distance(x[i:i+1], y[j:j+1])`` (to 1e-5 relative, float64 here). block: images per
        side of a tile of matrix products. Not differentiable.
        """
        if (isinstance(x, Tensor) and isinstance(y, Tensor) and x.shape[1:] == y.shape[1:] and x.dtype == y.dtype
                and x.device == y.device):
            both = self.embed(torch.cat([x, y]))  # one trunk pass for both sets where their sizes agree
            a, b = take(both, 0, len(x)), take(both, len(x), len(x) + len(y))
        else:
            a = x if isinstance(x, Embedding) else self.embed(x)
            b = a if y is None else y if isinstance(y, Embedding) else self.embed(y)
        terms = pairwise_terms(a, b, block=block)
        return terms if per_layer else {k: v.sum(dim=-1) for k, v in terms.items()}


class Target:
    """Tap features of fixed images made by ``Scorer.target(y)``: L detached maps ``[N, C_l, H_l, W_l]``
    in the Scorer's dtype and device, and the images' shape ``(N, 3, H, W)``. Pass it as the second
    argument of that Scorer's ``distance``."""

    def __init__(self, scorer: "Scorer", shape: tuple, taps: List[Tensor]):
        self.scorer, self.shape, self.taps = scorer, shape, taps

    def taps_for(self, scorer: "Scorer", x: Tensor) -> List[Tensor]:
        """The taps, after checking that ``scorer`` made them and ``x`` has the images' shape."""
        if scorer is not self.scorer:
            raise ValueError("this target was made by another Scorer (other trunk or settings); "
                             "make it with the Scorer that computes the distance: scorer.target(y)")
        if tuple(x.shape) != self.shape:
            raise ValueError(f"images of shape {tuple(x.shape)} against a target of shape {self.shape}: "
                             "they must match (paired by index)")
        return self.taps


# pf.score keeps the Scorers it built, least recently used first, at most this many (each holds a
# trunk's weights: on a GPU, device memory until evicted or pf.score.cache_clear()).
SCORE_CACHE_SIZE = 4

ScoreCacheInfo = namedtuple("ScoreCacheInfo", ["hits", "misses", "maxsize", "currsize"])

_score_cache: "OrderedDict[tuple, Scorer]" = OrderedDict()
_score_cache_lock = threading.Lock()
_score_cache_stats = {"hits": 0, "misses": 0}


class _Uncacheable(Exception):
    """An argument of this call cannot be keyed by value: the call builds a Scorer of its own."""


def _file_key(path: Union[str, os.PathLike]) -> tuple:
    """A file's identity: its resolved path, size and modification time (a rewritten file is a new key)."""
    resolved = Path(path).resolve()
    try:
        st = resolved.stat()
    except OSError:  # missing or unreadable: no key; Scorer raises its own error
        raise _Uncacheable(str(path)) from None
    return ("file", str(resolved), st.st_size, st.st_mtime_ns)


def _freeze(value: object) -> Hashable:
    """A hashable, type-tagged form of a plain value (lists, tuples, dicts); tensors and modules are uncacheable."""
    if isinstance(value, (Tensor, nn.Module)):
        raise _Uncacheable(type(value).__name__)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_freeze(v) for v in value))
    if isinstance(value, Mapping):
        return ("mapping", tuple(sorted((str(k), _freeze(v)) for k, v in value.items())))
    try:
        hash(value)
    except TypeError:
        raise _Uncacheable(type(value).__name__) from None
    return (type(value).__name__, value)


_SCORER_SIGNATURE = inspect.signature(Scorer)
"""Scorer's own, read once (tests may replace ``Scorer`` by a counting subclass)."""


def _score_key(**scorer_kwargs) -> tuple:
    """The cache key of ``Scorer(**scorer_kwargs)``: ``(name, key)`` for every argument of ``Scorer``, in
    its order, bound to its signature with the defaults filled in (so an argument added to ``Scorer`` is
    keyed too; an unknown keyword raises TypeError, as ``Scorer`` would).

    Files (a trunk path, a weights path, a lin path) are keyed by resolved path, size and mtime_ns;
    ``seed`` only with ``weights="random"`` (nothing else reads it). Raises _Uncacheable for a trunk
    module, lin tensors and other values that cannot be keyed by value.
    """
    bound = _SCORER_SIGNATURE.bind(**scorer_kwargs)
    bound.apply_defaults()
    args = bound.arguments
    return tuple((name, _argument_key(name, value, args)) for name, value in args.items())


def _argument_key(name: str, value: object, args: Mapping[str, object]) -> Hashable:
    """The key of one ``Scorer`` argument (see ``_score_key``); ``args``: all of them, by name."""
    if name == "trunk":
        if isinstance(value, nn.Module):
            raise _Uncacheable("trunk module")
        if isinstance(value, str) and _is_trunk_name(value):
            return ("name", value)
        if isinstance(value, (str, os.PathLike)):
            return _file_key(value)
        raise _Uncacheable(type(value).__name__)
    if name == "weights":
        if value is None or value in ("torchvision", "random"):
            return value  # 'torchvision': by name (the hub-cache file is assumed not to change)
        return _file_key(value) if isinstance(value, (str, os.PathLike)) else _freeze(value)
    if name == "seed":
        return _freeze(value) if args["weights"] == "random" else None
    if name == "lin":
        return _lin_key(value)
    if name == "distances":
        return _freeze(check_distance_names(value))
    if name == "device":
        return str(torch.device(value)) if value is not None else "cpu"
    if name == "trunk_config":
        return _freeze(dict(value or {}))
    return _freeze(value)


def _lin_key(value: object) -> Hashable:
    """The key of a ``lin`` argument: the package names by name, files by identity, a mapping of those by
    its items; tensors are uncacheable."""
    if value is None or (isinstance(value, str) and value in ("lpips", "dists")):
        return value  # the installed package's file
    if isinstance(value, (str, os.PathLike)):
        return _file_key(value)
    if isinstance(value, Mapping):
        return ("mapping", tuple(sorted((str(k), _lin_key(v)) for k, v in value.items())))
    raise _Uncacheable("lin tensors")


def _is_trunk_name(name: str) -> bool:
    """Whether ``name`` is a registry name (``load_trunk`` prefers it to a file of that name)."""
    try:
        trunk_spec(name)
    except ValueError:
        return False
    return True


def _score_scorer(**scorer_kwargs) -> Scorer:
    """The Scorer ``score(batch, **scorer_kwargs)`` uses: the cached one for these arguments, else a new
    one (cached unless an argument is uncacheable)."""
    try:
        key = _score_key(**scorer_kwargs)
    except (_Uncacheable, TypeError):  # TypeError (an unknown keyword): Scorer raises its own
        return Scorer(**scorer_kwargs)
    with _score_cache_lock:
        cached = _score_cache.get(key)
        if cached is not None:
            _score_cache.move_to_end(key)
            _score_cache_stats["hits"] += 1
            return cached
        _score_cache_stats["misses"] += 1
    built = Scorer(**scorer_kwargs)  # outside the lock: a slow load does not block other keys
    with _score_cache_lock:
        cached = _score_cache.get(key)  # another thread built the same one meanwhile: keep one
        if cached is not None:
            _score_cache.move_to_end(key)
            return cached
        _score_cache[key] = built
        while len(_score_cache) > max(0, SCORE_CACHE_SIZE):
            _score_cache.popitem(last=False)
    return built


def clear_score_cache() -> None:
    """Drops every Scorer ``score`` keeps (freeing their trunks) and zeroes the hit/miss counts."""
    with _score_cache_lock:
        _score_cache.clear()
        _score_cache_stats.update(hits=0, misses=0)


def score_cache_info() -> ScoreCacheInfo:
    """``(hits, misses, maxsize, currsize)`` of ``score``'s Scorer cache, like ``functools.lru_cache``."""
    with _score_cache_lock:
        return ScoreCacheInfo(_score_cache_stats["hits"], _score_cache_stats["misses"], SCORE_CACHE_SIZE, len(_score_cache))


def score(batch: Mapping[str, Tensor], per_layer: bool = False, **scorer_kwargs) -> Dict[str, object]:
    """``Scorer(**scorer_kwargs).score(batch, per_layer=per_layer)``, with the Scorer cached.

    The last ``SCORE_CACHE_SIZE`` (4) Scorers are kept, keyed by every constructor argument, so
    repeated calls cost what a held Scorer costs. Files (a trunk, ``weights`` or ``lin`` path) are
    keyed by resolved path, size and mtime_ns: a rewritten file builds a new Scorer; ``"random"``
    weights by ``seed``; ``"torchvision"`` weights and ``lin="lpips"`` by name. Calls given a trunk
    module or lin tensors are not cached (those objects can change in place). Thread-safe. Sharing
    is safe, also as a loss: a Scorer keeps no per-call state (trunk in eval mode, its parameters
    frozen; gradients reach only the images). ``score.cache_clear()`` (= ``clear_score_cache()``)
    frees the kept Scorers; ``score.cache_info()`` gives hits, misses, maxsize, currsize.
    """
    return _score_scorer(**scorer_kwargs).score(batch, per_layer=per_layer)


score.cache_clear = clear_score_cache  # type: ignore[attr-defined]
score.cache_info = score_cache_info  # type: ignore[attr-defined]
