"""The ``triton`` backend: launches the kernels of kernels/triton/fused_distance.py (shipped as
perceptual_fast.kernels.triton).

Runs on CUDA tensors, on the tensors' own device (not the current one); on CPU tensors only under
``TRITON_INTERPRET=1`` (the interpreter CI uses). Nothing is imported from triton until a request
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

from .backend import Backend, DistanceRequest, Terms, dtype_and_grad_reasons, nchw, one_device_reasons
from .reference import DISTANCES

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


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


def fused_distance_triton(feats: Sequence[Sequence[Tensor]], distances: Sequence[str], lin=None) -> List[Terms]:
    """``feats``: 2 or 3 lists of L maps ``[N, C_l, H_l, W_l]`` (one dtype among float32, bfloat16,
    float16; one device; samples NCHW-contiguous, any batch stride; N <= MAX_SAMPLES_PER_LAUNCH).
    Returns one ``{name: [N, L]}`` float32 per comparison with the first list."""
    from ...kernels.triton import fused_distance as K

    feats = [[t.detach() for t in lst] for lst in feats]
    count, layers = len(feats), len(feats[0])
    first = feats[0][0]
    device, n = first.device, first.shape[0]
    if n > K.MAX_SAMPLES_PER_LAUNCH:
        raise ValueError(f"at most {K.MAX_SAMPLES_PER_LAUNCH} samples per launch, got {n}; split the batch")
    chans = [t.shape[1] for t in feats[0]]
    hws = [t.shape[2] * t.shape[3] for t in feats[0]]
    pairs, want = count - 1, set(distances)
    out = torch.full((len(DISTANCES), pairs, n, layers), float("nan"), dtype=torch.float32, device=device)
    results = [{d: out[DISTANCES.index(d), q] for d in distances} for q in range(pairs)]
    if n == 0:
        return results
    base, offsets, strides = _element_offsets(feats)
    as_dev = lambda values: torch.as_tensor(values, dtype=torch.int64).to(device)  # noqa: E731
    tables = (base, as_dev(offsets.reshape(-1)), as_dev(strides.reshape(-1)), as_dev(chans), as_dev(hws))
    pos_off, chan_off = as_dev(_exclusive_cumsum(hws)), as_dev(_exclusive_cumsum(chans))  # per-layer scratch offsets
    total_c, total_hw = sum(chans), sum(hws)
    blocks = K.BLOCKS
    guard = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with guard:  # Triton launches on the current device: make it the tensors' own
        want_terms = bool(want & {"spatial", "lpips"})
        # Written before it is read by the style kernel: no zeroing needed.
        inv = torch.empty(count, n, total_hw, dtype=torch.float32, device=device) if "style" in want else out
        if want_terms or "style" in want:
            terms = torch.zeros(2, pairs, n, layers, dtype=torch.float32, device=device)  # atomic sums
            lin_flat = (torch.cat([w.reshape(-1) for w in lin]).to(device=device, dtype=torch.float32)
                        if "lpips" in want else torch.zeros(total_c, device=device))
            tiles = [(layer, p0) for layer in range(layers) for p0 in range(0, hws[layer], blocks["POINTWISE_BLOCK_P"])]
            K._pointwise_kernel[(len(tiles), n)](
                *tables, pos_off, lin_flat, chan_off,
                as_dev([t[0] for t in tiles]), as_dev([t[1] for t in tiles]), inv, terms, n, layers, total_hw,
                COUNT=count, WANT_TERMS=want_terms, WANT_STYLE="style" in want,
                BLOCK_P=blocks["POINTWISE_BLOCK_P"], BLOCK_C=blocks["CHANNEL_BLOCK"], **K.LAUNCH_OPTIONS["_pointwise_kernel"],
            )
            for slot, name in enumerate(("spatial", "lpips")):
                if name in want:
                    out[DISTANCES.index(name)] = terms[slot]
        if "style" in want:
            style = torch.zeros(pairs, n, layers, dtype=torch.float32, device=device)  # atomic sums
            step = blocks["STYLE_BLOCK_C"]
            pairs_of_blocks = [(layer, i0, j0) for layer in range(layers) for i0 in range(0, chans[layer], step)
                               for j0 in range(i0, chans[layer], step)]
            K._style_kernel[(len(pairs_of_blocks), n)](
                *tables, pos_off, *(as_dev([b[i] for b in pairs_of_blocks]) for i in range(3)),
                inv, style, n, layers, total_hw,
                COUNT=count, BLOCK_C=step, BLOCK_P=blocks["STYLE_BLOCK_P"], PRECISION=K.STYLE_DOT_PRECISION,
                **K.LAUNCH_OPTIONS["_style_kernel"],
            )
            out[DISTANCES.index("style")] = style
        if "meanpool" in want:
            chsum = torch.empty(count, n, total_c, dtype=torch.float64, device=device)  # written before read
            K._meanpool_kernel[(layers, n)](
                *tables, chan_off, chsum, out[DISTANCES.index("meanpool")],
                n, layers, total_c, COUNT=count, BLOCK_C=blocks["CHANNEL_BLOCK"], BLOCK_P=blocks["POINTWISE_BLOCK_P"],
                **K.LAUNCH_OPTIONS["_meanpool_kernel"],
            )
    return results


class TritonBackend(Backend):
    name = "triton"

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
        return reasons + dtype_and_grad_reasons(request, DTYPES)

    def compute(self, request: DistanceRequest) -> List[Terms]:
        feats = [[nchw(t) for t in lst] for lst in request.feats]  # the Triton kernels read NCHW samples
        return fused_distance_triton(feats, request.distances, request.lin)
