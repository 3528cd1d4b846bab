"""CoMM, Cross and Cross+Self: loss terms, switches, features, optimiser groups, learning."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import TINY_CONFIG

from comm_repro.augment import image_view_transforms
from comm_repro.methods import build_method

SIZE = 64


def _build(kind, n_modalities=2, **overrides):
    cfg = {**TINY_CONFIG["model"], **TINY_CONFIG["methods"][kind], **overrides}
    aug = TINY_CONFIG["augment"]
    transforms = [
        image_view_transforms(SIZE, aug["strong"], aug["weak"]) for _ in range(n_modalities)
    ]
    return build_method(kind, cfg, transforms)


def _batch(n_modalities=2, b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(0, 256, (b, SIZE, SIZE, 3), dtype=torch.uint8, generator=g)
        for _ in range(n_modalities)
    ]


@pytest.mark.parametrize("n", [2, 3])
def test_comm_makes_n_plus_one_embeddings_and_terms(n):
    torch.manual_seed(0)
    method = _build("comm", n_modalities=n)
    batch = _batch(n)
    tokens = [method._tokens(m, method.transforms[m].strong(x)) for m, x in enumerate(batch)]
    embeddings = method.embeddings(tokens)
    assert len(embeddings) == n + 1
    assert all(e.shape == (8, TINY_CONFIG["model"]["head_out"]) for e in embeddings)
    out = method.loss(batch)
    assert {"loss", "loss_full", "ssl_acc"} | {f"loss_mod{m}" for m in range(n)} <= set(out)


@pytest.mark.parametrize(
    ("terms", "reduce"),
    [
        ("both", "sum"),
        ("both", "mean"),
        ("full_only", "sum"),
        ("unimodal_only", "sum"),
        ("unimodal_only", "mean"),
    ],
)
def test_comm_term_switches(terms, reduce):
    method = _build("comm", terms=terms, reduce=reduce)
    torch.manual_seed(1)
    out = method.loss(_batch())
    kept = {
        "both": ["loss_full", "loss_mod0", "loss_mod1"],
        "full_only": ["loss_full"],
        "unimodal_only": ["loss_mod0", "loss_mod1"],
    }[terms]
    total = sum(out[k].item() for k in kept)
    expected = total / len(kept) if reduce == "mean" else total
    assert math.isclose(out["loss"].item(), expected, rel_tol=1e-5)


def test_comm_features_are_the_fused_embedding_and_deterministic():
    method = _build("comm").eval()
    batch = _batch()
    f1, f2 = method.features(batch), method.features(batch)
    assert f1.shape == (8, TINY_CONFIG["model"]["embed_dim"])
    assert torch.equal(f1, f2)  # plain views: no randomness at evaluation


def test_cross_clamps_logit_scale_and_concatenates_projections():
    method = _build("cross")
    with torch.no_grad():
        method.logit_scale.fill_(10.0)
    method.after_step()
    assert math.isclose(method.logit_scale.item(), math.log(100.0), rel_tol=1e-6)
    assert method.eval().features(_batch()).shape == (
        8,
        2 * TINY_CONFIG["methods"]["cross"]["proj_dim"],
    )


def test_cross_self_total_is_cross_plus_scaled_self_terms():
    method = _build("cross_self", ssl_scale=0.5)
    torch.manual_seed(2)
    out = method.loss(_batch())
    expected = out["loss_cross"] + 0.5 * 0.5 * (out["loss_self0"] + out["loss_self1"])
    assert torch.allclose(out["loss"], expected)
    assert method.eval().features(_batch()).shape == (8, 2 * 256)


def test_param_groups_exclude_biases_norms_and_tokens_from_decay():
    method = _build("comm")
    decay, no_decay = method.param_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    assert id(method.fusion.cls) in ids
    assert id(method.fusion.norm.weight) in ids and id(method.head[0].bias) in ids
    assert id(method.head[0].weight) not in ids
    total = sum(p.numel() for p in method.parameters())
    assert total == sum(p.numel() for g in (decay, no_decay) for p in g["params"])


def _distinct_batch(b=16, seed=0):
    """Images that differ in overall brightness: i.i.d. noise images all look alike to a fresh
    AlexNet, which lets the CLIP loss settle on its uninformative plateau (log B)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(2):
        level = torch.linspace(0, 1, b)[torch.randperm(b, generator=g)].view(b, 1, 1, 1)
        noise = torch.rand(b, SIZE, SIZE, 3, generator=g)
        out.append((255 * (0.7 * level + 0.3 * noise)).to(torch.uint8))
    return out


@pytest.mark.parametrize("kind", ["comm", "cross", "cross_self"])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(kind):
    torch.manual_seed(0)
    method = _build(kind)
    batch = _distinct_batch()
    opt = torch.optim.AdamW(method.param_groups(1e-4), lr=3e-4)
    losses = []
    for _ in range(30):
        torch.manual_seed(100)  # the same views every step: the loss must go down
        loss = method.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < losses[0] - 0.05, losses


def test_unknown_kind_and_bad_switch_are_reported():
    with pytest.raises(ValueError, match="terms"):
        _build("comm", terms="everything")
    from comm_repro.config import ConfigError

    with pytest.raises(ConfigError, match="simclr"):
        build_method("simclr", copy.deepcopy(TINY_CONFIG["model"]), [])
