"""Throughput of MM-IMDb's frozen encoders on this machine, and what it implies for one run.

For each encoder named (``--encoders``: ``clip`` -- CLIP's ViT-B/32 image tokens through timm;
``text`` -- the multilingual CLIP text model's transformer, a DistilBERT, on 128-token plots;
``blip2`` -- BLIP-2's ViT-g and Q-Former image queries, about 1 B parameters), the script builds
the real architecture with random weights (the same arithmetic as the pretrained weights;
``comm_repro.models.frozen``), times forward passes of a batch (``--batch-size``, default 64)
under no_grad at each precision, and prints the median seconds per batch, the samples per
second, the FLOPs per sample (PyTorch's counter, ``comm_repro.complexity``), and two
projections for MM-IMDb (15,552 training and 25,959 movies in all): the one-off pass over every
poster or plot (the frozen features the probes read), and the frozen forward passes of a 70-epoch
CoMM run, whose two augmented views of each training sample go through the encoder at every
step (the crops and the text masking change every step, so nothing there can be computed once).
The second is a lower bound of a run's time: the trainable fusion step comes on top.

    python benchmarks/bench_frozen_encoders.py [--encoders clip text] [--batch-size 64]
        [--steps 3] [--precisions auto|fp32|bf16 ...] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch
from bench_common import machine_line

from comm_repro.complexity import forward_flops, forward_latency, parameter_counts
from comm_repro.models import frozen
from comm_repro.train import autocast_context, resolve_precision

TRAIN, ALL = 15_552, 25_959  # MM-IMDb's training split and all its movies (Arevalo et al.)
EPOCHS, VIEWS = 70, 2  # the authors' MM-IMDb schedule; two augmented views per step
TEXT_LENGTH = 128  # the multilingual text model's max length (plots are cut there)


def build(name: str):
    """(encoder, make_input(batch), what one sample is) for an encoder name."""
    if name == "clip":
        return frozen.ClipImageTokens(weights="random"), _images(224), "poster"
    if name == "blip2":
        return frozen.Blip2ImageQueries(weights="random"), _images(224), "poster"
    if name == "text":
        encoder = frozen.SentenceTransformerStates(weights="random")
        vocab = encoder.net.config.vocab_size
        return encoder, lambda n: (torch.randint(1000, vocab, (n, TEXT_LENGTH)),), "plot"
    raise SystemExit(f"error: unknown encoder {name!r}; known: clip, text, blip2")


def _images(size: int):
    return lambda n: (torch.randn(n, 3, size, size),)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoders", nargs="+", default=["clip", "text"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed batches (after one warm-up)")
    parser.add_argument(
        "--precisions", nargs="+", default=["auto"], choices=["auto", "fp32", "bf16"]
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(machine_line(device))
    precisions = list(dict.fromkeys(resolve_precision(device, p) for p in args.precisions))
    for name in args.encoders:
        torch.manual_seed(0)
        encoder, make, sample = build(name)
        encoder.to(device).eval()
        inputs = tuple(x.to(device) for x in make(args.batch_size))
        one = tuple(x[:1] for x in inputs)
        flops = forward_flops(lambda e=encoder, x=one: e(*x), encoder)
        millions = parameter_counts(encoder)["params"] / 1e6
        print(
            f"\n{name}: {type(encoder).__name__}, {millions:.1f} M parameters, "
            f"{flops / 1e9:.2f} GFLOPs per {sample}, batch {args.batch_size}"
        )
        for precision in precisions:

            def forward(e=encoder, x=inputs, p=precision):
                with autocast_context(device, p):
                    e(*x)

            median = forward_latency(forward, encoder, device, args.steps, warmup=1)["latency_s"]
            rate = args.batch_size / median
            once_h = ALL / rate / 3600
            run_h = TRAIN * VIEWS * EPOCHS / rate / 3600
            print(
                f"  {precision}: {median:.3f} s per batch (median of {args.steps}), "
                f"{rate:.1f} {sample}s/s; every {sample} once: {once_h:.2f} h; "
                f"{EPOCHS} epochs x {VIEWS} views of the training split: {run_h:.1f} h"
            )


if __name__ == "__main__":
    main()
