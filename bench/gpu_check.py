"""GPU check of the fused op: run by bench/gpu_check.sh on a CUDA machine, one section per process.

--section correctness  the triton and cuda backends against the float64 reference (``layer_terms`` on
    .double() copies): odd shapes (C = 100, 200, 2048, 1; 17x23, 7x5, 1x1 maps) in fp32/bf16/fp16,
    pairs and triplets; exact zeros for identical inputs; 16-bit maps perturbed by 1% (style of
    triton, cuda, the float32 torch backend and float64 side by side); channels_last, batch-sliced
    and expanded inputs; a non-default stream; N = 65,535 and 65,536 samples; VGG16's taps at
    256 px, N = 1024 bf16 triplets. Tolerance: 1e-5 relative for every backend, dtype and
    distance, except triton's style on 16-bit inputs (Gram tiles through the tensor cores), whose
    error over 1e-5 is reported ("loose"), not failed; the 1% check allows 10x the float32 torch
    backend's own error. Each check records pass/fail and its max error; an exception fails that
    check only. Tables: per check, per backend/dtype/distance (max relative error), the failures.
--section timings  torch vs triton vs cuda on bf16 features at TAP_SHAPES (batch 256), pairs and
    triplets, all five distances and without style: CUDA events, medians, several GB of feature
    sets rotated so the L2 cache does not flatter, next to the measured device copy bandwidth.
--section summary  the steps gpu_check.sh ran (--steps-file), every failure; exit status 3 if any.

Results go to --out ($OUT, else bench/results): gpu_check.json (device, versions, every check,
the style side by side, timings, copy bandwidth; rewritten after every check, so a killed run
leaves what it had) and gpu_check.csv (timings). Each section keeps within --budget-s (else
$GPU_CHECK_STEP_LIMIT_S less 20 s): a check that would start too late is recorded as not run.
A backend that breaks the CUDA context (a sticky error such as an illegal address) is recorded as
failing that check; the script then restarts itself without that backend and resumes.

--cpu-dry-run (or GPU_CHECK_DRY_RUN=1) runs every code path without a GPU: CPU tensors, the
triton backend under TRITON_INTERPRET=1, the cpp backend in place of cuda, tiny stand-in shapes.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
import zlib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

DRY_RUN = "--cpu-dry-run" in sys.argv[1:] or os.environ.get("GPU_CHECK_DRY_RUN") == "1"
if DRY_RUN:
    os.environ["TRITON_INTERPRET"] = "1"  # read when triton and the Triton kernels module are imported

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "ops" / "fused_distance"))
try:
    from cases import TAP_SHAPES, feature_bytes
    from fused_distance_cases import make_feats, make_weights, reference  # the op's test cases

    import perceptual_fast as pf
    from perceptual_fast.ops.fused_distance import DistanceRequest
    from perceptual_fast.util.tables import format_table

    IMPORT_ERROR: Optional[BaseException] = None
except ImportError as err:  # the summary section still runs
    IMPORT_ERROR = err

DISTANCES = ("lpips", "spatial", "meanpool", "style", "dists")  # pf.DISTANCES (pf may not import here)
NO_STYLE = ("lpips", "spatial", "meanpool", "dists")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
RTOL = 1e-5
ZERO_FLOOR = 1e-8
"""Denominator floor of the relative error: a term below 1e-8 is compared absolutely (1e-13 at RTOL).
Terms that are mathematically 0 (C = 1 maps) come out as fp32 rounding, ~1e-14; real terms of
these checks are 1e-7 and up, except in the 1% check (style ~1e-10), which uses TINY instead."""
TINY = 1e-30
RESTART_LIMIT = 3
NOT_RUN = "not run (time)"


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of every check and of the timings; GPU_SIZES on the H200, DRY_SIZES for --cpu-dry-run."""

    shapes: list  # (C, H, W) per layer, shapes check
    shape_cases: tuple  # (count, batch): pairs are count 2, triplets count 3
    layout_layers: list
    pct_layers: list
    large_batches: tuple
    large_layers: list
    vgg_layers: list
    vgg_batch: int
    ref_chunk: int  # samples per float64 reference chunk (VGG)
    timing_shapes: dict
    timing_batch: int
    timing_set_bytes: float  # feature sets rotated per timing case, about this many bytes in all
    timing_repeats: int
    copy_bytes: int


# VGG16's LPIPS taps at 256 px: TAP_SHAPES holds them at 64 px, and VGG16 only halves the side.
VGG16_256 = [(c, 4 * h, 4 * w) for c, h, w in TAP_SHAPES["vgg16"]] if IMPORT_ERROR is None else []

GPU_SIZES = Sizes(
    shapes=[(100, 17, 23), (200, 7, 5), (2048, 1, 1), (1, 17, 23), (1, 1, 1), (2048, 7, 5)],
    shape_cases=((2, 3), (3, 3), (3, 1)),
    layout_layers=[(64, 9, 7), (48, 1, 1), (1, 5, 6), (1, 1, 1), (130, 3, 3)],
    pct_layers=[(64, 16, 16), (200, 7, 5), (512, 4, 4)],
    large_batches=(65535, 65536),
    large_layers=[(3, 2, 2), (16, 3, 3)],
    vgg_layers=VGG16_256,
    vgg_batch=int(os.environ.get("GPU_CHECK_VGG_N", "1024")),
    ref_chunk=32,
    timing_shapes=TAP_SHAPES if IMPORT_ERROR is None else {},
    timing_batch=256,
    timing_set_bytes=4e9,
    timing_repeats=15,
    copy_bytes=2**30,
)
DRY_SIZES = Sizes(
    shapes=[(10, 17, 23), (20, 7, 5), (33, 1, 1), (1, 17, 23), (1, 1, 1)],
    shape_cases=((2, 3), (3, 1)),
    layout_layers=[(16, 9, 7), (20, 1, 1), (1, 5, 6), (1, 1, 1), (33, 3, 3)],
    pct_layers=[(16, 6, 6), (33, 3, 5)],
    large_batches=(65, 66),
    large_layers=[(3, 2, 2), (5, 3, 3)],
    vgg_layers=[(c // 16, h // 16, w // 16) for c, h, w in VGG16_256],
    vgg_batch=6,
    ref_chunk=4,
    timing_shapes={net: [(max(2, c // 64), min(h, 4), min(w, 4)) for c, h, w in s] for net, s in GPU_SIZES.timing_shapes.items()},
    timing_batch=2,
    timing_set_bytes=1e5,
    timing_repeats=2,
    copy_bytes=2**26,
)


class ContextLost(RuntimeError):
    """The CUDA context is broken (a sticky error): nothing more can run in this process."""

    def __init__(self, backend: Optional[str], message: str):
        super().__init__(message)
        self.backend = backend


# --------------------------------------------------------------------------- results file


class Store:
    """gpu_check.json: read at start (other sections' results stay), rewritten after every unit of work."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            self.data = {}

    def section(self, name: str, fresh: bool) -> dict:
        if fresh or not isinstance(self.data.get(name), dict):
            self.data[name] = {}
        return self.data[name]

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        os.replace(tmp, self.path)


def json_number(x: Optional[float]):
    """A float for JSON: inf and nan as strings (strict JSON has neither)."""
    return None if x is None else (float(x) if math.isfinite(x) else str(x))


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    """What every check needs: device, sizes, the backends under test, the results, the deadline."""

    device: torch.device
    dry: bool
    sizes: Sizes
    store: Store
    sec: dict
    deadline: float
    backends: List[str] = field(default_factory=list)
    excluded: Dict[str, str] = field(default_factory=dict)

    @property
    def records(self) -> list:
        return self.sec.setdefault("records", [])

    def left(self) -> float:
        return self.deadline - time.time()

    def record(self, check, case, backend, dtype, distance, err, rtol, status, note=""):
        """One result row; FAIL and ERROR rows are printed at once."""
        rec = dict(check=check, case=case, backend=backend, dtype=dtype_name(dtype), distance=distance,
                   max_rel_err=json_number(err), rtol=rtol, status=status, note=note)
        self.records.append(rec)
        if status in ("FAIL", "ERROR"):
            print(f"  {describe_failure(rec)}", flush=True)

    def skip_reason(self, backend, feats, weights, distances) -> str:
        """Why ``backend`` does not run this request here ('' if it does)."""
        if backend in self.excluded:
            return self.excluded[backend]
        request = DistanceRequest(tuple(tuple(lst) for lst in feats), tuple(distances), **weights)
        return "; ".join(pf.ops.fused_distance.BACKENDS[backend].unsupported(request))

    def call(self, check, case, backend, feats, weights, distances, runner=None):
        """``runner`` (default run_op) on ``backend``: its terms per comparison, or None when skipped or
        failed (recorded). Raises ContextLost when the failure left the CUDA context unusable."""
        dtype = feats[0][0].dtype
        reason = self.skip_reason(backend, feats, weights, distances)
        if reason:
            self.record(check, case, backend, dtype, "-", None, None, "skipped", reason)
            return None
        try:
            return (runner or run_op)(backend, feats, weights, distances)
        except Exception as err:  # noqa: BLE001 - recorded as this check's failure
            self.record(check, case, backend, dtype, "-", None, None, "ERROR", f"{type(err).__name__}: {err}")
            traceback.print_exc(limit=4)
            self.check_device(backend)
            return None

    def check_device(self, backend: Optional[str]) -> None:
        """Raises ContextLost if the device no longer runs work (after an error in ``backend``)."""
        if not device_alive(self.device):
            raise ContextLost(backend, f"the CUDA context is unusable after an error in backend {backend}")


def describe_failure(r: dict) -> str:
    """One line for a FAIL or ERROR record."""
    where = f"{r['check']} [{r['case']}] {r['backend']} {r['dtype']}"
    if r["status"] == "ERROR":
        return f"{where}: ERROR {r['note']}"
    return f"{where} {r['distance']}: FAIL, error {fmt_err(r['max_rel_err'])} > {r['rtol']} {r['note']}".rstrip()


def device_alive(device: torch.device) -> bool:
    """Whether a trivial op still runs on ``device`` (a sticky CUDA error fails every later call)."""
    if device.type != "cuda":
        return True
    try:
        torch.cuda.synchronize(device)
        return torch.ones(1, device=device).add(1).item() == 2.0
    except Exception:  # noqa: BLE001
        return False


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dtype_name(dtype) -> str:
    if dtype is None:
        return "-"
    return {v: k for k, v in DTYPES.items()}.get(dtype, str(dtype).replace("torch.", ""))


def fmt_err(err) -> str:
    return "-" if err is None else (f"{err:.3g}" if isinstance(err, float) else str(err))


# --------------------------------------------------------------------------- data and reference


def seed_of(*parts) -> int:
    return zlib.crc32(" ".join(map(str, parts)).encode())


def run_op(backend, feats, weights, distances, sync=True) -> List[Dict[str, torch.Tensor]]:
    """``pf.fused_distance`` on ``backend`` as a list of terms per comparison; waits for the device
    (``sync``) so an asynchronous kernel error is raised here, against this backend."""
    out = pf.fused_distance(*feats, distances=distances, **weights, backend=backend)
    out = [out] if len(feats) == 2 else list(out)
    if sync:
        synchronize(feats[0][0].device)
    return out


def rel_error(got: torch.Tensor, want: torch.Tensor, floor: float = ZERO_FLOOR) -> float:
    """max |got - want| / max(|want|, floor); inf if got is not finite or has the wrong shape."""
    got = got.detach().double().to(want.device)
    if got.shape != want.shape or not bool(torch.isfinite(got).all()):
        return math.inf
    if got.numel() == 0:
        return 0.0
    return ((got - want).abs() / want.abs().clamp_min(floor)).max().item()


def tolerance(backend: str, dtype: torch.dtype, distance: str):
    """(rtol, strict): 1e-5 for every backend, dtype and distance (the kernels compute in float32 on
    the given values; the reference widens the same rounded values), but triton's style on 16-bit
    inputs (Gram tiles through the tensor cores' tl.dot) is reported, not failed, when over 1e-5."""
    loose = backend == "triton" and dtype in (torch.bfloat16, torch.float16) and distance == "style"
    return RTOL, not loose


def status_of(err: float, rtol: float, strict: bool) -> str:
    if err <= rtol:
        return "pass"
    return "FAIL" if strict or not math.isfinite(err) else "loose"


def against(want, dtype, floor=ZERO_FLOOR, rtol_of: Optional[Callable[[str, float], float]] = None):
    """A score: every comparison's max relative error against ``want`` under ``tolerance``
    (``rtol_of(distance, rtol)`` may widen the rtol)."""

    def score(backend, name, got):
        err = max(rel_error(g[name], w[name], floor) for g, w in zip(got, want))
        rtol, strict = tolerance(backend, dtype, name)
        rtol = rtol_of(name, rtol) if rtol_of else rtol
        return err, rtol, status_of(err, rtol, strict)

    return score


def evaluate(ctx: Context, check, case, feats, weights, score, distances=DISTANCES, runner=None) -> dict:
    """Runs every backend under test on ``feats`` and records ``score(backend, distance, terms)``
    per backend and distance. Returns {backend: terms per comparison} of those that ran."""
    dtype = feats[0][0].dtype
    ran = {}
    for backend in ctx.backends:
        got = ctx.call(check, case, backend, feats, weights, distances, runner)
        if got is None:
            continue
        ran[backend] = got
        for name in distances:
            err, rtol, status = score(backend, name, got)
            ctx.record(check, case, backend, dtype, name, err, rtol, status)
    return ran


# --------------------------------------------------------------------------- correctness checks


def check_shapes(ctx: Context) -> None:
    """C = 100, 200, 2048 and 1 with 17x23, 7x5 and 1x1 maps, fp32/bf16/fp16, pairs and triplets
    (batch 3 and 1), all five distances, against float64 at 1e-5."""
    for dname, dtype in DTYPES.items():
        for count, batch in ctx.sizes.shape_cases:
            case = f"{dname} count {count} batch {batch}"
            feats = make_feats(batch, ctx.sizes.shapes, count, seed_of("shapes", case), dtype=dtype, device=ctx.device)
            weights = make_weights(ctx.sizes.shapes, seed=seed_of("lin", case), device=ctx.device)
            evaluate(ctx, "shapes", case, feats, weights, against(reference(feats, weights), dtype))


def check_identical_zeros(ctx: Context) -> None:
    """Identical inputs (b and c clones of a) give exactly 0 (torch.equal) for all five distances,
    pairs and triplets, fp32 and bf16 (identical images must tie exactly in 2AFC)."""

    def exact_zero(backend, name, got):
        worst = max(g[name].abs().max().item() for g in got)
        zero = all(torch.equal(g[name], torch.zeros_like(g[name])) for g in got)
        return worst, 0.0, "pass" if zero else "FAIL"

    for dname in ("fp32", "bf16"):
        for count in (2, 3):
            case = f"{dname} count {count}"
            a = make_feats(3, ctx.sizes.shapes, 1, seed_of("zeros", case), dtype=DTYPES[dname], device=ctx.device)[0]
            feats = [a] + [[t.clone() for t in a] for _ in range(count - 1)]
            weights = make_weights(ctx.sizes.shapes, seed=seed_of("lin", case), device=ctx.device)
            evaluate(ctx, "identical_zeros", case, feats, weights, exact_zero)


def check_style_1pct(ctx: Context) -> None:
    """16-bit maps with b = a * (1 + 0.01 noise): style (and every distance) of triton, cuda, the
    float32 torch backend and float64, side by side. A 1% perturbation cancels most digits of every
    term, so the tolerance is 1e-5 or 10x the float32 torch backend's own error, whichever is larger
    (triton's 16-bit style: reported)."""
    rows = ctx.sec.setdefault("style_1pct", [])
    layers = ctx.sizes.pct_layers
    for dname in ("bf16", "fp16"):
        dtype = DTYPES[dname]
        case = f"{dname} pair batch 2, b = a * (1 + 0.01 noise)"
        feats = make_feats(2, layers, 2, seed_of("pct", dname), dtype=dtype, device=ctx.device, change=0.01, relative=True)
        weights = make_weights(layers, seed=seed_of("lin", "pct", dname), device=ctx.device)
        want = reference(feats, weights)
        fp32 = run_op("torch", feats, weights, DISTANCES)
        base = {name: rel_error(fp32[0][name], want[0][name], floor=TINY) for name in DISTANCES}
        got = evaluate(ctx, "style_1pct", case, feats, weights,
                       against(want, dtype, floor=TINY, rtol_of=lambda name, rtol: max(rtol, 10 * base[name])))
        columns = {"torch_fp32": fp32, **got}
        for layer, (c, h, w) in enumerate(layers):
            row = {"dtype": dname, "layer": f"{c}x{h}x{w}", "float64": want[0]["style"][0, layer].item()}
            for label, terms in columns.items():
                row[label] = terms[0]["style"][0, layer].item()
                row[f"{label}_rel_err"] = json_number(rel_error(terms[0]["style"][:, layer], want[0]["style"][:, layer], TINY))
            rows.append(row)
    print_style_table(rows)


def print_style_table(rows: List[dict]) -> None:
    """The 1% check's style values (sample 0) and relative errors (both samples) per backend."""
    labels = [k for k in rows[0] if k not in ("dtype", "layer", "float64") and not k.endswith("_rel_err")] if rows else []
    headers = ["dtype", "layer", "float64"] + [h for lb in labels for h in (lb, f"{lb} rel err")]
    body = [[r["dtype"], r["layer"], r["float64"]] + [x for lb in labels for x in (r.get(lb, "-"), r.get(f"{lb}_rel_err", "-"))]
            for r in rows]
    print("\nstyle, 1% perturbations (value of sample 0; relative error vs float64, max of 2 samples)")
    print(format_table(headers, body, floatfmt=".4g"))


def _channels_last(t):
    return t.contiguous(memory_format=torch.channels_last)


# Each layout makes batch-n views from maps of batch 2n; k is the list (0 = a, 1 = b, 2 = c).
LAYOUTS: Dict[str, Callable] = {
    "channels_last": lambda t, k, n: _channels_last(t[:n]),
    "channels_last a, nchw b/c": lambda t, k, n: _channels_last(t[:n]) if k == 0 else t[:n],
    "batch big[::2]": lambda t, k, n: t[::2],
    "batch big[1:4]": lambda t, k, n: t[1:n + 1],
    "channels_last big[::2]": lambda t, k, n: _channels_last(t)[::2],
    "expanded a: t[:1].expand(n)": lambda t, k, n: t[:1].expand(n, -1, -1, -1) if k == 0 else t[:n],
    "expanded a, b, c": lambda t, k, n: t[k:k + 1].expand(n, -1, -1, -1),
}


def check_layouts(ctx: Context) -> None:
    """channels_last maps (with [N, C, 1, 1] and C = 1 maps among them), mixed layouts, batch-sliced
    (big[::2], big[1:4]) and expanded (t[:1].expand(N, ...), batch stride 0) inputs, fp32 and bf16,
    pairs and triplets, against float64 of the same views."""
    n = 3
    for name, view in LAYOUTS.items():
        for dname in ("fp32", "bf16"):
            for count in (2, 3):
                case = f"{name} {dname} count {count}"
                big = make_feats(2 * n, ctx.sizes.layout_layers, count, seed_of("layout", case), dtype=DTYPES[dname],
                                 device=ctx.device)
                feats = [[view(t, k, n) for t in lst] for k, lst in enumerate(big)]
                weights = make_weights(ctx.sizes.layout_layers, seed=seed_of("lin", case), device=ctx.device)
                evaluate(ctx, "layouts", case, feats, weights, against(reference(feats, weights), DTYPES[dname]))


def side_stream_runner(device: torch.device):
    """A runner that writes its inputs and runs the op on a fresh stream, behind a ~20 ms busy wait on
    that stream: a kernel launched on another stream would read the inputs before they exist."""

    def run(backend, feats, weights, distances):
        if device.type != "cuda":  # dry run: the same code path, no streams on the CPU
            return run_op(backend, [[t.clone() for t in lst] for lst in feats], weights, distances)
        stream = torch.cuda.Stream(device=device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            if hasattr(torch.cuda, "_sleep"):
                torch.cuda._sleep(40_000_000)  # GPU cycles, ~20 ms
            copies = [[t.clone() for t in lst] for lst in feats]
            out = run_op(backend, copies, weights, distances, sync=False)
        torch.cuda.current_stream(device).wait_stream(stream)
        synchronize(device)
        return out

    return run


def check_stream(ctx: Context) -> None:
    """The op inside ``with torch.cuda.stream(s)`` on a fresh stream (inputs written on s), fp32 and
    bf16 triplets, against the same backend on the default stream (same kernels: 1e-5 for every
    distance, only the order of atomic sums may differ)."""
    for dname in ("fp32", "bf16"):
        case = f"{dname} triplet batch 3, device_count {torch.cuda.device_count() if ctx.device.type == 'cuda' else 0}"
        feats = make_feats(3, ctx.sizes.shapes, 3, seed_of("stream", dname), dtype=DTYPES[dname], device=ctx.device)
        weights = make_weights(ctx.sizes.shapes, seed=seed_of("lin", "stream", dname), device=ctx.device)
        default = {b: ctx.call("stream", case + " (default stream)", b, feats, weights, DISTANCES) for b in ctx.backends}

        def score(backend, name, got):
            if default.get(backend) is None:
                return math.inf, RTOL, "FAIL"
            err = max(rel_error(g[name], w[name].double()) for g, w in zip(got, default[backend]))
            return err, RTOL, status_of(err, RTOL, True)

        evaluate(ctx, "stream", case, feats, weights, score, runner=side_stream_runner(ctx.device))


def check_other_device(ctx: Context) -> None:
    """Tensors on cuda:1 while the current device is 0, against the float64 reference: only on a
    machine with 2+ GPUs (on one GPU, cuda:0 with current device 0 is what every check runs)."""
    count = torch.cuda.device_count() if ctx.device.type == "cuda" else 0
    ctx.sec["device_count"] = count
    if count < 2:
        ctx.record("other_device", f"device_count {count}", "-", None, "-", None, None, "skipped",
                   f"{count} CUDA device(s): nothing to check")
        return
    other = torch.device("cuda", 1)
    feats = make_feats(3, ctx.sizes.shapes, 3, seed_of("other_device"), dtype=torch.float32, device=other)
    weights = make_weights(ctx.sizes.shapes, seed=seed_of("lin", "other_device"), device=other)
    with torch.cuda.device(0):
        evaluate(ctx, "other_device", "fp32 triplet on cuda:1, current device 0", feats, weights,
                 against(reference(feats, weights), torch.float32))


def check_large_batch(ctx: Context) -> None:
    """N = 65,535 and 65,536 samples of small maps (pairs, fp32): the kernels launch samples over
    grid axis 1, at most 65,535, so the launchers must chunk; against float64."""
    for n in ctx.sizes.large_batches:
        case = f"fp32 pair N {n}"
        feats = make_feats(n, ctx.sizes.large_layers, 2, seed_of("large", n), dtype=torch.float32, device=ctx.device, chunk=n)
        weights = make_weights(ctx.sizes.large_layers, seed=seed_of("lin", "large"), device=ctx.device)
        evaluate(ctx, "large_batch", case, feats, weights, against(reference(feats, weights), torch.float32))


def check_vgg256(ctx: Context) -> None:
    """VGG16's LPIPS taps at 256 px (TAP_SHAPES' 64 px taps, sides x4), N = 1024 bf16 triplets, all
    five distances (style too), against float64 computed 32 samples at a time to bound memory."""
    s = ctx.sizes
    case = f"bf16 triplet N {s.vgg_batch}, taps {s.vgg_layers}"
    feats = make_feats(s.vgg_batch, s.vgg_layers, 3, seed_of("vgg256"), dtype=torch.bfloat16, device=ctx.device, chunk=64)
    weights = make_weights(s.vgg_layers, seed=seed_of("lin", "vgg256"), device=ctx.device)
    want = reference(feats, weights, chunk=s.ref_chunk)
    evaluate(ctx, "vgg256", case, feats, weights, against(want, torch.bfloat16))
    del feats, want
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()


CHECKS = [check_shapes, check_identical_zeros, check_style_1pct, check_layouts, check_stream, check_other_device,
          check_large_batch, check_vgg256]
"""In order; the risky ones (that may break the CUDA context or need much memory) last."""
ESTIMATE_S = {"large_batch": 15, "vgg256": 45}
"""Seconds a check is given at least on the GPU: it is skipped, not started, with less time left."""


# --------------------------------------------------------------------------- running units of work


def restart_without(ctx: Context, section: str, backend: Optional[str], unit: str) -> None:
    """Re-executes this script (same arguments, same deadline) to resume ``section`` in a fresh CUDA
    context, without ``backend``; gives up after RESTART_LIMIT restarts."""
    restarts = int(os.environ.get("GPU_CHECK_RESTARTS", "0")) + 1
    if backend:
        ctx.excluded[backend] = f"excluded: it left the CUDA context unusable in {unit}"
    ctx.sec["excluded"] = ctx.excluded
    ctx.store.save()
    if restarts > RESTART_LIMIT:
        print(f"CUDA context lost again; {RESTART_LIMIT} restarts done, giving up", flush=True)
        sys.exit(3)
    print(f"\n*** CUDA context lost in {unit} ({backend or 'backend unknown'}); restarting without it ***\n", flush=True)
    os.environ.update(GPU_CHECK_RESTARTS=str(restarts), GPU_CHECK_RESUME=section, GPU_CHECK_DEADLINE=repr(ctx.deadline))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def run_units(ctx: Context, section: str, units: Sequence, status_of_unit: Callable[[str], str]) -> None:
    """Runs (name, fn) units in order. A unit a resumed run already finished is skipped; one that would
    start too close to the deadline (ESTIMATE_S, else 5 s) is recorded as skipped; an exception fails
    that unit and the next one runs; a lost CUDA context restarts the script without the backend
    that lost it. The unit names are stored first as "planned", so a killed run shows what is missing."""
    done = ctx.sec.setdefault("units", {})
    ctx.sec["planned"] = [name for name, _ in units]
    for name, fn in units:
        if name in done:
            print(f"{name}: finished before the restart ({done[name]['status']})")
            continue
        if ctx.left() < (5 if ctx.dry else ESTIMATE_S.get(name, 5)):
            done[name] = {"status": NOT_RUN, "seconds": 0, "note": f"{ctx.left():.0f} s left of the time budget"}
            print(f"{name}: {NOT_RUN}, {ctx.left():.0f} s left of the time budget", flush=True)
            ctx.store.save()
            continue
        print(f"\n--- {section}: {name}" + (f" ({ctx.left():.0f} s of the budget left)" if ctx.left() < 1e8 else ""), flush=True)
        start, note = time.time(), ""
        try:
            fn()
        except ContextLost as lost:
            if not lost.backend:  # nothing to leave out: running this unit again would lose the context again
                done[name] = {"status": "ERROR", "seconds": round(time.time() - start, 1), "note": str(lost)}
            restart_without(ctx, section, lost.backend, name)
        except Exception as err:  # noqa: BLE001 - this unit fails, the rest still run
            traceback.print_exc(limit=6)
            note = f"{type(err).__name__}: {err}"
            ctx.record(name, "-", "-", None, "-", None, None, "ERROR", note)
            if not device_alive(ctx.device):
                done[name] = {"status": "ERROR", "seconds": round(time.time() - start, 1), "note": note}
                restart_without(ctx, section, None, name)
        done[name] = {"status": status_of_unit(name), "seconds": round(time.time() - start, 1), "note": note[:500]}
        print(f"--- {name}: {done[name]['status']} ({done[name]['seconds']} s)", flush=True)
        ctx.store.save()


def resume_records(ctx: Context) -> None:
    """On a restart, drops the records of unfinished units except the excluded backends' (their
    failure is the evidence; the other backends run those units again)."""
    done = ctx.sec.get("units", {})
    ctx.sec["records"] = [r for r in ctx.records if r["check"] in done or r["backend"] in ctx.excluded]
    if "style_1pct" not in done:
        ctx.sec.pop("style_1pct", None)


def check_status(ctx: Context, check: str) -> str:
    statuses = {r["status"] for r in ctx.records if r["check"] == check}
    for s in ("ERROR", "FAIL", "loose", "pass", "skipped"):
        if s in statuses:
            return s if s != "loose" else "pass (loose reported)"
    return "no cases"


# --------------------------------------------------------------------------- sections


def describe(ctx: Context) -> dict:
    """Device, versions and which backends run here (with reasons); printed and stored as "meta"."""
    try:
        triton_version = metadata.version("triton")
    except metadata.PackageNotFoundError:
        triton_version = None
    try:
        from perceptual_fast import _C

        build = {"has_cuda": bool(getattr(_C, "has_cuda", False)), "file": _C.__file__}
    except ImportError as err:
        build = {"error": str(err)}
    cuda = ctx.device.type == "cuda"
    meta = {
        "device": torch.cuda.get_device_name(ctx.device) if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "capability": list(torch.cuda.get_device_capability(ctx.device)) if cuda else None,
        "device_count": torch.cuda.device_count() if cuda else 0,
        "memory_gib": round(torch.cuda.get_device_properties(ctx.device).total_memory / 2**30, 1) if cuda else None,
        "python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "triton": triton_version, "perceptual_fast": pf.__file__, "extension": build, "dry_run": ctx.dry,
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
    }
    probe = [[torch.zeros(1, 1, 1, 1, device=ctx.device)]] * 2
    wanted = ["triton", "cpp" if ctx.dry else "cuda"]
    meta["unavailable"] = {b: r for b in wanted if (r := ctx.skip_reason(b, probe, {}, ("spatial",)))}
    ctx.backends = [b for b in wanted if b not in meta["unavailable"] and b not in ctx.excluded]
    meta["backends_under_test"] = ctx.backends
    ctx.store.data["meta"] = meta
    for k, v in meta.items():
        print(f"{k}: {v}")
    return meta


def section_correctness(ctx: Context) -> int:
    """Every check in CHECKS; prints per check and per backend/dtype/distance tables and the failures."""
    meta = describe(ctx)
    failures = [f"backend {b} unavailable: {r}" for b, r in meta["unavailable"].items()]
    run_units(ctx, "correctness", [(fn.__name__.removeprefix("check_"), lambda fn=fn: fn(ctx)) for fn in CHECKS],
              lambda name: check_status(ctx, name))
    units = ctx.sec.get("units", {})
    print("\nchecks")
    print(format_table(["check", "status", "seconds", "note"],
                       [[k, u["status"], u["seconds"], u.get("note", "")[:80]] for k, u in units.items()], floatfmt=".1f"))
    table = error_table([r for r in ctx.records if r["check"] != "style_1pct"])
    pct_table = error_table([r for r in ctx.records if r["check"] == "style_1pct"])
    ctx.sec["error_table"], ctx.sec["error_table_1pct"] = table, pct_table
    print_error_table("max relative error per backend / dtype / distance: every check against float64 (and the stream "
                      "check against the default stream), tolerance 1e-5", table)
    print_error_table("the same for the 1% perturbations (tolerance: 1e-5 or 10x the float32 torch backend's error)", pct_table)
    failures += [describe_failure(r) for r in ctx.records if r["status"] in ("FAIL", "ERROR")]
    failures += [f"{k}: {NOT_RUN} ({u.get('note')})" for k, u in units.items() if u["status"] == NOT_RUN]
    loose = [r for r in table + pct_table if r["status"] == "loose"]
    ctx.sec["failures"] = failures
    ctx.store.save()
    for r in loose:
        print(f"reported, not failed: {r['backend']} {r['dtype']} {r['distance']} max rel err {fmt_err(r['max_rel_err'])}")
    verdict = "every check passed" if not failures else f"{len(failures)} failure(s):\n  " + "\n  ".join(failures)
    print("\ncorrectness: " + verdict)
    return 1 if failures else 0


def print_error_table(title: str, table: List[dict]) -> None:
    print(f"\n{title}")
    print(format_table(["backend", "dtype", "distance", "max rel err", "rtol", "status", "cases", "worst case"],
                       [[r["backend"], r["dtype"], r["distance"], fmt_err(r["max_rel_err"]), r["rtol"], r["status"],
                         r["cases"], r["worst"]] for r in table]))


def error_table(records: List[dict]) -> List[dict]:
    """Max relative error per (backend, dtype, distance) over the records scored with a tolerance."""
    groups: Dict[tuple, dict] = {}
    for r in records:
        if not r["rtol"] or r["max_rel_err"] is None:
            continue
        err = float(r["max_rel_err"])
        key = (r["backend"], r["dtype"], r["distance"])
        g = groups.setdefault(key, {"backend": key[0], "dtype": key[1], "distance": key[2], "max_rel_err": -1.0,
                                    "rtol": r["rtol"], "status": "pass", "cases": 0, "worst": ""})
        g["cases"] += 1
        if r["status"] == "FAIL" or (r["status"] == "loose" and g["status"] == "pass"):
            g["status"] = r["status"]
        if err > g["max_rel_err"] or math.isnan(err):
            g["max_rel_err"], g["rtol"], g["worst"] = err, r["rtol"], f"{r['check']} [{r['case']}]"
    return [dict(g, max_rel_err=json_number(g["max_rel_err"])) for g in groups.values()]


def time_ms(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` calls after one untimed call: CUDA events on a
    GPU (device time of everything fn enqueues), the wall clock on the CPU."""
    fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def copy_bandwidth_gbs(ctx: Context) -> float:
    """Device-to-device copy rate, bytes read plus written (the bound of a memory-bound kernel)."""
    src = torch.empty(ctx.sizes.copy_bytes, dtype=torch.uint8, device=ctx.device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), 10, ctx.device)
    return 2 * src.numel() / ms / 1e6


def time_case(ctx: Context, net: str, count: int) -> None:
    """One timing row: median ms of torch, triton and cuda on bf16 taps of ``net`` (all five
    distances, and without style), over feature sets rotated so each call reads fresh memory."""
    s = ctx.sizes
    kind = "pair" if count == 2 else "triplet"
    shapes = s.timing_shapes[net]
    first = make_feats(s.timing_batch, shapes, count, seed_of("time", net, count), dtype=torch.bfloat16, device=ctx.device)
    nbytes = feature_bytes(first)
    nsets = max(2, min(16, int(s.timing_set_bytes // nbytes)))
    sets = [first] + [make_feats(s.timing_batch, shapes, count, seed_of("time", net, count, i), dtype=torch.bfloat16,
                                 device=ctx.device)
                      for i in range(1, nsets)]
    weights = make_weights(shapes, seed=seed_of("lin", net), device=ctx.device)
    row = {"net": net, "kind": kind, "batch": s.timing_batch, "dtype": "bfloat16", "mb": nbytes / 1e6, "sets": nsets}
    for backend in ["torch", *ctx.backends]:
        reason = ctx.skip_reason(backend, first, weights, DISTANCES)
        if reason:
            row[f"{backend}_note"] = reason
            continue
        for label, distances in (("all", DISTANCES), ("no_style", NO_STYLE)):
            if ctx.left() < 5:
                row["note"] = "cut short: time budget used up"
                break
            turn = itertools.count()
            fn = lambda: pf.fused_distance(*sets[next(turn) % nsets], distances=distances, **weights, backend=backend)  # noqa: E731
            try:
                ms = time_ms(fn, s.timing_repeats, ctx.device)
            except Exception as err:  # noqa: BLE001 - recorded in the row, the other backends still run
                row[f"{backend}_{label}_error"] = f"{type(err).__name__}: {err}"
                print(f"  {net} {kind} {backend} {label}: ERROR {type(err).__name__}: {err}", flush=True)
                ctx.check_device(backend)
                continue
            row[f"{backend}_{label}_ms"] = ms
            row[f"{backend}_{label}_gbs"] = nbytes / ms / 1e6
            print(f"  {net} {kind} {backend} {label}: {ms:.3f} ms ({nbytes / ms / 1e6:.0f} GB/s read)", flush=True)
    ctx.sec.setdefault("rows", []).append(row)


def section_timings(ctx: Context, out: Path) -> int:
    """Copy bandwidth, then one row per TAP_SHAPES net and pair/triplet; the table, gpu_check.csv."""
    describe(ctx)
    if "copy_gb_per_s" not in ctx.sec:
        ctx.sec["copy_gb_per_s"] = copy_bandwidth_gbs(ctx)
        print(f"device copy bandwidth: {ctx.sec['copy_gb_per_s']:.0f} GB/s (read + write)", flush=True)
    units = [(f"{net} {kind}", lambda net=net, count=count: time_case(ctx, net, count))
             for net in ctx.sizes.timing_shapes for count, kind in ((2, "pair"), (3, "triplet"))]

    def unit_status(name):
        rows = [r for r in ctx.sec.get("rows", []) if f"{r['net']} {r['kind']}" == name]
        return "ERROR" if not rows or any(k.endswith("_error") for k in rows[-1]) else "ok"

    run_units(ctx, "timings", units, unit_status)
    rows = ctx.sec.get("rows", [])
    bandwidth = ctx.sec["copy_gb_per_s"]
    names = ["torch", *ctx.backends]
    headers = (["taps of", "kind", "MB"] + [f"{b} ms" for b in names] + [f"{b} no-style ms" for b in names]
               + [f"{b} no-style %BW" for b in ctx.backends])
    body = [[r["net"], r["kind"], r["mb"]] + [r.get(f"{b}_all_ms", "-") for b in names]
            + [r.get(f"{b}_no_style_ms", "-") for b in names]
            + [100 * r[f"{b}_no_style_gbs"] / bandwidth if f"{b}_no_style_gbs" in r else "-" for b in ctx.backends]
            for r in rows]
    print(f"\ndevice copy bandwidth {bandwidth:.0f} GB/s; batch {ctx.sizes.timing_batch}, bf16 features; ms are medians "
          f"of {ctx.sizes.timing_repeats} calls; %BW: no-style read rate over the copy rate (read + write)")
    print(format_table(headers, body, floatfmt=".2f"))
    if rows:
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with open(out / "gpu_check.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, restval="")
            writer.writeheader()
            writer.writerows(rows)
    units_done = ctx.sec.get("units", {})
    failed = [k for k, u in units_done.items() if u["status"] != "ok"]
    ctx.sec["failures"] = failed
    ctx.store.save()
    print("timings: " + ("every case ran" if not failed else "not every case ran: " + ", ".join(failed)))
    return 1 if failed else 0


def section_summary(store: Store, steps_file: Optional[Path]) -> int:
    """The steps gpu_check.sh ran (name, status, exit code, seconds) and every failure recorded in
    gpu_check.json; merges the steps into it. Exit status 3 if a step or a check failed (1 is
    Python's own for a crash, after which gpu_check.sh prints the steps itself)."""
    steps = []
    if steps_file and steps_file.exists():
        for line in steps_file.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 4:
                steps.append({"step": parts[0], "status": parts[1], "rc": parts[2], "seconds": parts[3]})
    store.data["steps"] = steps
    store.save()
    meta = store.data.get("meta", {})
    print(f"\n=== summary: {meta.get('device', '?')}, torch {meta.get('torch', '?')}, triton {meta.get('triton', '?')}, "
          f"backends tested: {meta.get('backends_under_test', '?')}")
    for s in steps:
        print(f"  {s['step']:<24} {s['status']:<8} rc {s['rc']:<4} {s['seconds']} s")
    bad = [f"step {s['step']}: {s['status']}" for s in steps if s["status"] not in ("ok", "info")]
    for name in ("correctness", "timings"):
        sec = store.data.get(name, {})
        if "failures" in sec:  # the section finished
            bad += [f"{name}: {f}" for f in sec["failures"]]
            continue
        bad += [f"{name}: {describe_failure(r)}" for r in sec.get("records", []) if r["status"] in ("FAIL", "ERROR")]
        bad += [f"{name}: {u} did not finish" for u in sec.get("planned", []) if u not in sec.get("units", {})]
        if not sec:
            bad.append(f"{name}: no results")
    print("\n".join(["failures:"] + [f"  {b}" for b in bad]) if bad else "everything passed")
    return 3 if bad else 0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--section", choices=("correctness", "timings", "summary", "all"), default="all")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or Path(__file__).parent / "results"))
    p.add_argument("--budget-s", type=float, default=None, help="seconds this section may take (default: "
                   "$GPU_CHECK_STEP_LIMIT_S less 20, else unlimited)")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="CPU tensors, TRITON_INTERPRET=1, cpp in place of cuda, tiny shapes")
    p.add_argument("--steps-file", type=Path, default=None, help="summary: the tab-separated steps gpu_check.sh recorded")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    store = Store(args.out / "gpu_check.json")
    if args.section == "summary":
        return section_summary(store, args.steps_file)
    if IMPORT_ERROR is not None:
        raise IMPORT_ERROR
    dry = DRY_RUN
    if not dry and not torch.cuda.is_available():
        print("gpu_check needs a CUDA device (or --cpu-dry-run)")
        return 2
    budget = args.budget_s
    if budget is None and os.environ.get("GPU_CHECK_STEP_LIMIT_S"):
        budget = float(os.environ["GPU_CHECK_STEP_LIMIT_S"]) - 20
    deadline = float(os.environ.get("GPU_CHECK_DEADLINE") or time.time() + (budget if budget is not None else 1e9))
    device = torch.device("cpu") if dry else torch.device("cuda", torch.cuda.current_device())
    rc = 0
    sections = ("correctness", "timings") if args.section == "all" else (args.section,)
    if os.environ.get("GPU_CHECK_RESUME") in sections:  # a restart resumes where the lost context was
        sections = sections[sections.index(os.environ["GPU_CHECK_RESUME"]):]
    for section in sections:
        resumed = os.environ.get("GPU_CHECK_RESUME") == section
        ctx = Context(device, dry, DRY_SIZES if dry else GPU_SIZES, store, store.section(section, fresh=not resumed), deadline)
        ctx.excluded = dict(ctx.sec.get("excluded", {}))
        if resumed:
            resume_records(ctx)
        rc |= section_correctness(ctx) if section == "correctness" else section_timings(ctx, args.out)
    return rc


if __name__ == "__main__":
    sys.exit(main())
