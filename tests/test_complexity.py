"""Table 8's measurements: FLOPs of known layers, parameters frozen and trainable, latency."""

from __future__ import annotations

import torch
from torch import nn

from comm_repro.complexity import complexity, forward_flops, parameter_counts


def test_flops_of_a_linear_and_a_convolution_are_two_per_multiply_add():
    conv_layer, linear_layer = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8 * 16, 5)
    model = nn.Sequential(conv_layer, nn.ReLU(), nn.Flatten(), linear_layer)
    x = torch.randn(2, 3, 4, 4)
    conv = 2 * 2 * 8 * 3 * 3 * 3 * 4 * 4  # 2 x batch x C_out x C_in x k x k x H_out x W_out
    linear = 2 * 2 * 128 * 5
    assert forward_flops(lambda: model(x), model) == conv + linear


def test_attention_is_counted_and_the_mode_is_restored():
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True)
    layer.train()
    x = torch.randn(3, 5, 16)
    flops = forward_flops(lambda: layer(x), layer)
    projections = 2 * 3 * 5 * (16 * 48 + 16 * 16 + 16 * 32 + 32 * 16)  # qkv, out, feed-forward
    scores = 2 * 2 * 3 * 5 * 5 * 16  # q k^T and attention x v
    assert flops == projections + scores
    assert layer.training


def test_parameters_count_shared_ones_once_and_frozen_ones_apart():
    shared = nn.Linear(4, 4)  # 20 parameters
    frozen = nn.Linear(4, 2).requires_grad_(False)  # 10
    model = nn.ModuleList([shared, shared, frozen])
    assert parameter_counts(model) == {"params": 30, "trainable_params": 20}


def test_complexity_reports_each_column_with_its_batch_and_device():
    model = nn.Linear(6, 3)
    x = torch.randn(4, 6)
    out = complexity(model, lambda: model(x), 4, torch.device("cpu"), repeats=3)
    assert out["flops"] == 2 * 4 * 6 * 3 and out["macs"] == 4 * 6 * 3
    assert out["params"] == 21 and out["batch_size"] == 4 and out["device"] == "cpu"
    assert 0 < out["latency_min_s"] <= out["latency_s"] <= out["latency_max_s"]
    assert out["latency_repeats"] == 3
