"""The build configuration (CMakeLists.txt, configured here, nothing compiled): the CPU kernels in
fixed ISA variants, never -march=native unless asked; CUDA built by default only where it can run
or is asked for; and what ``pf.build_info()`` / ``perceptual-fast info`` report."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import perceptual_fast as pf
from perceptual_fast import _C
from perceptual_fast.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _configure(tmp_path, *defines, env=None):
    """(compile_commands.json entries, cmake's output) of a configure of this project."""
    pybind11 = pytest.importorskip("pybind11", exc_type=ModuleNotFoundError)  # in the test extras: CI has it
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    build = tmp_path / "build"
    done = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
                           f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={sys.executable}", *defines],
                          check=True, capture_output=True, text=True, timeout=300, env=env)
    return json.loads((build / "compile_commands.json").read_text()), done.stdout


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the x86-64 variant set")
def test_the_default_build_compiles_fixed_variants_never_native(tmp_path):
    commands, _ = _configure(tmp_path, "-DPERCEPTUAL_FAST_CUDA=OFF")
    assert not any("-march=native" in c["command"] for c in commands)
    kernels = [c for c in commands if Path(c["file"]).name == "fused_distance_cpu.cpp"]
    flags = sorted(next(f for f in c["command"].split() if f.startswith("-march=")) for c in kernels)
    assert flags == ["-march=x86-64-v2", "-march=x86-64-v3", "-march=x86-64-v4"]
    assert all("-DPF_CPU_ISA=isa_" in c["command"] for c in kernels)
    dispatch = next(c for c in commands if Path(c["file"]).name == "cpu_dispatch.cpp")
    assert "-march" not in dispatch["command"]  # the dispatcher itself runs anywhere
    native, _ = _configure(tmp_path / "native", "-DPERCEPTUAL_FAST_CUDA=OFF", "-DPERCEPTUAL_FAST_NATIVE=ON")
    assert [c for c in native if "-march=native" in c["command"]]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no CUDA toolkit (nvcc) here")
def test_cuda_auto_builds_only_where_it_can_run_or_is_asked(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TORCH_CUDA_ARCH_LIST"}
    gpu = subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0 if shutil.which("nvidia-smi") else False
    commands, out = _configure(tmp_path / "auto", env=env)
    built = any(Path(c["file"]).suffix == ".cu" for c in commands)
    assert built == gpu, out
    if not gpu:
        assert "no GPU visible and TORCH_CUDA_ARCH_LIST unset: CUDA kernels not built" in out
    commands, out = _configure(tmp_path / "asked", env={**env, "TORCH_CUDA_ARCH_LIST": "8.0;9.0+PTX"})
    assert "building the CUDA kernels for 80-real;90" in out
    assert any(Path(c["file"]).suffix == ".cu" for c in commands)


def test_build_info_and_the_info_command_report_the_build_and_the_cpu(capsys):
    info = pf.build_info()
    assert info["cpu_isa"] == _C.cpu_isa() and info["cpu_isa"] in info["cpu_isa_variants"]
    assert set(info["cpu_features"]) >= {"avx2", "avx512f", "avx512bf16", "amx-bf16"} or os.uname().machine != "x86_64"
    assert info["openmp_threads"] >= 1 and info["cuda_built"] == bool(_C.has_cuda)
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert f"in use         {info['cpu_isa']}" in text and "cpu kernels" in text and "bf16" in text
    assert info["onednn_conv_relu"] == torch.backends.mkldnn.is_available()
    assert "inference      max pools without argmax indices (compiled); conv+ReLU fused by oneDNN " in text
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cpu_isa"] == info["cpu_isa"]
