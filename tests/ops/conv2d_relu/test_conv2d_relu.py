"""``conv2d_relu`` (perceptual_fast/ops/conv2d_relu): oneDNN's fused convolution + ReLU gives torch's
``relu_(conv2d(x))`` bit for bit on the trunks' float32 layers, in x's layout; everything it does not
take (autograd, autocast, other dtypes, tracing, dispatch modes) runs torch's ops, with its reason."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from perceptual_fast.ops.conv2d_relu import conv2d_relu, conv2d_relu_reference, onednn_reasons
from perceptual_fast.ops.inference import torch_ops_only

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")

# (in, out, kernel, stride, padding, groups, side): squeezenet1_1's Fire convolutions, alexnet's and
# vgg16's first, a strided one, a grouped one, odd channel counts.
LAYERS = [
    (64, 16, 1, 1, 0, 1, 15), (16, 64, 3, 1, 1, 1, 15), (3, 64, 11, 4, 2, 1, 64), (3, 64, 3, 1, 1, 1, 17),
    (37, 13, 3, 2, 1, 1, 9), (32, 48, 3, 1, 1, 4, 7), (512, 64, 1, 1, 0, 1, 3),
]


def make(layer, batch, seed):
    cin, cout, k, s, p, g, side = layer
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(cin, cout, k, s, p, groups=g).requires_grad_(False)
    return conv, torch.randn(batch, cin, side, side)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("layer", LAYERS, ids=lambda v: "x".join(map(str, v)))
def test_fused_equals_torchs_conv_and_relu(layer, threads):
    """Bit for bit on channels_last batches, at one thread too, where torch's conv2d runs a kernel of
    its own for small unstrided 1x1 convolutions (those then run the reference)."""
    conv, x = make(layer, batch=3, seed=sum(layer))
    conv, x = conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        reasons = onednn_reasons(x, conv)
        torch_own_kernel = layer[2] == 1 and layer[3] == 1 and threads == 1  # torch's rule, mirrored
        assert (len(reasons) == 1 and "1x1" in reasons[0]) if torch_own_kernel else reasons == []
        got = conv2d_relu(x, conv)
        want = conv2d_relu_reference(x, conv)
    finally:
        torch.set_num_threads(previous)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert bool((want > 0).any()) and bool((want == 0).any())  # both sides of the ReLU occur
    assert torch.equal(got, want)


@pytest.mark.parametrize("why", ["grad", "float64", "autocast", "torch_ops_only", "dispatch_mode", "padding_mode", "nchw",
                                 "one_image", "unbatched"])
def test_everything_else_runs_torchs_ops_with_a_reason(why):
    conv, x = make(LAYERS[1], batch=1 if why == "one_image" else 3, seed=7)
    x = x if why == "nchw" else x.contiguous(memory_format=torch.channels_last)
    x = x[0] if why == "unbatched" else x
    if why == "grad":
        conv.requires_grad_(True)
    if why == "float64":
        conv, x = conv.double(), x.double()
    if why == "padding_mode":
        conv.padding_mode = "reflect"
    ctx = {"autocast": torch.autocast("cpu", dtype=torch.bfloat16), "torch_ops_only": torch_ops_only("conv2d_relu"),
           "dispatch_mode": FlopCounterMode(display=False)}.get(why, torch.enable_grad())
    with ctx:
        reasons = onednn_reasons(x, conv)
        got = conv2d_relu(x, conv)
        want = conv2d_relu_reference(x, conv)
    assert reasons, why
    assert got.dtype == want.dtype  # bfloat16 under autocast, as torch's conv2d gives
    assert torch.equal(got, want)
    if why == "grad":
        got.sum().backward()
        assert conv.weight.grad is not None


def test_no_oneDNN_is_a_reason(monkeypatch):
    conv, x = make(LAYERS[0], batch=2, seed=8)
    x = x.contiguous(memory_format=torch.channels_last)
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    assert any("oneDNN" in r for r in onednn_reasons(x, conv))
    assert torch.equal(conv2d_relu(x, conv), conv2d_relu_reference(x, conv))
