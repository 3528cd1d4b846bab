"""profiles/slurm against a real SLURM cluster: one node (slurmctld, slurmd and munge from the
Debian packages) that these tests install, start and stop themselves (tests/slurm/cluster.sh).

The tiny study of .test/config.yaml runs end to end with every data, pretraining and probe job a
SLURM job, and a job that fails once is resubmitted by the profile's `retries`. Skipped, with
the reason, where the packages cannot be installed (not root, no apt-get, apt-get fails) or the
machine has a SLURM configuration of its own.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
PROFILE = REPO / "profiles" / "slurm"
TINY = REPO / ".test" / "config.yaml"
PARTITION = "ci"  # the test cluster's only partition, and not a default one: jobs must name it

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

# The test cluster's settings on top of the profile, given the way a site's are: a command line
# `--default-resources` replaces what a profile sets there, and profiles/slurm sets nothing
# there. The logs of successful jobs are kept so that the test can read them.
TEST_CLUSTER_ARGS = [
    "--default-resources",
    f"slurm_partition={PARTITION}",
    "--slurm-keep-successful-logs",
    "--verbose",  # the plugin logs each sbatch call at debug level
]


@dataclass
class Cluster:
    state: Path
    env: dict

    def jobs(self, run_id: str) -> list[dict]:
        """SLURM's record of the jobs of one Snakemake run (finished ones included)."""
        out = subprocess.run(
            ["squeue", "--states=all", "--noheader", "--format=%i|%T|%k", "--name", run_id],
            capture_output=True,
            text=True,
            env=self.env,
            check=True,
        ).stdout
        rows = [line.split("|", 2) for line in out.splitlines() if line.strip()]
        return [{"id": i, "state": s, "comment": c} for i, s, c in rows]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _daemon_pids(state: Path) -> dict[str, int]:
    pids = {}
    for pidfile in (state / "run").glob("*.pid"):
        text = pidfile.read_text().strip()
        if text.isdigit():
            pids[pidfile.stem] = int(text)
    return pids


def _running(pid: int, name: str) -> bool:
    """Whether this PID still runs that daemon (and is not a reused PID)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == name
    except OSError:
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("SLURM test cluster: needs root to install and run slurmctld, slurmd, munge")
    install = subprocess.run(
        ["bash", str(CLUSTER), "install"], capture_output=True, text=True, timeout=900
    )
    if install.returncode == 3:
        pytest.skip(f"SLURM test cluster: cannot install the packages: {install.stderr.strip()}")
    assert install.returncode == 0, install.stdout + install.stderr

    state = tmp_path_factory.mktemp("slurm-cluster")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SLURM_CONF": str(state / "etc" / "slurm.conf"),
        "SLURMCTLD_PORT": str(_free_port()),
        "SLURMD_PORT": str(_free_port()),
        "CI_PARTITION": PARTITION,
        "CI_GPUS": "2",
    }
    started: dict[str, int] = {}
    try:
        t0 = time.perf_counter()
        up = subprocess.run(
            ["bash", str(CLUSTER), "up", str(state)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        started = _daemon_pids(state)
        if up.returncode == 4:
            pytest.skip(f"SLURM test cluster: {up.stderr.strip()}")
        assert up.returncode == 0, up.stdout + up.stderr
        assert set(started) == {"munged", "slurmctld", "slurmd"}, started
        print(f"SLURM test cluster up in {time.perf_counter() - t0:.1f} s: {started}")
        yield Cluster(state, env)
    finally:
        started |= _daemon_pids(state)
        subprocess.run(["bash", str(CLUSTER), "down", str(state)], env=env, timeout=60)
        for name, pid in started.items():  # whatever `down` could not stop
            if _running(pid, name):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        left = [f"{name} ({pid})" for name, pid in started.items() if _running(pid, name)]
        assert not left, f"daemons still running: {left}"


def run_on_cluster(
    cluster: Cluster, workdir: Path, snakefile: Path, *args: str, poll_s: int, timeout: int
):
    """Snakemake with profiles/slurm in its own session, so that a hung run can be stopped
    whole (its SIGTERM handler cancels the SLURM jobs). Returns (returncode, log, seconds).

    `poll_s`: seconds to the first status check, and after each check that saw a job end (the
    plugin adds 10 s after each check that saw none); about a job's length keeps runs short."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile)]
    cmd += ["--directory", str(workdir), "--workflow-profile", str(PROFILE)]
    cmd += [*TEST_CLUSTER_ARGS, *args]
    cmd += ["--seconds-between-status-checks", str(poll_s)]
    cmd += ["--slurm-init-seconds-before-status-checks", str(poll_s)]
    log_path = workdir / "snakemake-slurm.log"
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        job = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=cluster.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            job.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGTERM)
            try:
                job.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
            pytest.fail(f"snakemake ran past {timeout} s:\n{log_path.read_text()[-5000:]}")
    return job.returncode, log_path.read_text(), time.perf_counter() - t0


def run_id(log: str) -> str:
    """The plugin names every SLURM job of one run after the run's id."""
    match = re.search(r"SLURM run ID: (\S+)", log)
    assert match, log[-3000:]
    return match.group(1)


def sbatch_calls(log: str, comment: str) -> list[str]:
    """The sbatch command lines of the jobs with this SLURM comment (rule and wildcards)."""
    return [
        line.split("sbatch call: ", 1)[1]
        for line in log.splitlines()
        if line.startswith("sbatch call: ") and f" --comment {comment} " in line
    ]


def rule_and_wildcards(job: dict) -> tuple[str, str]:
    """`rule_pretrain_wildcards_trifeatures_comm_0` -> ("pretrain", "trifeatures_comm_0")."""
    rule, _, wildcards = job["comment"].removeprefix("rule_").partition("_wildcards_")
    return rule, wildcards


@pytest.fixture(scope="module")
def study_on_slurm(cluster, tmp_path_factory):
    """The tiny study through profiles/slurm. Test-cluster settings only: small memory requests
    (the config's resources, one source of truth) and a fake GPU for every pretraining job
    (--set-resources: the SLURM side of a GPU job; the config keeps gpu: 0, as no CUDA is here)."""
    workdir = tmp_path_factory.mktemp("slurm-study")
    for name in ("config", "notebooks"):
        (workdir / name).symlink_to(REPO / name)
    small = {"threads": 1, "gpu": 0, "mem_mb": 1000, "runtime": 10}
    override = workdir / "test-cluster.yaml"
    override.write_text(yaml.safe_dump({"resources": {"pretrain": small, "probe": small}}))
    rc, log, seconds = run_on_cluster(
        cluster,
        workdir,
        REPO / "workflow" / "Snakefile",
        "--configfile",
        str(TINY),
        str(override),
        "--set-resources",
        "pretrain:gpu=1",
        poll_s=2,  # many jobs end at different times
        timeout=600,
    )
    print(f"tiny study on SLURM: {seconds:.0f} s")
    assert rc == 0, log[-8000:]
    return workdir, log, cluster.jobs(run_id(log))


def test_tiny_study_runs_as_slurm_jobs_to_the_report(study_on_slurm):
    workdir, log, jobs = study_on_slurm
    reports = workdir / "results" / "reports"
    assert "fig4_trifeatures.html" in (reports / "index.html").read_text()
    assert "data:image/png;base64" in (reports / "fig4_trifeatures.html").read_text()

    # SLURM's own record: every data, pretraining and probe job ran as a SLURM job and ended
    # COMPLETED; the local rules (settings, table, figures, report) never reached SLURM.
    rules = Counter(rule_and_wildcards(job)[0] for job in jobs)
    assert rules == Counter(prepare=1, pretrain=6, probe=6), jobs
    assert {job["state"] for job in jobs} == {"COMPLETED"}, jobs
    for job in jobs:  # and each left its log where the README says
        rule, wildcards = rule_and_wildcards(job)
        slurm_log = workdir / ".snakemake" / "slurm_logs" / f"rule_{rule}" / wildcards
        assert (slurm_log / f"{job['id']}.log").exists(), job

    # What the profile and the config made of one pretraining and one probe job.
    (pretrain,) = sbatch_calls(log, "rule_pretrain_wildcards_trifeatures_comm_0")
    for flag in (f"-p {PARTITION}", "--gpus=1", "--cpus-per-task=1", "--mem 1000", "-t 10"):
        assert flag in pretrain, pretrain
    (probe,) = sbatch_calls(log, "rule_probe_wildcards_trifeatures_comm_0")
    assert "--gpus" not in probe and "--mem 1000" in probe, probe
    print(f"sbatch call of one pretraining job: {pretrain}")


def test_a_failed_job_is_resubmitted_and_a_gpu_job_uses_its_pinned_device(cluster, tmp_path):
    rc, log, seconds = run_on_cluster(
        cluster, tmp_path, REPO / "tests" / "slurm" / "Snakefile", poll_s=7, timeout=300
    )
    print(f"retry workflow on SLURM: {seconds:.0f} s")
    assert rc == 0, log[-8000:]
    jobs = cluster.jobs(run_id(log))

    flaky = [j for j in jobs if j["comment"] == "rule_flaky"]
    assert sorted(j["state"] for j in flaky) == ["COMPLETED", "FAILED"], jobs
    (first,) = [j for j in flaky if j["state"] == "FAILED"]
    (second,) = [j for j in flaky if j["state"] == "COMPLETED"]
    assert (tmp_path / "first-attempt-failed").read_text().strip() == first["id"]
    assert (tmp_path / "flaky.txt").read_text().strip() == second["id"]

    # The GPU job saw the device SLURM gave it and used it without a lock file.
    (gpu_job,) = [j for j in jobs if j["comment"] == "rule_gpu"]
    assert gpu_job["state"] == "COMPLETED"
    (call,) = sbatch_calls(log, "rule_gpu")
    assert "--gpus=1" in call, call
    lines = (tmp_path / "gpu.txt").read_text().splitlines()
    assert lines == [f"job {gpu_job['id']} CUDA_VISIBLE_DEVICES=0", "claimed 0"], lines
    assert not (tmp_path / "gpu-locks").exists()
