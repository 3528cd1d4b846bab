"""Time the whole Trifeature generation (2,400 train + 200 test images at 224 px).

Prints the machine (CPU model, ISA features, torch threads) and our time to render the set and
to write it (compressed .npz, as `comm-repro prepare` does). Without --authors-code it prints
measured figures only, no ratio.

With --authors-code PATH, a checkout of github.com/Duplums/CoMM, it also times their generator in
the same process: their Trifeatures dataset renders each stimulus per pixel and writes it as a
PNG file when it finds no images under its root (here an empty temporary folder). The ratio
compares render + write on both sides. Their module needs, beside torch and torchvision:

    pip install pytorch-lightning omegaconf einops tensorboard pandas

    python benchmarks/bench_generate.py [--num-per-combination 3] [--authors-code PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

from bench_common import import_authors_modules, machine_line

from comm_repro.data.trifeatures import generate, save_splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--num-per-combination", type=int, default=3, help="train views per combination"
    )
    parser.add_argument(
        "--authors-code",
        metavar="PATH",
        help="a checkout of github.com/Duplums/CoMM: time their generator side by side",
    )
    args = parser.parse_args()
    n = args.num_per_combination
    if args.authors_code:  # fail on a missing package before anything is timed
        (their_module,) = import_authors_modules(args.authors_code, ["dataset.trifeatures"])

    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        splits = generate(seed=42, num_per_combination=n, progress=False)
        rendered = time.perf_counter() - t0
        save_splits(splits, tmp, seed=42, num_per_combination=n)
        ours = time.perf_counter() - t0
    counts = ", ".join(f"{len(s)} {name}" for name, s in splits.items())
    print(
        f"ours: rendered {counts} images in {rendered:.1f} s, {ours:.1f} s with writing the .npz "
        "files"
    )
    if not args.authors_code:
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # they print a line per image
            their_module.Trifeatures(tmp, split="train", num_per_combination=n, seed=42)
        theirs = time.perf_counter() - t0
        written = {s: len(list(Path(tmp, s).glob("*.png"))) for s in ("train", "test")}
    counts = ", ".join(f"{k} {name}" for name, k in written.items())
    print(f"authors' code: rendered and wrote {counts} PNG files in {theirs:.1f} s")
    print(
        f"our time / their time: {ours / theirs:.3f} (render + write on both sides, same process)"
    )


if __name__ == "__main__":
    main()
