"""The precision a Scorer runs in (perceptual_fast/util/precision.py): the choice of "auto" with the
hardware probes mocked, the once-only warning for a bf16 trunk the CPU would emulate, fp16 on CUDA
only, and bf16 / fp16 autocast reaching the trunk."""

import warnings

import pytest
import torch

import perceptual_fast as pf
from perceptual_fast.util import precision as P


@pytest.fixture
def probes(monkeypatch):
    """Set what the hardware probes report: probes(cpu_bf16=..., cuda_bf16=...)."""
    monkeypatch.setattr(P, "_warned", set())

    def set_(cpu_bf16=False, cuda_bf16=False):
        monkeypatch.setattr(P, "cpu_bf16_native", lambda: cpu_bf16)
        monkeypatch.setattr(P, "cuda_bf16", lambda device: cuda_bf16)

    return set_


@pytest.mark.parametrize("cpu_bf16, want", [(True, "bf16"), (False, "fp32")])
def test_auto_on_the_cpu_takes_bf16_only_where_onednn_runs_it_natively(probes, cpu_bf16, want):
    probes(cpu_bf16=cpu_bf16)
    assert P.resolve_precision("auto", torch.device("cpu")) == want


@pytest.mark.parametrize("cuda_bf16, want", [(True, "bf16"), (False, "fp32")])
def test_auto_on_cuda_takes_bf16_where_the_gpu_has_it(probes, cuda_bf16, want):
    probes(cuda_bf16=cuda_bf16)
    assert P.resolve_precision("auto", torch.device("cuda")) == want
    assert P.resolve_precision("auto", torch.device("mps")) == "fp32"


def test_bf16_the_cpu_would_emulate_warns_once_and_says_what_to_do(probes):
    probes(cpu_bf16=False)
    with pytest.warns(UserWarning, match=r"no native bf16 here .* emulated, several times slower than fp32.*precision='fp32'"):
        assert P.resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time: silent
        P.resolve_precision("bf16", torch.device("cpu"))
    probes(cpu_bf16=True)
    P._warned.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native: no warning at all
        P.resolve_precision("bf16", torch.device("cpu"))


def test_fp16_is_for_cuda_and_unknown_names_are_refused():
    with pytest.raises(ValueError, match="precision 'fp16' runs on CUDA devices"):
        pf.Scorer("alexnet", weights="random", precision="fp16")
    with pytest.raises(ValueError, match="precision 'int8' is not supported; choose one of auto, fp32, fp64, bf16, fp16"):
        pf.Scorer("alexnet", weights="random", precision="int8")


def test_the_scorer_reports_its_choice_and_runs_the_trunk_in_it(probes):
    probes(cpu_bf16=True)
    scorer = pf.Scorer("alexnet", weights="random", precision="auto")
    assert scorer.precision == "bf16" and scorer.dtype == torch.float32
    seen = []
    forward = scorer.trunk.forward_taps
    scorer.trunk.forward_taps = lambda x: seen.append({t.dtype for t in forward(x)}) or forward(x)
    x = torch.rand(2, 3, 48, 48) * 2 - 1
    d = scorer.distance(x, x.flip(-1))["spatial"]
    assert seen[-1] == {torch.bfloat16} and d.dtype == torch.float32
    probes(cpu_bf16=False)
    assert pf.Scorer("alexnet", weights="random", precision="auto").precision == "fp32"
