"""The benchmark scripts: they name the machine they measured, and print a ratio only against the
authors' code timed in the same run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from comm_repro.provenance import cpu_info

ROOT = Path(__file__).resolve().parents[1]
TRAIN_STEP = ROOT / "benchmarks" / "bench_train_step.py"
MOSI_STEP = ROOT / "benchmarks" / "bench_mosi_step.py"
MULTIBENCH_STEP = ROOT / "benchmarks" / "bench_multibench_step.py"
VT_PREPARE = ROOT / "benchmarks" / "bench_vt_prepare.py"
FROZEN = ROOT / "benchmarks" / "bench_frozen_encoders.py"
TINY = ["--resolution", "64", "--batch-size", "8", "--steps", "1", "--precisions", "fp32"]
MOSI_TINY = ["--batch-size", "8", "--steps", "1", "--precisions", "fp32"]
# each benchmark with the authors' code: its tiny arguments, and their files it imports
AUTHORS_BENCHES = {
    "train_step": (
        TRAIN_STEP,
        [*TINY, "--skip-extract"],
        ["models/alexnet", "models/input_adapters", "models/mmfusion", "pl_modules/comm"],
    ),
    "mosi_step": (
        MOSI_STEP,
        MOSI_TINY,
        ["models/transformer", "models/mmfusion", "pl_modules/comm"],
    ),
}
AUTHORS_CODE = os.environ.get("COMM_AUTHORS_CODE")
RATIO = re.compile(r"\d\s*x\b|×|x the|ratio|/ their", re.IGNORECASE)


def run_bench(*args: str, script: Path = TRAIN_STEP, timeout: float = 120):
    src = str(ROOT / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": path},
        cwd=ROOT,
    )


def test_train_step_names_the_machine_and_prints_no_ratio():
    done = run_bench(*TINY, "--skip-extract")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    _assert_names_the_machine(out)
    assert re.search(r"ours, precision fp32: \d+\.\d+ s/step, \d+\.\d+ pairs/s", out)
    assert "64 px, batch 8" in out
    assert not RATIO.search(out), out  # nothing to compare with was timed in this run


def _assert_names_the_machine(out: str) -> None:
    cpu = cpu_info()
    assert f"CPU {cpu['model']}" in out
    for feature in cpu["features"]:
        assert feature in out
    assert re.search(r"torch threads \d+", out)
    assert "device cpu" in out


def test_mosi_step_names_the_machine_projects_the_wall_time_and_prints_no_ratio():
    done = run_bench(*MOSI_TINY, "--min-steps", "20", script=MOSI_STEP)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    _assert_names_the_machine(out)
    assert "MOSI, batch 8, 50 steps (20-50 real per sample), features 20 + 300" in out
    seconds = float(re.search(r"ours, precision fp32: (\d+\.\d+) s/step", out)[1])
    hours = float(re.search(r"wall time, ours, precision fp32: (\d+\.\d+) h", out)[1])
    # 1,284 samples // 8 = 160 steps per epoch, 100 epochs, 5 seeds
    assert hours == pytest.approx(seconds * 160 * 100 * 5 / 3600, rel=0.02, abs=0.006)
    assert not RATIO.search(out), out


def test_multibench_step_projects_each_datasets_wall_time():
    args = ["--datasets", "vision_touch", "mimic", "--batch-size", "4", "--steps", "1"]
    done = run_bench(*args, "--precisions", "fp32", script=MULTIBENCH_STEP, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    _assert_names_the_machine(out)
    assert "vision_touch: image (resnet18) + force (causal_conv), embedding 128, batch 4" in out
    assert "mimic: tabular (mlp) + timeseries (gru), embedding 512, batch 4" in out
    found = re.findall(r"fp32: (\d+\.\d+) s per step .*: (\d+\.\d+) h", out)
    # steps per epoch at batch 4: 117,600 // 4 (V&T), 26,093 // 4 (MIMIC); 100 epochs, 5 seeds
    for (seconds, hours), steps in zip(found, (117_600 // 4, 26_093 // 4), strict=True):
        assert float(hours) == pytest.approx(
            float(seconds) * steps * 500 / 3600, rel=0.05, abs=0.06
        )
    assert not RATIO.search(out), out


def test_multibench_step_times_other_methods_beside_comm():
    args = ["--datasets", "mosi", "--methods", "comm", "factorcl", "factorcl_sup", "supcon"]
    done = run_bench(*args, "--batch-size", "8", "--steps", "1", "--precisions", "fp32",
                     script=MULTIBENCH_STEP, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "mosi: vision (transformer) + text (transformer), embedding 40, batch 8" in out
    assert re.search(r"  comm fp32: \d+\.\d+ s per step", out), out
    for method in ("factorcl", "factorcl_sup", "supcon"):
        assert re.search(rf"  {method} fp32: .*; \d+\.\d+ x comm's step", out), out


def test_frozen_encoders_report_throughput_and_project_mmimdb():
    args = ["--encoders", "clip", "text", "--batch-size", "2", "--steps", "1"]
    done = run_bench(*args, "--precisions", "fp32", script=FROZEN, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    _assert_names_the_machine(out)
    assert "clip: ClipImageTokens, 87.5 M parameters, 8.82 GFLOPs per poster, batch 2" in out
    assert re.search(r"text: SentenceTransformerStates, 134\.\d M parameters", out), out
    found = re.findall(
        r"(\d+\.\d) (poster|plot)s/s; every \2 once: (\d+\.\d+) h; .*: (\d+\.\d) h", out
    )
    assert [kind for _, kind, _, _ in found] == ["poster", "plot"], out
    for rate, _, once, run in found:
        assert float(once) == pytest.approx(25_959 / float(rate) / 3600, rel=0.05, abs=0.006)
        assert float(run) == pytest.approx(15_552 * 2 * 70 / float(rate) / 3600, rel=0.05, abs=0.06)
    # the fusion step on precomputed tokens, and one run: both views through both encoders
    # and the fusion step, at the paper's batch of 64, 243 steps per epoch, 70 epochs
    assert "fusion: CoMM's trainable part (embedding 768, 1 layer, 8 heads)" in out
    fusion = re.search(
        r"fp32: (\d+\.\d+) s per step .*: (\d+\.\d) h; one MM-IMDb CoMM run \(CLIP backbone\): "
        r"(\d+\.\d) h \((\d+)% of it in the frozen encoders\)",
        out,
    )
    assert fusion, out
    step_s, fusion_h, run_h, share = map(float, fusion.groups())
    per_step = step_s * 64 / 2
    assert fusion_h == pytest.approx(per_step * 243 * 70 / 3600, rel=0.05, abs=0.06)
    frozen_s = sum(2 * 64 / float(rate) for rate, *_ in found)
    assert run_h == pytest.approx((frozen_s + per_step) * 243 * 70 / 3600, rel=0.05, abs=0.06)
    assert share == pytest.approx(100 * frozen_s / (frozen_s + per_step), abs=1)
    assert not RATIO.search(out), out


def test_vt_prepare_reports_peak_memory_at_two_sizes():
    done = run_bench("--files", "5", "6", script=VT_PREPARE, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    _assert_names_the_machine(out)
    for n in (5, 6):
        assert re.search(rf"^{n} files \({n * 49} samples.*prepare \d+\.\d+ s", out, re.M)
    assert re.search(r"peak RSS \d+ MiB at 5 files, \d+ MiB at 6 files", out)
    assert "extrapolated to 3000 files (147,000 samples)" in out


@pytest.mark.parametrize("bench", AUTHORS_BENCHES)
def test_authors_code_with_a_missing_package_fails_in_one_line(tmp_path, bench):
    script, args, files = AUTHORS_BENCHES[bench]
    for name in files:
        (tmp_path / f"{name}.py").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"{name}.py").write_text("import surely_absent_package_xyz\n")
    done = run_bench(*args, "--authors-code", str(tmp_path), script=script)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert "s/step" not in done.stdout  # it stops before timing anything


@pytest.mark.parametrize("bench", AUTHORS_BENCHES)
def test_authors_code_that_is_not_a_checkout_is_named(tmp_path, bench):
    script, args, _ = AUTHORS_BENCHES[bench]
    done = run_bench(*args, "--authors-code", str(tmp_path), script=script)
    assert done.returncode != 0
    assert "not a checkout of github.com/Duplums/CoMM" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.skipif(not AUTHORS_CODE, reason="COMM_AUTHORS_CODE names no checkout of Duplums/CoMM")
def test_side_by_side_with_the_authors_code():
    done = run_bench(*TINY, "--skip-extract", "--authors-code", AUTHORS_CODE, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"authors' code, precision fp32: \d+\.\d+ s/step.*model step only", out)
    assert re.search(r"our time / their time, precision fp32: \d+\.\d+ \(ours end to end", out)


@pytest.mark.slow
@pytest.mark.skipif(not AUTHORS_CODE, reason="COMM_AUTHORS_CODE names no checkout of Duplums/CoMM")
def test_mosi_step_side_by_side_with_the_authors_code():
    done = run_bench(*MOSI_TINY, "--authors-code", AUTHORS_CODE, script=MOSI_STEP, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"authors' code, precision fp32: \d+\.\d+ s/step \(model step only", out)
    assert re.search(r"their time / our time, precision fp32: \d+\.\d+", out)
    assert re.search(r"wall time, authors' code, precision fp32: \d+\.\d+ h", out)
