"""Local scheduling: never more pretraining jobs at once than the cores Snakemake was given.

Each run goes through a `comm-repro` wrapper, first on PATH, that records when every process
starts and ends; the number of pretraining processes alive at once is counted from those times.
The DAG is the reported one: the data preparation, the only job ready at the start (a job that
starts alone, which Snakemake 9.10 to 9.16 did not charge to the pool: see workflow/Snakefile),
then more single-threaded pretraining jobs than cores.
"""

from __future__ import annotations

import shlex
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_workflow import ENV, TINY, load, snakemake, workdir_for, write_config

CASES = {
    "cores 2": ("--cores", "2"),
    "cores 1, local cores 1": ("--cores", "1", "--local-cores", "1"),
}

WRAPPER = """#!/usr/bin/env bash
# Records when this comm-repro process starts and ends, then runs the real command.
record=$(mktemp {times}/XXXXXXXX)
echo "$1 start $(date +%s.%N)" > "$record"
{real} "$@"
status=$?
echo "$1 end $(date +%s.%N)" >> "$record"
exit $status
"""


def timed_env(tmp: Path) -> tuple[dict, Path]:
    """An environment whose `comm-repro` records each process's start and end under tmp/times."""
    real = shutil.which("comm-repro", path=ENV["PATH"])
    assert real, "comm-repro is not on PATH"
    times, bin_dir = tmp / "times", tmp / "bin"
    times.mkdir()
    bin_dir.mkdir()
    wrapper = bin_dir / "comm-repro"
    wrapper.write_text(WRAPPER.format(times=shlex.quote(str(times)), real=shlex.quote(real)))
    wrapper.chmod(0o755)
    return {**ENV, "PATH": f"{bin_dir}:{ENV['PATH']}"}, times


def intervals(times: Path, command: str) -> list[tuple[float, float]]:
    """(start, end) of every finished `comm-repro COMMAND` process."""
    spans = []
    for record in times.iterdir():
        fields = dict(
            (event, float(stamp))
            for name, event, stamp in (line.split() for line in record.read_text().splitlines())
            if name == command
        )
        if fields:
            assert "end" in fields, f"{record} has no end: the process did not finish"
            spans.append((fields["start"], fields["end"]))
    return spans


def max_concurrent(spans: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (one that ends as another starts: not both)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def cores(case: str) -> int:
    return int(CASES[case][1])


def small_study(tmp: Path, seeds: list[int]) -> tuple[str, list[str]]:
    """The tiny study cut to one epoch of one step on 32 pairs, one method on one dataset."""
    cfg = load(TINY)
    cfg["experiments"]["fig4_trifeatures"]["seeds"] = seeds
    cfg["train"].update(epochs=1, batch_size=32)
    cfg["datasets"]["trifeatures"]["max_train_pairs"] = 32
    runs = [f"results/runs/trifeatures/cross/seed{seed}" for seed in seeds]
    return write_config(tmp, cfg, "small.yaml"), runs


@pytest.fixture(scope="module")
def pretraining_spans(tmp_path_factory):
    """Both cases run at once (each in its own working directory) to halve the wall time."""

    def run(case: str):
        tmp = tmp_path_factory.mktemp("sched")
        env, times = timed_env(tmp)
        # One pretraining job more than cores: with one core counted twice, one job too many.
        config, runs = small_study(tmp, list(range(cores(case) + 1)))
        workdir = workdir_for(tmp / "wd")
        # The runs' settings first, so that the data preparation is the only job ready at the
        # start, and every pretraining job waits for it (targets go before --configfile, which
        # would read them as more config files).
        settings = [f"{run}/settings.yaml" for run in runs]
        snakemake(workdir, *settings, "--cores", "2", "--configfile", config, env=env)
        models = [f"{run}/model.pt" for run in runs]
        snakemake(workdir, *models, *CASES[case], "--configfile", config, env=env)
        assert intervals(times, "prepare"), "the data preparation did not run"
        return intervals(times, "pretrain")

    with ThreadPoolExecutor(len(CASES)) as pool:
        futures = {case: pool.submit(run, case) for case in CASES}
        return {case: future.result() for case, future in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_pretraining_never_runs_more_jobs_than_cores(pretraining_spans, case):
    spans = pretraining_spans[case]
    assert len(spans) == cores(case) + 1
    most = max_concurrent(spans)
    assert most <= cores(case), f"{most} pretraining jobs at once on {cores(case)} core(s): {spans}"
    assert most == cores(case), "the jobs never shared the cores: the count would miss an overlap"


def test_max_concurrent_counts_overlaps_not_back_to_back_jobs():
    assert max_concurrent([(0, 2), (2, 4), (4, 6)]) == 1
    assert max_concurrent([(0, 3), (1, 4), (2, 5), (4.5, 6)]) == 3
    assert max_concurrent([]) == 0
