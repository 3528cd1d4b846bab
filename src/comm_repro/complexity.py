"""Model complexity as the paper's Table 8 reports it: the FLOPs and MACs of one forward pass,
the parameters, and the forward latency, measured on the machine that runs it.

FLOPs come from PyTorch's own counter (``torch.utils.flop_counter.FlopCounterMode``), which
counts the matrix products, convolutions and attention kernels (2 FLOPs per multiply-add) and
not the element-wise operations (activations, norms, softmax); MACs are half of them. Counting
turns off PyTorch's fused transformer inference path, which the counter cannot see into, and
adds the CPU attention kernel's formula, which it lacks. Latency is the median wall time of
whole forward passes at the given batch (fused path as inference runs it), after warm-up passes,
with the device synchronised around each one. Everything runs in eval mode under ``no_grad``;
the model's mode is restored afterwards.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """All parameters (shared ones once) and the trainable ones (``requires_grad``)."""
    unique = {id(p): p for p in model.parameters()}.values()
    return {
        "params": sum(p.numel() for p in unique),
        "trainable_params": sum(p.numel() for p in unique if p.requires_grad),
    }


@contextmanager
def _evaluating(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def _no_fused_attention():
    """PyTorch's fused inference path of ``nn.TransformerEncoderLayer`` and
    ``nn.MultiheadAttention`` (eval mode, no grad) runs as one kernel the counter does not see;
    counting runs the same layers through their plain operations instead."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """Scaled dot-product attention on the CPU (its flash kernel, which PyTorch's counter has
    no formula for): the same count as the GPU kernels', Q K^T and the weighted sum of V."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# Kernels the counter does not know, with their formulas (of the argument shapes).
EXTRA_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}


def forward_flops(forward: Callable[[], Any], model: nn.Module) -> int:
    """FLOPs of one call of ``forward`` (a closure running ``model`` on fixed inputs)."""
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
    with _evaluating(model), _no_fused_attention(), counter:
        forward()
    return int(counter.get_total_flops())


def forward_latency(
    forward: Callable[[], Any],
    model: nn.Module,
    device: torch.device,
    repeats: int = 5,
    warmup: int = 1,
) -> dict[str, float]:
    """Median, min and max seconds of ``repeats`` calls of ``forward`` after ``warmup`` calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    times = []
    with _evaluating(model):
        for i in range(warmup + repeats):
            _synchronize(device)
            t0 = time.perf_counter()
            forward()
            _synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return {
        "latency_s": statistics.median(times),
        "latency_min_s": min(times),
        "latency_max_s": max(times),
        "latency_repeats": repeats,
    }


def complexity(
    model: nn.Module,
    forward: Callable[[], Any],
    batch_size: int,
    device: torch.device,
    repeats: int = 5,
    warmup: int = 1,
) -> dict[str, Any]:
    """Table 8's columns for ``model`` run by ``forward`` on a batch of ``batch_size``: FLOPs and
    MACs of that forward pass, parameters, forward latency; with the batch and the device."""
    flops = forward_flops(forward, model)
    return {
        "flops": flops,
        "macs": flops // 2,
        **parameter_counts(model),
        **forward_latency(forward, model, device, repeats, warmup),
        "batch_size": int(batch_size),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }


def run_complexity(
    run_cfg: dict[str, Any],
    data_dir,
    device: torch.device,
    precision: str,
    batch_size: int = 64,
    repeats: int = 5,
) -> dict[str, Any]:
    """Table 8's columns for the model of a run's settings (``run_cfg``), its probe-time forward
    pass (every encoder, then the fusion: ``features``) on the first ``batch_size`` movies of
    the prepared test split, in ``precision`` on ``device``. The model is built as the run
    builds it (frozen encoders with their configured weights); what it has trained does not
    change these counts, so no training is needed."""
    from pathlib import Path

    from comm_repro.data.registry import family
    from comm_repro.methods import build_method
    from comm_repro.train import autocast_context

    dataset = run_cfg["dataset"]
    probe = run_cfg.get("probe") or {}
    data = family(dataset["family"]).probe_data(Path(data_dir), dataset, probe)
    rows = torch.arange(min(batch_size, len(data.test)))
    batch = data.test.gather(rows)
    label_shapes = {t["labels"]: data.test_labels[t["name"]].shape[1:] for t in dataset["tasks"]}
    model = build_method(run_cfg, data.test.sample_shapes(), label_shapes).to(device)
    inputs = [x.to(device) for x in batch.inputs]
    masks = [None if k is None else k.to(device) for k in batch.masks]
    moved = type(batch)(inputs, masks)

    def forward():
        with autocast_context(device, precision):
            return model.features(moved)

    measured = complexity(model, forward, len(rows), device, repeats=repeats)
    lengths = [int(k.sum(dim=1).max()) for k in masks if k is not None]
    return {**measured, "precision": precision, "max_tokens_per_text": max(lengths, default=None)}
