"""GPU slot claiming with fake device ids: no two jobs share a device; claims die with jobs."""

import subprocess
import sys

import pytest

from comm_repro import gpu

CLAIM = (
    "from comm_repro.gpu import claim_gpu; import sys; print(claim_gpu(sys.argv[1]), flush=True)"
)


def test_claims_distinct_ids_then_waits(tmp_path, monkeypatch):
    monkeypatch.setenv(gpu.GPU_IDS_ENV, "3,5")
    held = list(gpu._held)
    try:
        assert gpu.claim_gpu(tmp_path) == 3
        assert gpu.claim_gpu(tmp_path) == 5
        with pytest.raises(TimeoutError, match="no free GPU among"):
            gpu.claim_gpu(tmp_path, poll_s=0.05, timeout_s=0.2)
        gpu._held.pop().close()  # the job holding device 5 ends
        assert gpu.claim_gpu(tmp_path, timeout_s=1) == 5
    finally:
        for handle in gpu._held[len(held) :]:
            handle.close()
        gpu._held[:] = held


def test_claim_is_released_when_the_process_ends(tmp_path):
    env = {"COMM_GPU_IDS": "7,2", "PATH": ""}
    # A long-running job holds device 7; a second job gets 2; after the first exits, 7 is free.
    holder = subprocess.Popen(
        [sys.executable, "-c", CLAIM + "; import time; time.sleep(30)", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout.readline().strip() == "7"
        second = subprocess.run(
            [sys.executable, "-c", CLAIM, str(tmp_path)], capture_output=True, text=True, env=env
        )
        assert second.stdout.strip() == "2", second.stderr
    finally:
        holder.kill()  # SIGKILL: the kernel drops the flock with the process
        holder.wait()
    again = subprocess.run(
        [sys.executable, "-c", CLAIM, str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert again.stdout.strip() == "7", again.stderr


def test_bad_id_list_is_reported(monkeypatch):
    monkeypatch.setenv(gpu.GPU_IDS_ENV, "0,x")
    with pytest.raises(ValueError, match="COMM_GPU_IDS"):
        gpu.candidate_ids()
