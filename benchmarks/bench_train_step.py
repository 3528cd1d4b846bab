"""CoMM training-step and feature-extraction speed at the paper's Trifeature configuration.

Defaults as in config/paper.yaml: 224 px, two AlexNet encoders, d 512, batch 64. Our step is timed
end to end: gather, SimCLR augmentation of both views, forward, backward, AdamW. The script first
prints the machine (CPU model, its ISA features, logical cores, torch threads, device), then per
precision the median seconds per step and pairs/s, then the time of feature extraction for the
probes (10,000 train + 4,094 test pairs). Without --authors-code it prints measured figures only,
no ratio: a time measured on another machine says nothing about this one.

With --authors-code PATH, a checkout of github.com/Duplums/CoMM, it also builds the authors' CoMM
model from their code at the same configuration (their AlexNetEncoder, PatchedInputAdapter,
MMFusion and CoMM module with CoMMLoss, their AdamW parameter groups) and times their model step,
forward + backward + AdamW, on the same batch, alternating step by step with ours in the same
process. Their augmentation is per-sample PIL in DataLoader worker processes, which a single
process cannot time fairly, so their step is timed without it: the printed ratio is our time
(augmentation included) over their time (model step only). Their model runs in its own memory
format (contiguous), ours in channels_last. Their code needs, beside torch and torchvision:

    pip install pytorch-lightning omegaconf einops tensorboard pandas

    python benchmarks/bench_train_step.py [--steps 5] [--device cpu] [--skip-extract]
        [--precisions fp32 bf16] [--resolution 224] [--batch-size 64] [--authors-code PATH]
"""

from __future__ import annotations

import argparse
import statistics
import time
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
from comm_repro.evaluate import extract_features
from comm_repro.memory import reuse_freed_memory
from comm_repro.methods import build_method
from comm_repro.train import autocast_context, seed_everything

PAPER_CONFIG = Path(__file__).resolve().parents[1] / "config" / "paper.yaml"
AUTHORS_MODULES = ["models.alexnet", "models.input_adapters", "models.mmfusion", "pl_modules.comm"]


def synthetic_bank(n_images: int, n_pairs: int, size: int = 224) -> PairedBank:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_images, size, size, 3), dtype=np.uint8)
    pairs = rng.integers(0, n_images, size=(n_pairs, 2))
    return PairedBank.from_numpy([images, images], pairs)


def build_authors_model(path: str, cfg: dict):
    """The authors' CoMM at the run's configuration, built from their classes as their
    configs/train_trifeatures.yaml and configs/model/comm.yaml do (embed_dim from the run, as
    their README's `model.model.encoder.embed_dim=512`)."""
    alexnet, adapters, mmfusion, comm = import_authors_modules(path, AUTHORS_MODULES)
    dim = int(cfg["model"]["embed_dim"])
    encoders = [
        alexnet.AlexNetEncoder(latent_dim=256, dropout=0.5, global_pool="") for _ in range(2)
    ]
    adapters_ = [
        adapters.PatchedInputAdapter(
            num_channels=256, stride_level=1, patch_size_full=1, dim_tokens=dim, image_size=6
        )
        for _ in range(2)
    ]
    return authors_comm(mmfusion, comm, cfg, encoders, adapters_)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-extract", action="store_true")
    parser.add_argument(
        "--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"]
    )
    parser.add_argument("--resolution", type=int, default=None, help="px (default: the config's)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument(
        "--authors-code",
        metavar="PATH",
        help="a checkout of github.com/Duplums/CoMM: time their model step side by side",
    )
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's malloc as it is (`comm-repro` commands keep freed memory for reuse)",
    )
    args = parser.parse_args()
    if not args.default_malloc:
        reuse_freed_memory()

    device = torch.device(args.device)
    cfg = run_config(yaml.safe_load(PAPER_CONFIG.read_text()), "trifeatures", "comm", 0)
    if args.resolution:
        cfg["dataset"]["resolution"] = args.resolution
    if args.batch_size:
        cfg["train"]["batch_size"] = args.batch_size
    size, batch_size = int(cfg["dataset"]["resolution"]), int(cfg["train"]["batch_size"])
    if args.authors_code:  # fail on a missing package before anything is timed
        import_authors_modules(args.authors_code, AUTHORS_MODULES)

    malloc = "default malloc" if args.default_malloc else "freed memory reused"
    print(machine_line(device))
    print(
        f"setting: {size} px, batch {batch_size}, d {cfg['model']['embed_dim']}, two AlexNet "
        f"encoders, median of {args.steps} steps after 1 warm-up, {malloc}"
    )
    data = synthetic_bank(2400, 10_000, size).to(device)
    for precision in args.precisions:
        seed_everything(0)
        steps = {"ours": OurStep(cfg, data, device, precision, batch_size, torch.channels_last)}
        if args.authors_code:
            model = build_authors_model(args.authors_code, cfg)
            steps["authors"] = AuthorsStep(model, steps["ours"], device, precision, batch_size)
        med = {
            k: statistics.median(t) for k, t in time_alternately(steps, device, args.steps).items()
        }
        print(
            f"ours, precision {precision}: {med['ours']:.3f} s/step, "
            f"{batch_size / med['ours']:.1f} pairs/s (end to end: gather, augmentation, forward, "
            "backward, AdamW)"
        )
        if args.authors_code:
            print(
                f"authors' code, precision {precision}: {med['authors']:.3f} s/step, "
                f"{batch_size / med['authors']:.1f} pairs/s (model step only: forward, backward, "
                "AdamW; their per-sample PIL augmentation in worker processes not timed)"
            )
            print(
                f"our time / their time, precision {precision}: "
                f"{med['ours'] / med['authors']:.2f} (ours end to end incl. augmentation vs "
                "theirs model step only, same process, alternating steps)"
            )

    if args.skip_extract:
        return
    seed_everything(0)
    train, test = synthetic_bank(2400, 10_000, size), synthetic_bank(200, 4_094, size)
    method = build_method(cfg, train.sample_shapes()).to(device)
    t0 = time.perf_counter()
    for bank in (train, test):
        extract_features(method, bank, device, batch_size=256, progress=False)
    seconds = time.perf_counter() - t0
    rate = (len(train) + len(test)) / seconds
    precision = "bf16" if isinstance(autocast_context(device, "auto"), torch.autocast) else "fp32"
    print(
        f"feature extraction for the probes, {len(train):,} + {len(test):,} pairs, precision auto "
        f"({precision} here): {seconds:.1f} s, {rate:.0f} pairs/s"
    )


if __name__ == "__main__":
    main()
