"""Freed buffers are reused instead of being page-faulted in again at every training step."""

import subprocess
import sys

import pytest

# A step-like loop (a batch, a convolution, a reduction) run six times; prints the minor page
# faults of the last five, after the first has grown the heap.
PROGRAM = """
import resource, sys, torch
if sys.argv[1] == "reuse":
    from comm_repro.memory import reuse_freed_memory
    assert reuse_freed_memory()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
weight = torch.randn(64, 3, 5, 5)
for step in range(6):
    if step == 1:
        before = faults()
    x = torch.randn(64, 3, 128, 128)
    y = torch.nn.functional.conv2d(x, weight, padding=2).relu()
    (y * 2).sum()
    del x, y
print(faults() - before)
"""


def steady_state_faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_reuse_keeps_step_buffers_resident():
    default, reuse = steady_state_faults("default"), steady_state_faults("reuse")
    # glibc maps each large buffer afresh: every step faults all of its ~1 GB in again.
    assert default > 5 * 200_000
    assert reuse < default / 4
