"""GPU slot claiming with fake device ids: no two jobs share a device; claims die with jobs;
SLURM GPU jobs use the devices SLURM pinned without waiting for other allocations."""

import json
import subprocess
import sys

import pytest
import yaml

from comm_repro import gpu

CLAIM = (
    "from comm_repro.gpu import claim_gpu; import sys; print(claim_gpu(sys.argv[1]), flush=True)"
)


@pytest.fixture(autouse=True)
def workstation(monkeypatch):
    """No SLURM job around the claims unless a test sets one (the suite may run in one)."""
    monkeypatch.delenv(gpu.SLURM_JOB_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.fixture
def release_claims():
    held = list(gpu._held)
    yield
    for handle in gpu._held[len(held) :]:
        handle.close()
    gpu._held[:] = held


def slurm_job(monkeypatch, job_id: str, devices: str) -> None:
    """The environment SLURM gives a job that was allocated GPUs."""
    monkeypatch.setenv(gpu.SLURM_JOB_ENV, job_id)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", devices)
    monkeypatch.setenv(gpu.GPU_IDS_ENV, devices)


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


def test_a_slurm_job_uses_its_pinned_device_without_a_lock(tmp_path, monkeypatch, release_claims):
    locks = tmp_path / "locks"  # on a shared filesystem, every node's device 0 would meet here
    slurm_job(monkeypatch, "101", "0")
    assert gpu.claim_gpu(locks, timeout_s=0) == 0
    slurm_job(monkeypatch, "102", "0")  # another allocation: another device, also named 0
    assert gpu.claim_gpu(locks, timeout_s=0) == 0
    assert not locks.exists()


def test_jobs_in_one_slurm_allocation_claim_distinct_devices(tmp_path, monkeypatch, release_claims):
    # The local executor inside one allocation of two GPUs: its jobs share those two devices.
    slurm_job(monkeypatch, "201", "0,1")
    assert gpu.claim_gpu(tmp_path) == 0
    assert gpu.claim_gpu(tmp_path) == 1
    with pytest.raises(TimeoutError, match="slurm-201"):
        gpu.claim_gpu(tmp_path, poll_s=0.05, timeout_s=0.1)
    slurm_job(monkeypatch, "202", "0,1")  # a job of another allocation does not wait for them
    assert gpu.claim_gpu(tmp_path, timeout_s=0) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slurm-201", "slurm-202"]


def test_a_slurm_job_without_pinned_devices_claims_as_on_a_workstation(
    tmp_path, monkeypatch, release_claims
):
    monkeypatch.setenv(gpu.SLURM_JOB_ENV, "301")  # no CUDA_VISIBLE_DEVICES: SLURM gave no GPU
    monkeypatch.setenv(gpu.GPU_IDS_ENV, "4")
    assert gpu.claim_gpu(tmp_path) == 4
    assert (tmp_path / "gpu4.lock").exists()


@pytest.mark.parametrize("command", ["pretrain", "probe"])
def test_a_claimed_device_is_the_jobs_device(
    tmp_path, monkeypatch, capsys, release_claims, command
):
    """With --gpu-lock-dir the job computes on the device it claimed, whatever train.device
    says (the tiny run's is cpu)."""
    from conftest import tiny_run

    from comm_repro import train
    from comm_repro.cli import main
    from comm_repro.errors import UserError

    monkeypatch.setenv(gpu.GPU_IDS_ENV, "3")
    seen = []

    def compute(train_cfg, device=None):
        seen.append((train_cfg["device"], device))
        raise UserError("stopped")

    monkeypatch.setattr(train, "resolve_compute", compute)
    run = tmp_path / "run"
    run.mkdir()
    (run / train.RUN_RECORD).write_text(json.dumps(tiny_run()))
    train.save_atomic({"model": {}}, run / train.MODEL)  # never loaded into a method here
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({k: v for k, v in tiny_run().items() if k != "probe"}))
    args = {
        "pretrain": ["--settings", str(settings), "--out", str(tmp_path / "new")],
        "probe": ["--run", str(run), "--out", str(tmp_path / "probe.json")],
    }[command]
    locks = tmp_path / "locks"
    code = main([command, *args, "--data", str(tmp_path), "--gpu-lock-dir", str(locks)])
    assert code == 2
    assert seen == [("cpu", "cuda:3")]
    err = capsys.readouterr().err
    assert "claimed cuda:3" in err and "stopped" in err
    assert (locks / "gpu3.lock").exists()
