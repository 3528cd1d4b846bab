"""Time the whole Trifeature generation (2,400 train + 200 test images at 224 px).

The authors' per-pixel generator takes 10 min 21 s (621 s) on this project's 2-core reference
machine; prints our time and the ratio.

    python benchmarks/bench_generate.py
"""

from __future__ import annotations

import time

from comm_repro.data.trifeatures import generate

REFERENCE_S = 621.0


def main() -> None:
    t0 = time.perf_counter()
    splits = generate(seed=42, num_per_combination=3, progress=False)
    seconds = time.perf_counter() - t0
    counts = ", ".join(f"{len(s)} {name}" for name, s in splits.items())
    print(
        f"generated {counts} images in {seconds:.1f} s: {REFERENCE_S / seconds:.0f}x faster "
        f"than the reference's {REFERENCE_S:.0f} s"
    )


if __name__ == "__main__":
    main()
