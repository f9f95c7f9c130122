"""The CPU kernels' ISA variants side by side, and the dispatched default against a -march=native build.

    python bench/cpu_isa.py [--repeats 7] [--native-so PATH]

The fused op (backend ``cpp``, all four distances, triplets, batch 64 at the alexnet and vgg16 tap
shapes of 64x64 inputs, float32 NCHW) and its backward (lpips + spatial + meanpool, gradient w.r.t.
the reference maps), timed under every variant this CPU runs (``_C.set_cpu_isa``) and under a
``-DPERCEPTUAL_FAST_NATIVE=ON`` build of ``_C`` (built here into a temporary folder unless
``--native-so`` names one), loaded in a child process in place of the installed one. Medians of
--repeats calls after a warm-up. Writes bench/results/cpu_isa.{csv,json}.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import importlib.machinery, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("perceptual_fast._C", sys.argv[1],
                                              loader=importlib.machinery.ExtensionFileLoader("perceptual_fast._C", sys.argv[1]))
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["perceptual_fast._C"] = module  # before perceptual_fast imports its own
sys.path.insert(0, sys.argv[2])
import cpu_isa
print(json.dumps(cpu_isa.timings(int(sys.argv[3]))))
"""


def timings(repeats: int) -> dict:
    """{case: seconds} for the forward and backward of the op at the alexnet and vgg16 tap shapes."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from cases import DISTANCES, tap_features, tap_lin

    import perceptual_fast as pf

    out = {}
    for net in ("alexnet", "vgg16"):
        feats = tap_features(net, 3)
        lin = tap_lin(feats)

        def forward():
            with torch.no_grad():
                pf.fused_distance(*feats, distances=DISTANCES, lin=lin, backend="cpp")

        def backward():
            x = [t.detach().requires_grad_() for t in feats[0]]
            terms = pf.fused_distance(x, feats[1], feats[2], distances=("lpips", "spatial", "meanpool"), lin=lin, backend="cpp")
            total = sum(v.sum() for t in terms for v in t.values())
            start = time.perf_counter()
            total.backward()
            return time.perf_counter() - start

        for label, fn in ((f"{net} forward", forward), (f"{net} backward", backward)):
            fn()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                inner = fn()
                times.append(inner if inner is not None else time.perf_counter() - start)
            out[label] = sorted(times)[len(times) // 2]
    return out


def build_native(folder: Path) -> Path:
    """_C built with -DPERCEPTUAL_FAST_NATIVE=ON into ``folder``: the .so's path."""
    import pybind11

    build = folder / "build"
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), "-DPERCEPTUAL_FAST_NATIVE=ON", "-DPERCEPTUAL_FAST_CUDA=OFF",
                    "-DCMAKE_BUILD_TYPE=Release", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
                    f"-DPython_EXECUTABLE={sys.executable}"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 1)], check=True, capture_output=True)
    return Path(glob.glob(str(build / "_C*.so"))[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--native-so", type=Path, default=None,
                    help="a -DPERCEPTUAL_FAST_NATIVE=ON _C to compare (default: build one)")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from common import machine_name, write_records

    from perceptual_fast import _C
    from perceptual_fast.util.tables import format_table

    columns = {}
    default = _C.cpu_isa()
    for name, runs in _C.cpu_isa_variants():
        if runs:
            _C.set_cpu_isa(name)
            columns[name + (" (default)" if name == default else "")] = timings(args.repeats)
    _C.set_cpu_isa(default)
    with tempfile.TemporaryDirectory() as tmp:
        native = args.native_so or build_native(Path(tmp))
        child = subprocess.run([sys.executable, "-c", CHILD, str(native), str(Path(__file__).parent), str(args.repeats)],
                               capture_output=True, text=True, check=True)
        columns["-march=native build"] = json.loads(child.stdout.strip().splitlines()[-1])
    cases = list(next(iter(columns.values())))
    default_column = next(k for k in columns if k.endswith("(default)"))
    rows = [[case, *(1000 * columns[c][case] for c in columns),
             columns[default_column][case] / columns["-march=native build"][case]] for case in cases]
    print(f"cpu_isa: fused op (triplets, batch 64, 64x64 tap shapes, float32 NCHW), ms; {machine_name()}")
    print(format_table(["case", *columns, "default / native"], rows, floatfmt=".2f"))
    write_records("cpu_isa", [{"case": case, "variant": c, "ms": 1000 * columns[c][case], "machine": machine_name()}
                              for case in cases for c in columns])


if __name__ == "__main__":
    main()
