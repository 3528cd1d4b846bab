"""Batched SimCLR augmentation vs torchvision's per-sample PIL pipeline (64 images, 224 px, CPU).

python benchmarks/bench_augment.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from comm.augment import IMAGENET_MEAN, IMAGENET_STD, ImageAugment


def per_sample_pipeline(size: int) -> T.Compose:
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.08, 1.0)),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([T.GaussianBlur(int(0.1 * size) // 2 * 2 + 1, (0.1, 2.0))], p=0.5),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.batch, 224, 224, 3), dtype=np.uint8)
    batch = torch.from_numpy(images)
    ours = ImageAugment(224)
    theirs = per_sample_pipeline(224)
    pil = [Image.fromarray(im) for im in images]
    t_ours = median_seconds(lambda: ours(batch), args.repeats)
    t_theirs = median_seconds(lambda: torch.stack([theirs(im) for im in pil]), args.repeats)
    print(f"torch threads {torch.get_num_threads()}, batch {args.batch}, 224 px")
    print(
        f"batched: {1000 * t_ours:.0f} ms/batch; per-sample PIL: {1000 * t_theirs:.0f} ms/batch; "
        f"ratio {t_theirs / t_ours:.2f}x"
    )


if __name__ == "__main__":
    main()
