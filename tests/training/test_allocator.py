"""Training keeps freed large blocks mapped (glibc) instead of faulting in
fresh pages on every pass, and hands the memory back afterwards.

Measured with the C library's own malloc, so the count of page faults is
exact: a 100 MB block is what glibc serves with mmap and unmaps on free by
default (torch's LSTM workspace for a full batch is such a block; the
effect on training time is in docs/performance.md)."""

import json
import platform
import subprocess
import sys

from forecaster.training import allocator

# A fresh interpreter: the heap of a long test session would blur the counts.
MEASURE = r"""
import ctypes, json, resource
from forecaster.training import allocator

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 100 << 20

def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

def faults_per_pass(passes=4):
    faults = []
    for _ in range(passes):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(SIZE)
        ctypes.memset(block, 1, SIZE)  # touch every page, as a pass writes its workspace
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return faults

with allocator.reuse_freed_memory() as applied:
    inside, kept = faults_per_pass(), rss_bytes()
outside = faults_per_pass()
print(json.dumps({"applied": applied, "inside": inside, "outside": outside, "returned": kept - rss_bytes()}))
"""


def test_freed_blocks_stay_mapped_while_training_only_and_go_back_after():
    run = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, check=True)
    m = json.loads(run.stdout)
    if platform.libc_ver()[0] != "glibc":  # no mallopt: the right behaviour is to change nothing
        assert m["applied"] is False
        return
    assert m["applied"]
    # Inside: the first pass grows the heap, every later one reuses its pages.
    assert m["inside"][0] > 0 and m["inside"][1:] == [0, 0, 0]
    # Outside (glibc's own thresholds again): each pass maps and faults its block anew.
    assert all(f > 0 for f in m["outside"])
    assert m["returned"] > 50 << 20  # the kept block went back to the OS on leaving


def test_without_glibc_nothing_changes(monkeypatch):
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    with allocator.reuse_freed_memory() as applied:
        assert applied is False
