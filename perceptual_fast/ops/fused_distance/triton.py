"""The ``triton`` backend: launches the kernels of kernels/triton/fused_distance.py (shipped as
perceptual_fast.kernels.triton).

Runs on CUDA tensors, on the tensors' own device (not the current one); on CPU tensors only under
``TRITON_INTERPRET=1`` (the interpreter CI uses). With a backward for lpips, spatial and meanpool
(float32 maps); style's gradient is autograd of the reference. Nothing is imported from triton until a request
is actually run. Batches of more samples than one launch takes (the kernels'
``MAX_SAMPLES_PER_LAUNCH``) are split by the dispatcher (``max_batch``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import List, Sequence

import torch
from torch import Tensor

from . import autograd
from .autograd import Grads
from .backend import Backend, DistanceRequest, Terms, dtype_and_grad_reasons, nchw, one_device_reasons
from .reference import DISTANCES

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
GRAD_DTYPES = (torch.float32,)
"""The map dtype the backward kernels take (the Scorer widens 16-bit taps before a differentiable head)."""


def _element_offsets(feats: Sequence[Sequence[Tensor]]) -> tuple:
    """The maps as one base tensor plus int64 ``[3, L]`` element offsets and batch strides from it."""
    base = feats[0][0]
    elem = base.element_size()
    offsets = torch.zeros(3, len(feats[0]), dtype=torch.int64)
    strides = torch.zeros(3, len(feats[0]), dtype=torch.int64)
    for k, maps in enumerate(feats):
        for layer, t in enumerate(maps):
            delta = t.data_ptr() - base.data_ptr()
            if delta % elem:
                raise ValueError("feature maps must be aligned to their element size")
            offsets[k, layer] = delta // elem
            strides[k, layer] = t.stride(0)
    return base, offsets, strides


def _exclusive_cumsum(values: Sequence[int]) -> List[int]:
    out, total = [], 0
    for v in values:
        out.append(total)
        total += v
    return out


class _Tables:
    """What every launch of one request needs: the maps as one base pointer with int64 per-layer
    offset / stride / channel / position tables on the device, the scratch offsets, the tiles."""

    def __init__(self, feats: Sequence[Sequence[Tensor]], blocks: dict):
        first = feats[0][0]
        self.device, self.n = first.device, first.shape[0]
        self.count, self.layers = len(feats), len(feats[0])
        self.chans = [t.shape[1] for t in feats[0]]
        self.hws = [t.shape[2] * t.shape[3] for t in feats[0]]
        base, offsets, strides = _element_offsets(feats)
        self.maps = (base, self.dev(offsets.reshape(-1)), self.dev(strides.reshape(-1)), self.dev(self.chans), self.dev(self.hws))
        self.pos_off, self.chan_off = self.dev(_exclusive_cumsum(self.hws)), self.dev(_exclusive_cumsum(self.chans))
        self.total_c, self.total_hw = sum(self.chans), sum(self.hws)
        tiles = [(layer, p0) for layer in range(self.layers) for p0 in range(0, self.hws[layer], blocks["POINTWISE_BLOCK_P"])]
        self.tile_count = len(tiles)
        self.tiles = (self.dev([t[0] for t in tiles]), self.dev([t[1] for t in tiles]))

    def dev(self, values) -> Tensor:
        return torch.as_tensor(values, dtype=torch.int64).to(self.device)

    def lin_flat(self, lin, wanted: bool) -> Tensor:
        """The lpips weights of every layer in one float32 vector (zeros when lpips is not wanted)."""
        if wanted:
            return torch.cat([w.reshape(-1) for w in lin]).to(device=self.device, dtype=torch.float32)
        return torch.zeros(self.total_c, device=self.device)

    def guard(self):
        """Triton launches on the current device: make it the tensors' own."""
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()


def fused_distance_triton(feats: Sequence[Sequence[Tensor]], distances: Sequence[str], lin=None,
                          dists_weights=None) -> List[Terms]:
    """``feats``: 2 or 3 lists of L maps ``[N, C_l, H_l, W_l]`` (one dtype among float32, bfloat16,
    float16; one device; samples NCHW-contiguous, any batch stride; N <= MAX_SAMPLES_PER_LAUNCH).
    lin: L ``[C_l]`` (lpips); dists_weights: L ``[2, C_l]`` (dists).
    Returns one ``{name: [N, L]}`` float32 per comparison with the first list."""
    from ...kernels.triton import fused_distance as K

    feats = [[t.detach() for t in lst] for lst in feats]
    count, layers = len(feats), len(feats[0])
    device, n = feats[0][0].device, feats[0][0].shape[0]
    if n > K.MAX_SAMPLES_PER_LAUNCH:
        raise ValueError(f"at most {K.MAX_SAMPLES_PER_LAUNCH} samples per launch, got {n}; split the batch")
    pairs, want = count - 1, set(distances)
    out = torch.full((len(DISTANCES), pairs, n, layers), float("nan"), dtype=torch.float32, device=device)
    results = [{d: out[DISTANCES.index(d), q] for d in distances} for q in range(pairs)]
    if n == 0:
        return results
    blocks = K.BLOCKS
    tab = _Tables(feats, blocks)
    with tab.guard():
        want_terms = bool(want & {"spatial", "lpips"})
        # Written before it is read by the style kernel: no zeroing needed.
        inv = torch.empty(count, n, tab.total_hw, dtype=torch.float32, device=device) if "style" in want else out
        if want_terms or "style" in want:
            terms = torch.zeros(2, pairs, n, layers, dtype=torch.float32, device=device)  # atomic sums
            K._pointwise_kernel[(tab.tile_count, n)](
                *tab.maps, tab.pos_off, tab.lin_flat(lin, "lpips" in want), tab.chan_off, *tab.tiles, inv, terms, n, layers,
                tab.total_hw, COUNT=count, WANT_TERMS=want_terms, WANT_STYLE="style" in want,
                BLOCK_P=blocks["POINTWISE_BLOCK_P"], BLOCK_C=blocks["CHANNEL_BLOCK"], **K.LAUNCH_OPTIONS["_pointwise_kernel"],
            )
            for slot, name in enumerate(("spatial", "lpips")):
                if name in want:
                    out[DISTANCES.index(name)] = terms[slot]
        if "style" in want:
            style = torch.zeros(pairs, n, layers, dtype=torch.float32, device=device)  # atomic sums
            step = blocks["STYLE_BLOCK_C"]
            pairs_of_blocks = [(layer, i0, j0) for layer in range(layers) for i0 in range(0, tab.chans[layer], step)
                               for j0 in range(i0, tab.chans[layer], step)]
            K._style_kernel[(len(pairs_of_blocks), n)](
                *tab.maps, tab.pos_off, *(tab.dev([b[i] for b in pairs_of_blocks]) for i in range(3)),
                inv, style, n, layers, tab.total_hw,
                COUNT=count, BLOCK_C=step, BLOCK_P=blocks["STYLE_BLOCK_P"], PRECISION=K.STYLE_DOT_PRECISION,
                **K.LAUNCH_OPTIONS["_style_kernel"],
            )
            out[DISTANCES.index("style")] = style
        if "meanpool" in want:
            chsum = torch.empty(count, n, tab.total_c, dtype=torch.float64, device=device)  # written before read
            K._meanpool_kernel[(layers, n)](
                *tab.maps, tab.chan_off, chsum, out[DISTANCES.index("meanpool")],
                n, layers, tab.total_c, COUNT=count, BLOCK_C=blocks["CHANNEL_BLOCK"], BLOCK_P=blocks["POINTWISE_BLOCK_P"],
                **K.LAUNCH_OPTIONS["_meanpool_kernel"],
            )
        if "dists" in want:
            weights = torch.cat([w.reshape(-1) for w in dists_weights]).to(device=device, dtype=torch.float32)
            K._dists_kernel[(layers, n)](
                *tab.maps, tab.chan_off, weights, out[DISTANCES.index("dists")], n, layers,
                COUNT=count, BLOCK_C=blocks["CHANNEL_BLOCK"], BLOCK_P=blocks["DISTS_BLOCK_P"],
                **K.LAUNCH_OPTIONS["_dists_kernel"],
            )
    return results


def fused_distance_triton_backward(feats: Sequence[Sequence[Tensor]], distances: Sequence[str], lin,
                                   grad_terms: List[Terms], needs: Sequence[Sequence[bool]]) -> Grads:
    """Gradients of the lpips, spatial and meanpool terms of ``distances`` (float32 NCHW-sample maps)
    weighted by ``grad_terms``, for every map of the lists that ``needs`` (a list's maps are computed
    together; only the needed ones are returned). float32 ``[N, C, H, W]`` contiguous each."""
    from ...kernels.triton import fused_distance as K

    feats = [[t.detach() for t in lst] for lst in feats]
    count, layers = len(feats), len(feats[0])
    device, n = feats[0][0].device, feats[0][0].shape[0]
    want = set(distances)
    blocks = K.BLOCKS
    tab = _Tables(feats, blocks)
    sizes = [c * hw for c, hw in zip(tab.chans, tab.hws)]
    total_chw = sum(sizes)
    flat = autograd.gradient_buffer((count * n * total_chw,), device)
    layer_off = _exclusive_cumsum([n * size for size in sizes])
    grad_off = [k * n * total_chw + layer_off[layer] for k in range(count) for layer in range(layers)]
    grads: Grads = [[None] * layers for _ in range(count)]
    need_mask = 0
    for k in range(count):
        if any(needs[k]):
            need_mask |= 1 << k
        for layer in range(layers):
            if needs[k][layer]:
                start = grad_off[k * layers + layer]
                grads[k][layer] = flat[start : start + n * sizes[layer]].view(feats[k][layer].shape)
    if n == 0:
        return grads
    upstream = {d: torch.stack([g[d] for g in grad_terms]).float().contiguous() if d in want else
                torch.zeros(count - 1, n, layers, device=device) for d in ("spatial", "lpips", "meanpool")}
    with tab.guard():
        spread = flat  # not read without meanpool
        if "meanpool" in want:
            chsum = torch.empty(count, n, tab.total_c, dtype=torch.float64, device=device)  # written before read
            spread = torch.empty(count, n, tab.total_c, dtype=torch.float32, device=device)  # written before read
            K._meanpool_backward_kernel[(layers, n)](
                *tab.maps, tab.chan_off, chsum, upstream["meanpool"], spread, n, layers, tab.total_c,
                COUNT=count, BLOCK_C=blocks["CHANNEL_BLOCK"], BLOCK_P=blocks["POINTWISE_BLOCK_P"],
                **K.LAUNCH_OPTIONS["_meanpool_backward_kernel"],
            )
        K._pointwise_backward_kernel[(tab.tile_count, n)](
            *tab.maps, tab.lin_flat(lin, "lpips" in want), tab.chan_off, *tab.tiles, upstream["spatial"], upstream["lpips"],
            spread, tab.chan_off, flat, tab.dev(grad_off), need_mask, n, layers, tab.total_c, tab.total_hw,
            COUNT=count, WANT_TERMS=bool(want & {"spatial", "lpips"}), WANT_MEANPOOL="meanpool" in want,
            BLOCK_P=blocks["POINTWISE_BLOCK_P"], BLOCK_C=blocks["CHANNEL_BLOCK"],
            **K.LAUNCH_OPTIONS["_pointwise_backward_kernel"],
        )
    return grads


class TritonBackend(Backend):
    name = "triton"
    has_backward = True

    @property
    def max_batch(self) -> int:
        from ...kernels.triton.fused_distance import MAX_SAMPLES_PER_LAUNCH

        return MAX_SAMPLES_PER_LAUNCH

    def unsupported(self, request: DistanceRequest) -> List[str]:
        reasons = []
        if importlib.util.find_spec("triton") is None:
            reasons.append("the triton package is not installed")
        device_reasons = one_device_reasons(request)
        reasons += device_reasons
        if not device_reasons:
            device = request.feats[0][0].device
            if device.type == "cpu":
                if os.environ.get("TRITON_INTERPRET") != "1":
                    reasons.append("it runs on CUDA tensors (CPU tensors only with TRITON_INTERPRET=1, the interpreter)")
            elif device.type != "cuda":
                reasons.append(f"it runs on CUDA tensors, not {device.type}")
        return reasons + dtype_and_grad_reasons(request, DTYPES, has_backward=True, grad_dtypes=GRAD_DTYPES)

    def compute(self, request: DistanceRequest) -> List[Terms]:
        feats = [[nchw(t) for t in lst] for lst in request.feats]  # the Triton kernels read NCHW samples
        return fused_distance_triton(feats, request.distances, request.lin, request.dists_weights)

    def backward(self, request: DistanceRequest, grad_terms: List[Terms], needs: Sequence[Sequence[bool]]) -> Grads:
        def kernel_grads(req: DistanceRequest, grads: List[Terms], wanted: Sequence[Sequence[bool]]) -> Grads:
            feats = [[nchw(t) for t in lst] for lst in req.feats]  # the Triton kernels read NCHW samples
            return fused_distance_triton_backward(feats, req.distances, req.lin, grads, wanted)

        return autograd.kernel_and_reference_grads(request, grad_terms, needs, kernel_grads)
