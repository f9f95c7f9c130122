"""The ``cuda`` backend: kernels/cuda device code launched from csrc/ (perceptual_fast._C built with CUDA).

Takes raw device pointers and torch's current CUDA stream of the tensors' own device; float32,
bfloat16 or float16 maps, float32 accumulation. The work lists and scratch live in a workspace
tensor from torch's caching allocator (so the kernels never allocate outside it). At most
``max_batch`` samples per call (CUDA's grid axis 1): the dispatcher splits bigger batches.
Backward (kernels/cuda/fused_distance_backward.cuh): lpips, spatial and meanpool for float32 maps;
style's gradient is autograd of the reference. Available only when the extension was built with
PERCEPTUAL_FAST_CUDA.
"""

from __future__ import annotations

from typing import List, Sequence

import torch

from . import autograd
from .autograd import Grads
from .backend import Backend, DistanceRequest, Terms
from .extension import KernelCall, extension_kernel_reasons, load_extension

_ELEMENT = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
_WORKSPACE_ALIGN = 256  # bytes, as csrc/fused_distance_cuda.cu requires


def _workspace(nbytes: int, device: torch.device) -> tuple:
    """(tensor, aligned address): device memory from torch's caching allocator, 256-byte aligned."""
    # The caching allocator's blocks are 512-byte aligned; the slack keeps the alignment explicit.
    workspace = torch.empty(nbytes + _WORKSPACE_ALIGN, dtype=torch.uint8, device=device)
    return workspace, workspace.data_ptr() + (-workspace.data_ptr() % _WORKSPACE_ALIGN)


def fused_distance_cuda(request: DistanceRequest) -> List[Terms]:
    """Runs ``request`` on the CUDA kernels: one ``{name: [N, L]}`` float32 per comparison."""
    ext = load_extension()
    call = KernelCall.prepare(request, _ELEMENT, channels_last_ok=False)  # the CUDA kernels read NCHW
    device = call.out.device
    args = (call.rows, call.batch, call.count, call.mask, call.element, call.out.data_ptr())
    with torch.cuda.device(device):
        nbytes = ext.fused_distance_cuda_workspace_bytes(*args)
        workspace, address = _workspace(nbytes, device)
        ext.fused_distance_cuda(*args, address, nbytes, torch.cuda.current_stream(device).cuda_stream)
    return call.results(request.distances)


def _kernel_grads(request: DistanceRequest, grad_terms: List[Terms], needs: Sequence[Sequence[bool]]) -> Grads:
    """The backward kernels' gradients (of ``request``'s lpips, spatial and meanpool), float32 NCHW."""
    ext = load_extension()
    call, rows, grads = KernelCall.prepare_backward(request, _ELEMENT, False, grad_terms, needs)  # the kernels read NCHW
    device = call.out.device
    args = (call.rows, call.batch, call.count, call.mask, call.element, call.out.data_ptr(), rows)
    with torch.cuda.device(device):
        nbytes = ext.fused_distance_backward_cuda_workspace_bytes(*args)
        workspace, address = _workspace(nbytes, device)
        ext.fused_distance_backward_cuda(*args, address, nbytes, torch.cuda.current_stream(device).cuda_stream)
    return grads


class CudaBackend(Backend):
    name = "cuda"
    max_batch = 65535  # csrc/fused_distance.h kMaxCudaBatch
    has_backward = True

    def unsupported(self, request: DistanceRequest) -> List[str]:
        return extension_kernel_reasons(request, "cuda", _ELEMENT, needs_cuda_build=True, grad_dtypes=(torch.float32,))

    def compute(self, request: DistanceRequest) -> List[Terms]:
        return fused_distance_cuda(request)

    def backward(self, request: DistanceRequest, grad_terms: List[Terms], needs: Sequence[Sequence[bool]]) -> Grads:
        return autograd.kernel_and_reference_grads(request, grad_terms, needs, _kernel_grads)
