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

Then (``--fusion``, on by default) the part of a CoMM step that trains: the paper's MM-IMDb CoMM
(embedding 768, one fusion layer of 8 heads, head 512 -> 256, the n + 1 = 3 InfoNCE terms) fed
the frozen encoders' outputs of both views as they come (50 poster tokens, 128 plot tokens,
768-d), forward, backward and the AdamW step; and, where both CLIP encoders were measured, the
projected wall time of one MM-IMDb CoMM run with the CLIP backbone on this device: 70 epochs of
243 steps of 64 movies, each step two views through each frozen encoder plus the fusion step.

    python benchmarks/bench_frozen_encoders.py [--encoders clip text] [--batch-size 64]
        [--steps 3] [--precisions auto|fp32|bf16 ...] [--device cpu] [--no-fusion]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
from bench_common import machine_line
from torch import nn

from comm_repro.complexity import forward_flops, forward_latency, parameter_counts
from comm_repro.config import load_yaml, run_config
from comm_repro.data.paired import Batch
from comm_repro.methods import build_method
from comm_repro.methods.base import minimise
from comm_repro.models import Encoded, frozen
from comm_repro.train import autocast_context, resolve_precision

TRAIN, ALL = 15_552, 25_959  # MM-IMDb's training split and all its movies (Arevalo et al.)
EPOCHS, VIEWS = 70, 2  # the authors' MM-IMDb schedule; two augmented views per step
TEXT_LENGTH = 128  # the multilingual text model's max length (plots are cut there)
IMAGE_TOKENS, WIDTH = 50, 768  # CLIP ViT-B/32's tokens per poster and both encoders' width
PAPER_BATCH = 64


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


class TokensAsInput(nn.Module):
    """Stands in for a frozen encoder whose outputs are given: the fusion step alone is timed."""

    out_channels = WIDTH

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Encoded:
        return Encoded(x, mask)


def fusion_method(device: torch.device):
    """The paper's MM-IMDb CoMM (config/paper.yaml) with its two encoders replaced by
    :class:`TokensAsInput`: what trains in a step, on the frozen encoders' outputs."""
    cfg = load_yaml(Path(__file__).resolve().parents[1] / "config" / "paper.yaml")
    dataset = copy.deepcopy(cfg["datasets"]["mmimdb"])
    # built as text modalities (no views of their own) with the placeholder of given outputs,
    # then fed those outputs
    for modality in dataset["modalities"]:
        modality["kind"] = "text"
    dataset["encoders"] = {"text": {"name": "given", "out_channels": WIDTH}}
    cfg["datasets"] = {"mmimdb": dataset}
    run = run_config(cfg, "mmimdb", "comm", 0)
    method = build_method(run, [(IMAGE_TOKENS, WIDTH), (TEXT_LENGTH, WIDTH)])
    method.encoders = nn.ModuleList([TokensAsInput(), TokensAsInput()])
    return method.to(device).train(), run


def time_fusion_step(device: torch.device, precision: str, steps: int, batch: int) -> float:
    """Median seconds of one CoMM training step on precomputed tokens of both views."""
    torch.manual_seed(0)
    method, run = fusion_method(device)
    optimizer = method.optimizers(run["train"])["main"]
    mask = torch.ones(batch, TEXT_LENGTH, dtype=torch.bool, device=device)
    data = Batch(
        [
            torch.randn(batch, IMAGE_TOKENS, WIDTH, device=device),
            torch.randn(batch, TEXT_LENGTH, WIDTH, device=device),
        ],
        [None, mask],
    )

    def step():
        with autocast_context(device, precision):
            loss = method.loss(data)["loss"]
        minimise(loss, optimizer)

    times = []
    for i in range(steps + 1):  # the first step warms up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoders", nargs="+", default=["clip", "text"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed batches (after one warm-up)")
    parser.add_argument(
        "--precisions", nargs="+", default=["auto"], choices=["auto", "fp32", "bf16"]
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--no-fusion", dest="fusion", action="store_false", help="skip the fusion step"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    print(machine_line(device))
    precisions = list(dict.fromkeys(resolve_precision(device, p) for p in args.precisions))
    rates: dict[tuple[str, str], float] = {}
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
            rates[name, precision] = rate
            once_h = ALL / rate / 3600
            run_h = TRAIN * VIEWS * EPOCHS / rate / 3600
            print(
                f"  {precision}: {median:.3f} s per batch (median of {args.steps}), "
                f"{rate:.1f} {sample}s/s; every {sample} once: {once_h:.2f} h; "
                f"{EPOCHS} epochs x {VIEWS} views of the training split: {run_h:.1f} h"
            )
    if args.fusion:
        report_fusion(args, device, precisions, rates)


def report_fusion(args, device, precisions, rates) -> None:
    """The fusion step's time, and with both CLIP encoders' rates one run's projection."""
    steps_per_epoch = TRAIN // PAPER_BATCH
    print(
        f"\nfusion: CoMM's trainable part (embedding {WIDTH}, 1 layer, 8 heads) on precomputed "
        f"tokens ({IMAGE_TOKENS} poster + {TEXT_LENGTH} plot tokens), batch {args.batch_size}"
    )
    for precision in precisions:
        step_s = time_fusion_step(device, precision, args.steps, args.batch_size)
        per_step = step_s * PAPER_BATCH / args.batch_size  # the paper's batch, linearly
        fusion_h = per_step * steps_per_epoch * EPOCHS / 3600
        line = (
            f"  {precision}: {step_s:.3f} s per step (median of {args.steps}); "
            f"{EPOCHS} epochs x {steps_per_epoch} steps of {PAPER_BATCH}: {fusion_h:.1f} h"
        )
        if ("clip", precision) in rates and ("text", precision) in rates:
            frozen_s = sum(
                VIEWS * PAPER_BATCH / rates[name, precision] for name in ("clip", "text")
            )
            run_h = (frozen_s + per_step) * steps_per_epoch * EPOCHS / 3600
            line += (
                f"; one MM-IMDb CoMM run (CLIP backbone): {run_h:.1f} h "
                f"({frozen_s / (frozen_s + per_step):.0%} of it in the frozen encoders)"
            )
        print(line)


if __name__ == "__main__":
    main()
