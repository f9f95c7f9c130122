"""tune_cpu_allocator: freed memory stays in the process (fewer page faults), and it steps aside when told to."""

import os
import subprocess
import sys
import textwrap

import pytest

from perceptual_fast.util import allocator

_FAULTS = textwrap.dedent("""
    import resource, sys, torch
    import perceptual_fast as pf
    state = pf.tune_cpu_allocator() if sys.argv[1] == "tune" else "untouched"
    # bytes held at once, then freed, as in a trunk pass; 150 MB in all, more than glibc's default trim
    # threshold (at most 64 MB), so by default the freed heap is handed back and faulted in again
    sizes = [30 << 20, 28 << 20, 30 << 20, 26 << 20, 30 << 20]
    warm = [torch.ones(s // 4) for s in sizes]
    del warm
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        tensors = [torch.ones(s // 4) for s in sizes]
        del tensors
    print(state)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / 10 / (sum(sizes) // 4096))
""")


@pytest.mark.skipif(allocator._glibc() is None, reason="the C library is not glibc: nothing to tune")
def test_tuned_glibc_keeps_freed_memory(tmp_path):
    """Allocating and freeing the same tensors again faults (almost) no pages in once tuned; it does by default."""
    script = tmp_path / "faults.py"
    script.write_text(_FAULTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != allocator.ENV_SWITCH}
    runs = {}
    for mode in ("tune", "none"):
        out = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, env=env, check=True)
        state, share = out.stdout.strip().splitlines()[-2:]
        runs[mode] = (state, float(share))
    assert runs["tune"][0].startswith("glibc, tuned: freed memory kept")
    assert runs["tune"][1] < 0.1, runs  # faulted pages per round, as a share of the pages allocated
    assert runs["none"][1] > 0.3, runs  # glibc's defaults hand the memory back and fault it in again


@pytest.mark.parametrize("env,expected", [
    ({allocator.ENV_SWITCH: "default"}, "glibc defaults (PERCEPTUAL_FAST_ALLOCATOR=default)"),
    ({"MALLOC_ARENA_MAX": "2"}, "as the MALLOC_*/GLIBC_TUNABLES environment sets it"),
    ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "preloaded (/usr/lib/libjemalloc.so.2)"),
])
def test_it_steps_aside_when_the_user_chose(env, expected, monkeypatch):
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setattr(allocator, "_glibc", lambda: pytest.fail("mallopt must not be reached"))
    for key in [k for k in os.environ if k.startswith("MALLOC_") or k in ("LD_PRELOAD", allocator.ENV_SWITCH)]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert allocator.tune_cpu_allocator() == expected == allocator.allocator_state()
    assert allocator.keeps_freed_memory() == ("jemalloc" in expected)  # what the pass-size table follows
