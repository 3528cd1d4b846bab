"""CoMM training-step speed at the paper's MOSI configuration, and the projected CPU wall time.

Defaults as in config/paper.yaml for MOSI: vision (20 features) and text (300 features), 50 steps,
the MultiBench sequence encoder per modality (d 40, 5 layers, 5 heads, feed-forward 2048,
dropout 0.1), CoMM fusion (d 40, 8 heads, 1 layer), batch 64. Our step is timed end to end:
gather, drop + noise augmentation of both views, forward, backward, AdamW. The script first
prints the machine, then per precision the median seconds per step, then the projected wall
time of MOSI's pretraining in the paper's protocol (1,284 training samples, 20 steps per epoch,
100 epochs, 5 seeds; model steps only). Without --authors-code it prints measured figures only,
no ratio.

With --authors-code PATH, a checkout of github.com/Duplums/CoMM, it also builds the authors' CoMM
from their code at the same configuration (their Transformer encoders without positional
encoding, MMFusion with no adapters, their projection head, CoMM module and CoMMLoss, their AdamW
parameter groups) and times their model step, forward + backward + AdamW, on the same samples,
alternating step by step with ours in the same process. Their batch is what their collate makes
(each sample's real steps, right-padded to the longest in the batch, no masks); their
augmentation runs per sample in DataLoader workers, so their views are made once, with ours,
outside the timing: the printed ratios set our time (augmentation included) against their model
step only. Their code needs, beside torch:

    pip install pytorch-lightning omegaconf einops tensorboard pandas sentence-transformers

Every sample has all 50 steps by default (no padding: both sides do the same arithmetic);
--min-steps K draws each sample's length uniformly in [K, 50], which real MOSI batches resemble
(our encoder then skips padded steps; theirs computes the batch padded to its longest sample).

    python benchmarks/bench_mosi_step.py [--steps 5] [--device cpu] [--precisions fp32 bf16]
        [--batch-size 64] [--min-steps 50] [--authors-code PATH]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch
import yaml
from bench_common import (
    AuthorsStep,
    OurStep,
    authors_comm,
    import_authors_modules,
    machine_line,
    time_alternately,
)

from comm_repro.config import run_config
from comm_repro.data.paired import PairedBank
from comm_repro.memory import reuse_freed_memory
from comm_repro.train import resolve_precision, seed_everything

PAPER_CONFIG = Path(__file__).resolve().parents[1] / "config" / "paper.yaml"
AUTHORS_MODULES = ["models.transformer", "models.mmfusion", "pl_modules.comm"]
# MOSI in the paper's protocol (reference/datasets.md: 1,284 training samples after the authors'
# preprocessing; config/paper.yaml: 100 epochs, 5 seeds)
TRAIN_SAMPLES, EPOCHS, SEEDS = 1284, 100, 5
STEPS, FEATURES = 50, (20, 300)  # vision, text


def synthetic_mosi(n: int, min_steps: int) -> PairedBank:
    """MOSI-shaped samples: float32 features at the first ``length`` steps, zero after them."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(min_steps, STEPS + 1, size=n)
    mask = np.arange(STEPS)[None, :] < lengths[:, None]
    banks = [
        np.where(mask[..., None], rng.standard_normal((n, STEPS, f)), 0).astype(np.float32)
        for f in FEATURES
    ]
    return PairedBank.aligned(banks, [mask, mask])


def authors_views(ours: OurStep, batch_size: int) -> list[list[torch.Tensor]]:
    """Two augmented views of one batch as their collate hands it to their model: cut to the
    longest sample's steps (their right padding), no masks."""
    batch = ours.data.gather(torch.randint(len(ours.data), (batch_size,)))
    longest = int(batch.masks[0].sum(dim=1).max())
    with torch.no_grad():
        views = [ours.method.views("strong", batch.inputs, batch.masks) for _ in "12"]
    return [[x[:, :longest].contiguous() for x in view] for view in views]


def build_authors_model(path: str, cfg: dict):
    """The authors' CoMM for MOSI as their configs/train_multibench.yaml (mosi) and
    configs/model/comm.yaml build it, at the run's widths."""
    transformer, mmfusion, comm = import_authors_modules(path, AUTHORS_MODULES)
    encoders = [
        transformer.Transformer(
            n_features=f,
            dim=int(m["encoder"]["dim"]),
            max_seq_length=STEPS,
            positional_encoding=False,
        )
        for f, m in zip(FEATURES, cfg["dataset"]["modalities"])
    ]
    return authors_comm(mmfusion, comm, cfg, encoders, [None, None])


def projected_hours(seconds_per_step: float, batch_size: int) -> float:
    return seconds_per_step * (TRAIN_SAMPLES // batch_size) * EPOCHS * SEEDS / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"]
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument(
        "--min-steps",
        type=int,
        default=STEPS,
        help=f"each sample's real steps drawn in [K, {STEPS}] (default {STEPS}: no padding)",
    )
    parser.add_argument(
        "--authors-code",
        metavar="PATH",
        help="a checkout of github.com/Duplums/CoMM: time their model step side by side",
    )
    args = parser.parse_args()
    if not 1 <= args.min_steps <= STEPS:
        parser.error(f"--min-steps must lie in [1, {STEPS}]")
    reuse_freed_memory()

    device = torch.device(args.device)
    cfg = run_config(yaml.safe_load(PAPER_CONFIG.read_text()), "mosi", "comm", 0)
    if args.batch_size:
        cfg["train"]["batch_size"] = args.batch_size
    batch_size = int(cfg["train"]["batch_size"])
    if args.authors_code:  # fail on a missing package before anything is timed
        import_authors_modules(args.authors_code, AUTHORS_MODULES)

    default = resolve_precision(device, cfg["train"].get("precision", "auto"))
    print(machine_line(device))
    print(
        f"setting: MOSI, batch {batch_size}, {STEPS} steps ({args.min_steps}-{STEPS} real per "
        f"sample), features {FEATURES[0]} + {FEATURES[1]}, encoder d "
        f"{cfg['dataset']['modalities'][0]['encoder']['dim']}, fusion d "
        f"{cfg['model']['embed_dim']}; median of {args.steps} steps after 1 warm-up; "
        f"our default precision here (train.precision auto): {default}"
    )
    data = synthetic_mosi(TRAIN_SAMPLES, args.min_steps).to(device)
    medians: dict[tuple[str, str], float] = {}
    for precision in args.precisions:
        seed_everything(0)
        steps = {"ours": OurStep(cfg, data, device, precision, batch_size)}
        if args.authors_code:
            model = build_authors_model(args.authors_code, cfg)
            views = authors_views(steps["ours"], batch_size)
            steps["authors"] = AuthorsStep(
                model, steps["ours"], device, precision, batch_size, views
            )
        for who, times in time_alternately(steps, device, args.steps).items():
            medians[who, precision] = statistics.median(times)
        print(
            f"ours, precision {precision}: {medians['ours', precision]:.3f} s/step (end to end: "
            "gather, augmentation, forward, backward, AdamW)"
        )
        if args.authors_code:
            theirs = medians["authors", precision]
            print(
                f"authors' code, precision {precision}: {theirs:.3f} s/step (model step only: "
                "forward, backward, AdamW)"
            )
            print(
                f"their time / our time, precision {precision}: "
                f"{theirs / medians['ours', precision]:.2f} (same process, alternating steps)"
            )
    if args.authors_code and ("ours", default) in medians and ("authors", "fp32") in medians:
        print(
            f"their time at their default (fp32) / our time at ours ({default}): "
            f"{medians['authors', 'fp32'] / medians['ours', default]:.2f}"
        )
    runs = f"{EPOCHS} epochs x {SEEDS} seeds x {TRAIN_SAMPLES // batch_size} steps"
    for (who, precision), seconds in medians.items():
        name = "ours" if who == "ours" else "authors' code"
        print(
            f"projected MOSI pretraining wall time, {name}, precision {precision}: "
            f"{projected_hours(seconds, batch_size):.2f} h ({runs}, model steps only)"
        )


if __name__ == "__main__":
    main()
