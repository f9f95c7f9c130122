"""The Triton kernels compile for real GPUs (Hopper sm_90, Ampere sm_80), checked ahead of time on
this CPU machine: TRITON_INTERPRET=1 runs kernel bodies as Python and accepts code the compiler
rejects (a kernel reading a module-level int compiled nowhere). The generated code is also checked
for what the numerics need: int64 sample offsets, no FMA contraction where equal maps must give
exactly 0, float32 Gram tiles into tl.dot.

The compiles run in a subprocess without TRITON_INTERPRET (this test session imports the kernels
as interpreted functions) and with torch made unimportable: the kernel folder needs only triton,
which is how CI also checks them against the GPU image's older Triton.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

if not os.environ.get("CI"):  # in CI a missing triton is a failure, not a skip
    pytest.importorskip("triton", exc_type=ModuleNotFoundError)

AOT = Path(__file__).resolve().parents[3] / "kernels" / "triton" / "aot.py"
_NO_TORCH = "import runpy, sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Every kernel, dtype and mode compiled for sm_90 and sm_80, with one autotuner config per kernel
    except the style kernel (all four: its shared memory grows with the stages and is checked against
    each arch's limit), as results JSON; sm_90 TTIR / PTX per kernel and dtype. The other configs
    differ in warps and pipelining only; CI compiles all of them for sm_90 with the GPU image's Triton
    (.ci/run), and compiling them here too, cold, took 4 minutes of CI's 15 with Triton 3.8."""
    out = tmp_path_factory.mktemp("aot")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-c", _NO_TORCH, str(AOT), "--arch", "90", "80", "--one-config", "90", "80", "--jobs", "2",
           "--json", str(out / "results.json"), "--dump", str(out / "asm")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if not (out / "results.json").exists():
        pytest.fail(f"aot.py did not run (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads((out / "results.json").read_text())["results"], out / "asm", done


def test_every_kernel_variant_compiles_for_hopper_and_ampere(compiled):
    results, _, done = compiled
    assert {r["arch"] for r in results} == {90, 80}
    # per arch: dtypes x counts x (pointwise modes + 4 style configs + meanpool + dists), and the backward's
    assert all(sum(r["arch"] == arch for r in results) == 3 * 2 * (3 + 4 + 1 + 1) + 2 * (3 + 1) for arch in (90, 80))
    assert {r["variant"].split("[")[0] for r in results if "backward" not in r["variant"]} == {
        "_pointwise_kernel", "_style_kernel", "_meanpool_kernel", "_dists_kernel"}
    backward = {r["variant"].split("[")[0] for r in results if "backward" in r["variant"]}
    assert backward == {"_pointwise_backward_kernel", "_meanpool_backward_kernel"}
    failures = [f"sm_{r['arch']} {r['variant']}: {r['error']}" for r in results if r["error"]]
    assert not failures, "\n".join(failures)
    assert all(r["cubin_bytes"] > 0 for r in results)
    assert done.returncode == 0, done.stderr[-2000:]


def _asm(compiled, kernel, element, ext):
    return (compiled[1] / f"{kernel}.{element}.sm90.{ext}").read_text()


def _elements(kernel):
    """The map dtypes a kernel is compiled for: the backward kernels take float32 maps only."""
    return ("float32",) if "backward" in kernel else ("float32", "bfloat16", "float16")


@pytest.mark.parametrize("kernel", ["_pointwise_kernel", "_style_kernel", "_meanpool_kernel", "_dists_kernel",
                                    "_pointwise_backward_kernel", "_meanpool_backward_kernel"])
def test_the_sample_index_is_widened_to_int64_before_any_offset(compiled, kernel):
    """Offsets like n * TOTAL_HW or (k * N + n) * TOTAL_C wrap at 2^31 in int32."""
    for element in _elements(kernel):
        ttir = _asm(compiled, kernel, element, "ttir")
        pid = re.search(r"(%\w+) = tt\.get_program_id y : i32", ttir)
        assert pid, f"{kernel} has no sample axis"
        assert re.search(rf"arith\.extsi {pid.group(1)} : i32 to i64", ttir), f"{kernel} ({element}) uses an int32 sample index"


@pytest.mark.parametrize("kernel", ["_pointwise_kernel", "_meanpool_kernel", "_pointwise_backward_kernel",
                                    "_meanpool_backward_kernel"])
def test_kernels_whose_equal_maps_must_give_zero_have_no_fma(compiled, kernel):
    """a * ia - b * ib (pointwise) and ma * scale_a - mx * scale_x (meanpool) as an FMA keep the
    rounding error of one product only: equal maps would not give exactly 0 (nor a zero gradient)."""
    for element in _elements(kernel):
        ptx = _asm(compiled, kernel, element, "ptx")
        assert re.search(r"\bmul(\.rn)?\.f(32|64)", ptx)
        assert not re.search(r"\bfma\.rn(\.ftz)?\.f(32|64)", ptx), f"{kernel} ({element}) contracts to FMA"


def test_style_gram_tiles_stay_float32_for_16bit_maps(compiled):
    """Rounding normalised tiles to bf16 biases style (test_style_rounding.py)."""
    for element in ("bfloat16", "float16"):
        dots = re.findall(r"tt\.dot .*", _asm(compiled, "_style_kernel", element, "ttir"))
        assert dots
        for dot in dots:
            assert "inputPrecision = tf32x3" in dot and "bf16" not in dot and "f16" not in dot.replace("f32", ""), dot
