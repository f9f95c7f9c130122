"""Ahead-of-time compile of every Triton kernel of fused_distance.py for a GPU target, down to a
cubin, with the GPU block sizes and every dtype / constexpr / warp configuration the launcher
(perceptual_fast/backends/triton_backend.py) can produce. It needs no GPU and no torch, only
triton, so CI can check on a CPU machine that the kernels compile for Hopper (sm_90) and Ampere
(sm_80) with the Triton it has and with an older one (the TRITON_INTERPRET=1 tests cannot tell:
the interpreter runs kernel bodies as Python and accepts what the compiler rejects).

    python kernels/triton/aot.py --arch 90 80        # table of kernels, shared memory; exit 1 on any failure

Each compile also checks the kernel's static shared memory against the target's per-block limit
(a kernel over it compiles but fails at launch).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

try:
    from . import fused_distance as K
except ImportError:  # run as a script, where triton may be the only package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fused_distance as K  # type: ignore[no-redef]

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.autotuner import Autotuner

SHARED_LIMIT = {90: 232448, 80: 166912, 89: 101376, 86: 101376}
"""Most shared memory (bytes) one block may use on each compute capability."""

ELEMENTS = {"float32": "*fp32", "bfloat16": "*bf16", "float16": "*fp16"}
"""The map dtypes the launcher accepts, as Triton pointer types."""

_TABLE, _F32 = "*i64", "*fp32"


@dataclass(frozen=True)
class Variant:
    """One compile: a kernel, its map dtype, its constexprs and its warps / stages (the other launch
    options are the kernel's ``LAUNCH_OPTIONS``, as the launcher passes them)."""

    kernel: str
    element: str
    constexprs: Dict[str, object] = field(hash=False)
    num_warps: int = 4
    num_stages: int = 3

    def label(self) -> str:
        flags = ",".join(f"{k}={v}" for k, v in self.constexprs.items() if not k.startswith("BLOCK"))
        return f"{self.kernel}[{self.element}; {flags}; warps={self.num_warps}, stages={self.num_stages}]"


def _signatures(element: str) -> Dict[str, Dict[str, str]]:
    """Argument types of each kernel (non-constexpr arguments), as the launcher passes them."""
    maps = ELEMENTS[element]
    tables = dict(base=maps, map_off=_TABLE, map_stride=_TABLE, chans=_TABLE, hws=_TABLE)
    return {
        "_pointwise_kernel": dict(tables, pos_off=_TABLE, lin=_F32, lin_off=_TABLE, tile_layer=_TABLE, tile_p0=_TABLE,
                                  inv=_F32, terms=_F32, N="i32", L="i32", TOTAL_HW="i32"),
        "_style_kernel": dict(tables, pos_off=_TABLE, blk_layer=_TABLE, blk_i0=_TABLE, blk_j0=_TABLE, inv=_F32,
                              style=_F32, N="i32", L="i32", TOTAL_HW="i32"),
        "_meanpool_kernel": dict(tables, chan_off=_TABLE, chsum="*fp64", meanpool=_F32, N="i32", L="i32", TOTAL_C="i32"),
        "_dists_kernel": dict(tables, chan_off=_TABLE, weights=_F32, dists=_F32, N="i32", L="i32"),
        "_meanpool_backward_kernel": dict(tables, chan_off=_TABLE, chsum="*fp64", grad_meanpool=_F32, spread=_F32,
                                          N="i32", L="i32", TOTAL_C="i32"),
        "_pointwise_backward_kernel": dict(tables, lin=_F32, lin_off=_TABLE, tile_layer=_TABLE, tile_p0=_TABLE,
                                           grad_spatial=_F32, grad_lpips=_F32, spread=_F32, chan_off=_TABLE, grads=_F32,
                                           grad_off=_TABLE, NEED="i32", N="i32", L="i32", TOTAL_C="i32", TOTAL_HW="i32"),
    }


def variants(all_configs: bool = True) -> List[Variant]:
    """Every (kernel, dtype, constexprs, warps, stages) the launcher can produce on a GPU; with
    ``all_configs`` False, one autotuner config per kernel except the style kernel (whose shared
    memory, checked against the arch's limit, grows with the stages)."""
    b = K.GPU_BLOCKS
    out = []
    style_configs = [(c.num_warps, c.num_stages) for c in K.GPU_WARP_CONFIGS]
    configs = style_configs if all_configs else style_configs[:1]
    for element, count in itertools.product(ELEMENTS, (2, 3)):
        for terms, style in ((True, False), (False, True), (True, True)):
            for warps, stages in configs:
                out.append(Variant("_pointwise_kernel", element,
                                   dict(COUNT=count, WANT_TERMS=terms, WANT_STYLE=style, BLOCK_P=b["POINTWISE_BLOCK_P"],
                                        BLOCK_C=b["CHANNEL_BLOCK"]), warps, stages))
        for warps, stages in style_configs:
            out.append(Variant("_style_kernel", element,
                               dict(COUNT=count, BLOCK_C=b["STYLE_BLOCK_C"], BLOCK_P=b["STYLE_BLOCK_P"],
                                    PRECISION=K.STYLE_DOT_PRECISION), warps, stages))
        # not autotuned: Triton's default launch options
        out.append(Variant("_meanpool_kernel", element,
                           dict(COUNT=count, BLOCK_C=b["CHANNEL_BLOCK"], BLOCK_P=b["POINTWISE_BLOCK_P"])))
        out.append(Variant("_dists_kernel", element, dict(COUNT=count, BLOCK_C=b["CHANNEL_BLOCK"], BLOCK_P=b["DISTS_BLOCK_P"])))
    for count in (2, 3):  # the backward kernels take float32 maps only
        for terms, meanpool in ((True, False), (False, True), (True, True)):
            for warps, stages in configs:
                out.append(Variant("_pointwise_backward_kernel", "float32",
                                   dict(COUNT=count, WANT_TERMS=terms, WANT_MEANPOOL=meanpool,
                                        BLOCK_P=b["POINTWISE_BLOCK_P"], BLOCK_C=b["CHANNEL_BLOCK"]), warps, stages))
        out.append(Variant("_meanpool_backward_kernel", "float32",
                           dict(COUNT=count, BLOCK_C=b["CHANNEL_BLOCK"], BLOCK_P=b["POINTWISE_BLOCK_P"])))
    return out


@dataclass
class Result:
    arch: int
    variant: str
    shared: int = 0
    cubin_bytes: int = 0
    seconds: float = 0.0
    error: Optional[str] = None


def compile_kernel(v: Variant, arch: int):
    """``v`` compiled for ``sm_<arch>``: Triton's CompiledKernel (``.asm`` has ttir, ptx, cubin)."""
    kernel = getattr(K, v.kernel)
    fn = kernel.fn if isinstance(kernel, Autotuner) else kernel  # the JITFunction under the autotuner
    signature = dict(_signatures(v.element)[v.kernel])
    signature.update({name: "constexpr" for name in v.constexprs})
    src = ASTSource(fn=fn, signature=signature, constexprs=dict(v.constexprs))
    options = dict(num_warps=v.num_warps, num_stages=v.num_stages, **K.LAUNCH_OPTIONS[v.kernel])
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)


def compile_variant(v: Variant, arch: int) -> Result:
    """Compiles ``v`` for ``sm_<arch>`` down to a cubin; the error, if any, in the result."""
    t0 = time.perf_counter()
    limit = SHARED_LIMIT.get(arch, SHARED_LIMIT[80])
    try:
        compiled = compile_kernel(v, arch)
        cubin, shared = compiled.asm["cubin"], int(compiled.metadata.shared)
        error = f"uses {shared} bytes of shared memory; sm_{arch} allows {limit}" if shared > limit else None
        return Result(arch, v.label(), shared, len(cubin), time.perf_counter() - t0, error)
    except Exception as err:  # noqa: BLE001 - every failure is reported, not raised
        first = str(err).strip().splitlines()
        return Result(arch, v.label(), seconds=time.perf_counter() - t0,
                      error=f"{type(err).__name__}: {first[0] if first else ''}"[:300])


def _compile_pair(pair) -> Result:
    return compile_variant(*pair)


def compile_all(archs=(90, 80), jobs: int = 1, kernels: Optional[List[str]] = None,
                one_config_archs=()) -> List[Result]:
    """Every variant for every arch (optionally only ``kernels``; for ``one_config_archs`` one autotuner
    config per kernel, ``variants(all_configs=False)``), in ``jobs`` processes."""
    work = [(v, a) for a in archs for v in variants(a not in one_config_archs) if kernels is None or v.kernel in kernels]
    if jobs <= 1:
        return [compile_variant(v, a) for v, a in work]
    with ProcessPoolExecutor(jobs) as pool:
        return list(pool.map(_compile_pair, work))


def dump_assembly(arch: int, folder: Path) -> List[Path]:
    """Writes the TTIR and PTX of the first variant of each (kernel, dtype) compiled for ``arch`` to
    ``folder/<kernel>.<dtype>.sm<arch>.{ttir,ptx}`` (what the tests read to check the generated code)."""
    folder.mkdir(parents=True, exist_ok=True)
    first: Dict[tuple, Variant] = {}
    for v in variants():
        first.setdefault((v.kernel, v.element), v)
    written = []
    for (kernel, element), v in first.items():
        compiled = compile_kernel(v, arch)
        for ext in ("ttir", "ptx"):
            path = folder / f"{kernel}.{element}.sm{arch}.{ext}"
            path.write_text(compiled.asm[ext])
            written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[90, 80], help="compute capabilities (default: 90 80)")
    parser.add_argument("--jobs", type=int, default=2, help="compile processes (default: 2)")
    parser.add_argument("--one-config", type=int, nargs="*", default=[], metavar="ARCH",
                        help="of --arch, those compiled with one autotuner config per kernel (the style kernel with all)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--dump", type=Path, help="also write TTIR and PTX of one variant per kernel and dtype here")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("unset TRITON_INTERPRET: the interpreter compiles nothing")
    t0 = time.perf_counter()
    results = compile_all(args.arch, args.jobs, one_config_archs=tuple(args.one_config))
    failed = [r for r in results if r.error]
    width = max(len(r.variant) for r in results)
    print(f"triton {triton.__version__}: {len(results)} compiles for sm_{', sm_'.join(map(str, args.arch))} "
          f"in {time.perf_counter() - t0:.0f} s")
    for r in results:
        status = "ok" if not r.error else "FAILED: " + r.error
        print(f"sm_{r.arch}  {r.variant:<{width}}  shared {r.shared:>6} B  cubin {r.cubin_bytes:>7} B  {status}")
    print(f"{len(results) - len(failed)} compiled, {len(failed)} failed")
    if args.json:
        args.json.write_text(json.dumps({"triton": triton.__version__, "results": [asdict(r) for r in results]}, indent=1))
    if args.dump:
        dump_assembly(args.arch[0], args.dump)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
