"""The inference-only CPU layers: ``max_pool2d`` without indices and ``conv2d_relu`` fused by oneDNN.

    flock /tmp/pf_heavy.lock python bench/inference_layers.py [--repeats 21]

In one run, interleaved (so a busy moment of the machine hits every path alike), medians:
  max_pool2d   every max pool of the LPIPS trunks and resnet50 at the Scorer's pass (192 images of
               64x64; vgg16 32), channels_last float32: ours against torch's ``max_pool2d``; bound:
               the pool's bytes (input read once, output written once) over the measured read
               bandwidth of a ``sum`` over the same input.
  trunk        ``forward_taps`` of alexnet, vgg16, squeezenet1_1 and resnet50 (channels_last, fp32,
               no_grad): with both layers (the default), without each (``torch_ops_only(op)``), with
               torch's ops only, and the bare torchvision trunk (bench/pass_size.py's bound). The
               fused ReLU shows only here: alone, a convolution's output is still in cache for the
               ReLU pass, which in a trunk it is not.
Random weights and inputs: the speed does not depend on them. Writes bench/results/inference_layers.{csv,json}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved, machine_name, write_records  # noqa: E402

import perceptual_fast as pf  # noqa: E402
from perceptual_fast.ops.inference import torch_ops_only  # noqa: E402
from perceptual_fast.ops.max_pool2d import max_pool2d  # noqa: E402
from perceptual_fast.trunks import load_trunk  # noqa: E402
from perceptual_fast.util.tables import format_table  # noqa: E402

TRUNKS = {"alexnet": 192, "vgg16": 32, "squeezenet1_1": 192, "resnet50": 192}  # images per pass


def pool_inputs(trunk: torch.nn.Module, images: int):
    """(name, module, input) of every max pool of ``trunk`` on ``images`` 64x64 images (channels_last)."""
    x = torch.randn(images, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    found = []
    with torch_ops_only():
        if hasattr(trunk, "features"):
            for i, layer in enumerate(trunk.features[: trunk.tap_after[-1] + 1]):
                if isinstance(layer, torch.nn.MaxPool2d):
                    found.append((f"features.{i}", layer, x))
                x = layer(x)
        else:  # a ResNet: its one pool follows the stem
            found.append(("maxpool", trunk.maxpool, trunk.relu(trunk.bn1(trunk.conv1(x)))))
    return found


def torchvision_trunk(name: str):
    """bench/pass_size.py's bare torchvision trunk, channels_last, or None without torchvision."""
    try:
        from pass_size import torchvision_trunk as bare
        return bare(name).eval().to(memory_format=torch.channels_last)
    except ImportError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trunks", default=",".join(TRUNKS))
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    pf.tune_cpu_allocator()
    machine = machine_name()
    records = []
    with torch.no_grad():
        for name in args.trunks.split(","):
            images = TRUNKS[name]
            trunk = load_trunk(name, weights="random", head=False).eval().to(memory_format=torch.channels_last)
            for layer, module, x in pool_inputs(trunk, images):
                k, st, p, c = module.kernel_size, module.stride, module.padding, module.ceil_mode
                runs = {"ours": lambda: max_pool2d(x, k, st, p, c), "torch": lambda: F.max_pool2d(x, k, st, p, ceil_mode=c),
                        "read": lambda: x.sum()}
                t = interleaved(runs, args.repeats)
                nbytes = (x.numel() + F.max_pool2d(x, k, st, p, ceil_mode=c).numel()) * 4
                read_bw = x.numel() * 4 / t["read"]
                records.append({"machine": machine, "kind": "max_pool2d", "trunk": name, "layer": layer, "shape": list(x.shape),
                                "torch_ms": 1e3 * t["torch"], "ours_ms": 1e3 * t["ours"], "speedup": t["torch"] / t["ours"],
                                "read_gb_s": read_bw / 1e9, "bound_ms": 1e3 * nbytes / read_bw,
                                "of_bound": nbytes / read_bw / t["ours"]})
            x = torch.randn(images, 3, 64, 64).contiguous(memory_format=torch.channels_last)
            runs = {"ours": lambda: trunk.forward_taps(x)}
            for without in ((), ("conv2d_relu",), ("max_pool2d",)):
                def ablated(without=without):
                    with torch_ops_only(*without):
                        trunk.forward_taps(x)
                runs["torch ops" if not without else f"without {without[0]}"] = ablated
            bare = torchvision_trunk(name)
            if bare is not None:
                runs["torchvision"] = lambda: bare(x)
            t = interleaved(runs, args.repeats)
            records.append({"machine": machine, "kind": "trunk", "trunk": name, "layer": "forward_taps",
                            "shape": list(x.shape), "torch_ms": 1e3 * t["torch ops"], "ours_ms": 1e3 * t["ours"],
                            "speedup": t["torch ops"] / t["ours"],
                            "without_conv2d_relu_ms": 1e3 * t["without conv2d_relu"],
                            "without_max_pool2d_ms": 1e3 * t["without max_pool2d"],
                            "torchvision_ms": 1e3 * t["torchvision"] if bare is not None else None,
                            "torchvision_over_ours": t["torchvision"] / t["ours"] if bare is not None else None})
            print(f"done {name}", file=sys.stderr)
    print(f"machine: {machine}\nchannels_last float32, no_grad, median of {args.repeats} interleaved runs\n")
    pools = [r for r in records if r["kind"] == "max_pool2d"]
    print(format_table(["trunk", "pool", "input", "torch ms", "ours ms", "speed-up", "read GB/s", "bound ms", "% of bound"],
                       [[r["trunk"], r["layer"], "x".join(map(str, r["shape"])), r["torch_ms"], r["ours_ms"], r["speedup"],
                         r["read_gb_s"], r["bound_ms"], 100 * r["of_bound"]] for r in pools], floatfmt=".2f"))
    print("\nforward_taps, ms per pass (torch ops: torch_ops_only(); without X: only X runs torch's op):")
    trunks = [r for r in records if r["kind"] == "trunk"]
    print(format_table(["trunk", "input", "torch ops", "without conv2d_relu", "without max_pool2d", "ours", "speed-up",
                        "torchvision", "torchvision / ours"],
                       [[r["trunk"], "x".join(map(str, r["shape"])), r["torch_ms"], r["without_conv2d_relu_ms"],
                         r["without_max_pool2d_ms"], r["ours_ms"], r["speedup"], r["torchvision_ms"], r["torchvision_over_ours"]]
                        for r in trunks], floatfmt=".2f"))
    write_records("inference_layers", records)


if __name__ == "__main__":
    main()
