"""CoMM training-step and feature-extraction speed at the paper's Trifeature configuration.

224 px, two AlexNet encoders, d 512, batch 64, SimCLR augmentation of both views included (the
whole step: gather, augment, forward, backward, AdamW). Prints the median seconds per step and
pairs/s in fp32 and with bf16 autocast, and the ratio to the authors' code measured on the same
2-core CPU (8.4 s per step end to end, 7.6 pairs/s). Then times feature extraction for the probes
(10,000 train + 4,094 test pairs; the authors' code: 22 min, 43 pairs/s).

    python benchmarks/bench_train_step.py [--steps 5] [--device cpu] [--skip-extract]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from comm_repro.cli import build_for_run
from comm_repro.config import run_config
from comm_repro.data.paired import PairedBank
from comm_repro.evaluate import extract_features
from comm_repro.memory import reuse_freed_memory
from comm_repro.train import autocast_context, seed_everything

REFERENCE_STEP_S = 8.4
REFERENCE_EXTRACT_PAIRS_PER_S = 43.0
PAPER_CONFIG = Path(__file__).resolve().parents[1] / "config" / "paper.yaml"


def synthetic_bank(n_images: int, n_pairs: int, size: int = 224) -> PairedBank:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_images, size, size, 3), dtype=np.uint8)
    pairs = rng.integers(0, n_images, size=(n_pairs, 2))
    return PairedBank.from_numpy([images, images], pairs)


def time_steps(method, data, device, precision, steps, batch_size) -> list[float]:
    optimizer = torch.optim.AdamW(method.param_groups(1e-4), lr=3e-4)
    times = []
    for step in range(steps + 1):  # the first step warms up allocators and kernels
        t0 = time.perf_counter()
        batch = data.gather(torch.randint(len(data), (batch_size,)))
        with autocast_context(device, precision):
            loss = method.loss(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-extract", action="store_true")
    parser.add_argument(
        "--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"]
    )
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's malloc as it is (the `comm` commands keep freed memory for reuse)",
    )
    args = parser.parse_args()
    if not args.default_malloc:
        reuse_freed_memory()

    device = torch.device(args.device)
    cfg = run_config(yaml.safe_load(PAPER_CONFIG.read_text()), "trifeatures", "comm", 0)
    batch_size = int(cfg["train"]["batch_size"])
    malloc = "default malloc" if args.default_malloc else "freed memory reused"
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, batch {batch_size}, 224 px, "
        f"{malloc}"
    )
    data = synthetic_bank(2400, 10_000).to(device)
    for precision in args.precisions:
        seed_everything(0)
        method = build_for_run(cfg).to(device, memory_format=torch.channels_last)
        method.train()
        times = time_steps(method, data, device, precision, args.steps, batch_size)
        median = statistics.median(times)
        print(
            f"{precision}: {median:.3f} s/step (median of {len(times)}), "
            f"{batch_size / median:.1f} pairs/s, {REFERENCE_STEP_S / median:.2f}x the reference's "
            f"{REFERENCE_STEP_S} s/step"
        )

    if args.skip_extract:
        return
    seed_everything(0)
    method = build_for_run(cfg).to(device)
    train, test = synthetic_bank(2400, 10_000), synthetic_bank(200, 4_094)
    t0 = time.perf_counter()
    for bank in (train, test):
        extract_features(method, bank, device, batch_size=256, progress=False)
    seconds = time.perf_counter() - t0
    rate = (len(train) + len(test)) / seconds
    print(
        f"feature extraction for the probes: {seconds:.1f} s, {rate:.0f} pairs/s, "
        f"{rate / REFERENCE_EXTRACT_PAIRS_PER_S:.1f}x the reference's 43 pairs/s (22 min)"
    )


if __name__ == "__main__":
    main()
