"""tune_cpu_allocator: freed memory stays in the process (fewer page faults), and it steps aside when told to."""

import os
import subprocess
import sys
import textwrap

import pytest

from perceptual_fast.util import allocator

_HEAP = textwrap.dedent("""
    import ctypes, ctypes.util, sys, torch
    import perceptual_fast as pf

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = MallInfo2
    state = pf.tune_cpu_allocator() if sys.argv[1] == "tune" else "untouched"
    big = torch.ones((30 << 20) // 4)  # a 30 MiB tensor: mapped on its own, or from the heap?
    mapped = libc.mallinfo2().hblkhd
    del big
    # 144 MiB held at once, then freed, three times, as trunk passes do: is the freed heap kept?
    sizes = [30 << 20, 28 << 20, 30 << 20, 26 << 20, 30 << 20]
    for _ in range(3):
        tensors = [torch.ones(s // 4) for s in sizes]
        del tensors
    print(state)
    print(mapped, libc.mallinfo2().fordblks, sum(sizes))
""")


@pytest.mark.skipif(allocator._glibc() is None, reason="the C library is not glibc: nothing to tune")
def test_tuned_glibc_keeps_freed_memory(tmp_path):
    """Tuned, a 30 MiB tensor comes from the heap and 144 MiB freed stay in it (glibc's own counters,
    mallinfo2); with glibc's defaults the tensor is mapped on its own (unmapped and faulted in again at
    every use). Whether glibc then trims the freed heap, and so the page faults this saves, depends on
    what else the process holds (measured in bench/pass_size.py), so they are not asserted here."""
    script = tmp_path / "heap.py"
    script.write_text(_HEAP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != allocator.ENV_SWITCH}
    runs = {}
    for mode in ("tune", "none"):
        out = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, env=env, check=True)
        state, numbers = out.stdout.strip().splitlines()[-2:]
        runs[mode] = (state, *map(int, numbers.split()))
    state, mapped, kept, freed = runs["tune"]
    assert state.startswith("glibc, tuned: freed memory kept")
    assert mapped < 30 << 20 and kept >= freed, runs  # from the heap, and the freed heap kept
    mapped = runs["none"][1]
    assert mapped >= 30 << 20, runs  # glibc's defaults map it alone (whether they trim the heap varies)


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
