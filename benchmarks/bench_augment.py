"""Batched SimCLR augmentation vs torchvision's per-sample PIL pipeline (64 images, 224 px, CPU).

python benchmarks/bench_augment.py [--repeats 7] [--batch 64] [--size 224] [--threads N]

Both pipelines have the same settings (crop scale 0.08-1, jitter 0.4/0.4/0.4/0.1 with p 0.8,
grayscale p 0.2, blur p 0.5 with sigma 0.1-2 and a 10 % kernel, flip p 0.5, ImageNet
normalisation). The two are timed alternately, so that a change in machine load hits both;
the median per batch is reported, with the machine (CPU model, ISA features, torch threads).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from bench_common import machine_line
from PIL import Image
from torchvision import transforms as T

from comm_repro.augment import IMAGENET_MEAN, IMAGENET_STD, ImageAugment, blur_kernel_size


def per_sample_pipeline(size: int) -> T.Compose:
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.08, 1.0)),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([T.GaussianBlur(blur_kernel_size(size), (0.1, 2.0))], p=0.5),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.batch, args.size, args.size, 3), dtype=np.uint8)
    batch = torch.from_numpy(images)
    ours = ImageAugment(args.size)
    theirs = per_sample_pipeline(args.size)
    pil = [Image.fromarray(im) for im in images]
    runs = {
        "batched": lambda: ours(batch),
        "per-sample PIL": lambda: torch.stack([theirs(im) for im in pil]),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(machine_line())
    print(f"setting: batch {args.batch}, {args.size} px, median of {args.repeats}")
    print(
        f"batched: {1000 * med['batched']:.0f} ms/batch; "
        f"per-sample PIL: {1000 * med['per-sample PIL']:.0f} ms/batch; "
        f"ratio {med['per-sample PIL'] / med['batched']:.1f}x"
    )


if __name__ == "__main__":
    main()
