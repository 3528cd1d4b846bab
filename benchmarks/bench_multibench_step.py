"""Training-step speed of CoMM (and of other methods beside it) at the paper's Vision&Touch,
MIMIC and MOSI configurations, and the projected wall time of their pretraining on this machine.

For each dataset named (keys of config/paper.yaml; default ``vision_touch`` -- end-effector
regression: image 128 px through a ResNet-18 + force through the causal-conv network, embedding
128 -- and ``mimic`` -- static features through the MLP and feature tokens, 24 hourly steps
through the GRU, embedding 512; or ``mosi``: vision 50 x 20 and text 50 x 300 through the
MultiBench Transformer, embedding 40), the script builds each method's run (``--methods``, keys
of config/paper.yaml's methods; default ``comm``) as the workflow does (``run_config``), fills a
bank with random samples of the dataset's real shapes (and random binary labels, for methods
that train with them), and times the method's own step end to end: gather, its views (SimCLR
at 128 px, drop + noise, noise), forward, backward, its optimisers (FactorCL: the main step,
then its critics' step), at the config's batch size (64). Methods are timed alternately, step
by step, in one process. It prints the machine, then per dataset, method and precision the
median seconds per step and the projected wall time of the paper's protocol: 100 epochs x 5
seeds over the training split (Vision&Touch: 2,400 files x 49 samples = 117,600, the authors'
"117k"; MIMIC: 26,093, the authors' split of N = 32,616; MOSI: 1,284), model steps only (no
probing); with several methods, each one's time as a multiple of the first's.

    python benchmarks/bench_multibench_step.py [--datasets vision_touch mimic] [--steps 3]
        [--methods comm factorcl] [--precisions auto|fp32|bf16 ...] [--batch-size 64]
        [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch
import yaml
from bench_common import OurStep, machine_line, time_alternately

from comm_repro.config import run_config
from comm_repro.data.paired import PairedBank
from comm_repro.memory import reuse_freed_memory
from comm_repro.train import resolve_precision, seed_everything

PAPER_CONFIG = Path(__file__).resolve().parents[1] / "config" / "paper.yaml"
# Per family: each modality's sample shape and dtype, and the training split's size.
SHAPES = {
    "vision_touch": {"image": (128, 128, 3), "force": (32, 6), "proprio": (8,)},
    "mimic": {"tabular": (5,), "timeseries": (24, 12)},
    "mosi": {"vision": (50, 20), "text": (50, 300)},
}
TRAIN_SAMPLES = {"vision_touch": 2400 * 49, "mimic": 26_093, "mosi": 1284}
EPOCHS, SEEDS = 100, 5
BANK = 256  # samples drawn from: enough for random batches


def synthetic(family: str, modalities: list[dict], tasks: list[dict]) -> PairedBank:
    rng = np.random.default_rng(0)
    banks = []
    for m in modalities:
        shape = SHAPES[family][m["name"]]
        if m["kind"] == "image":
            banks.append(rng.integers(0, 256, (BANK, *shape), dtype=np.uint8))
        else:
            banks.append(rng.standard_normal((BANK, *shape)).astype(np.float32))
    labels = {
        t.get("labels", t["name"]): (
            rng.standard_normal((BANK, 4)).astype(np.float32)
            if t["kind"] == "regression"
            else rng.integers(0, 2, BANK).astype(np.int64)
        )
        for t in tasks
    }
    return PairedBank.aligned(banks, labels=labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["vision_touch", "mimic"])
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up)")
    parser.add_argument(
        "--methods", nargs="+", default=["comm"], help="keys of config/paper.yaml's methods"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["auto"],
        choices=["auto", "fp32", "bf16"],
        help="default: what train.precision auto runs here (bf16 only with native support: "
        "emulated bf16 is many times slower)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    reuse_freed_memory()
    paper = yaml.safe_load(PAPER_CONFIG.read_text())
    print(machine_line(device))
    precisions = list(dict.fromkeys(resolve_precision(device, p) for p in args.precisions))
    for name in args.datasets:
        cfg = run_config(paper, name, args.methods[0], 0)
        family = cfg["dataset"]["family"]
        if family not in SHAPES:
            raise SystemExit(
                f"error: no sample shapes for family {family!r}; known: {list(SHAPES)}"
            )
        modalities = cfg["dataset"]["modalities"]
        data = synthetic(family, modalities, cfg["dataset"]["tasks"]).to(device)
        batch = int(args.batch_size or cfg["train"]["batch_size"])
        steps = {}
        for method in args.methods:
            for precision in precisions:
                seed_everything(0)
                run = run_config(paper, name, method, 0)
                steps[(method, precision)] = OurStep(run, data, device, precision, batch)
        times = time_alternately(steps, device, args.steps)
        per_epoch = TRAIN_SAMPLES[family] // batch
        what = " + ".join(f"{m['name']} ({m['encoder']['name']})" for m in modalities)
        print(
            f"\n{name}: {what}, embedding {cfg['model']['embed_dim']}, batch {batch}, "
            f"{per_epoch} steps per epoch"
        )
        medians = {key: statistics.median(seconds) for key, seconds in times.items()}
        for (method, precision), median in medians.items():
            hours = median * per_epoch * EPOCHS * SEEDS / 3600
            line = (
                f"  {method + ' ' if len(args.methods) > 1 else ''}{precision}: {median:.3f} s "
                f"per step (median of {len(times[method, precision])}); {EPOCHS} epochs x "
                f"{SEEDS} seeds: {hours:.1f} h"
            )
            first = medians[args.methods[0], precision]
            if method != args.methods[0]:
                line += f"; {median / first:.2f} x {args.methods[0]}'s step"
            print(line)


if __name__ == "__main__":
    main()
