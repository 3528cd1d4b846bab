"""CoMM, Cross and Cross+Self: loss terms, switches, features, optimiser groups, learning, and
padded sequence modalities."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import TINY_CONFIG, tiny_run

from comm_repro.config import ConfigError
from comm_repro.data.paired import Batch
from comm_repro.losses import info_nce
from comm_repro.methods import CMC, CoMM, Cross, CrossSelf, build_method

SIZE = 64
CPU_DEVICE = torch.device("cpu")
KINDS = ["comm", "cross", "cross_self", "cmc"]


def _run(kind, n_modalities=2, **method):
    """The tiny study's run of method ``kind`` on Trifeature, with ``n_modalities`` image
    modalities and the method settings ``method`` changed."""
    run = tiny_run(method=kind)
    first = run["dataset"]["modalities"][0]
    run["dataset"]["modalities"] = [
        {**copy.deepcopy(first), "name": f"image{m + 1}"} for m in range(n_modalities)
    ]
    run["method"].update(method)
    return run


def _build(kind, n_modalities=2, **method):
    return build_method(_run(kind, n_modalities, **method), [(SIZE, SIZE, 3)] * n_modalities)


def _batch(n_modalities=2, b=8, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    images = [
        torch.randint(0, 256, (b, SIZE, SIZE, 3), dtype=torch.uint8, generator=g)
        for _ in range(n_modalities)
    ]
    return Batch(images, [None] * n_modalities)


def test_build_method_takes_the_runs_kind_and_settings():
    method = _build("comm", terms="full_only")
    assert isinstance(method, CoMM) and method.terms == "full_only"
    assert method.fusion.cls.shape[-1] == TINY_CONFIG["model"]["embed_dim"]
    assert isinstance(_build("cross"), Cross) and isinstance(_build("cross_self"), CrossSelf)
    # The method's key is a name: what it is comes from its kind.
    run = _run("cross")
    run["method"]["name"] = "clip_like"
    assert isinstance(build_method(run, [(SIZE, SIZE, 3)] * 2), Cross)


@pytest.mark.parametrize("n", [2, 3])
def test_comm_makes_n_plus_one_embeddings_and_terms(n):
    torch.manual_seed(0)
    method = _build("comm", n_modalities=n)
    batch = _batch(n)
    views = method.views("strong", batch.inputs, batch.masks)
    tokens = [method._tokens(m, v, None) for m, v in enumerate(views)]
    embeddings = method.embeddings(tokens, batch.masks)
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
    encoded = [method.encode(m, x) for m, x in enumerate(batch.inputs)]
    assert torch.equal(method.fuse(encoded), f1)  # features = fuse(encode(...)) per modality


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


def test_cmc_is_infonce_over_every_pair_of_modalities_and_concatenates_encoders():
    method = _build("cmc", n_modalities=3)
    assert isinstance(method, CMC)
    batch = _batch(3)
    torch.manual_seed(3)
    out = method.loss(batch)
    torch.manual_seed(3)  # the same weak views again, by hand
    views = method.views("weak", batch.inputs, batch.masks)
    z = [method.heads[m](method.encoders[m](v).pooled()) for m, v in enumerate(views)]
    pairs = [info_nce(z[i], z[j], 0.1)[0] for i, j in ((0, 1), (0, 2), (1, 2))]
    assert torch.allclose(out["loss"], torch.stack(pairs).mean())
    assert all(h.bias is None for h in method.heads)
    assert method.eval().features(_batch(3)).shape == (8, 3 * 256)


def test_comm_with_three_modalities_has_four_terms_as_in_eq_7():
    """n + 1 = 4 terms: L between the full embeddings of the two views, and per modality i
    the mean of InfoNCE(view-1 embedding with only i, full view 2) and the converse."""
    method = _build("comm", n_modalities=3, reduce="mean")
    batch = _batch(3)
    torch.manual_seed(4)
    out = method.loss(batch)
    torch.manual_seed(4)  # the same two views, by hand
    views = method.views("strong", [torch.cat([x, x]) for x in batch.inputs], [None] * 3)
    halves = [method._tokens(m, v, None).chunk(2) for m, v in enumerate(views)]
    (*uni1, full1), (*uni2, full2) = (
        method.embeddings([h[v] for h in halves], [None] * 3) for v in range(2)
    )
    terms = [info_nce(full1, full2, 0.1)[0]] + [
        0.5 * (info_nce(uni1[i], full2, 0.1)[0] + info_nce(uni2[i], full1, 0.1)[0])
        for i in range(3)
    ]
    names = ["loss_full", "loss_mod0", "loss_mod1", "loss_mod2"]
    for name, term in zip(names, terms):
        assert torch.allclose(out[name], term, atol=1e-6), name
    assert torch.allclose(out["loss"], torch.stack(terms).mean(), atol=1e-6)


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


def _distinct_batch(b=16, seed=0) -> Batch:
    """Images that differ in overall brightness: i.i.d. noise images all look alike to a fresh
    AlexNet, which lets the CLIP loss settle on its uninformative plateau (log B)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(2):
        level = torch.linspace(0, 1, b)[torch.randperm(b, generator=g)].view(b, 1, 1, 1)
        noise = torch.rand(b, SIZE, SIZE, 3, generator=g)
        out.append((255 * (0.7 * level + 0.3 * noise)).to(torch.uint8))
    return Batch(out, [None, None])


@pytest.mark.parametrize("kind", KINDS)
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
    run = _run("comm")
    run["method"]["kind"] = "byol"
    with pytest.raises(ConfigError, match="'byol' is unknown"):
        build_method(run, [(SIZE, SIZE, 3)] * 2)
    with pytest.raises(ValueError, match=">= 2 modalities"):
        _build("cross", n_modalities=1)


# ---------------------------------------------------------------------------------------------
# Padded sequence modalities: the masks reach the encoders, the fusion and the pooling

FEATURES = {"vision": 5, "text": 7}
LENGTHS = {"vision": [6, 3, 1, 4, 6, 2, 5, 3], "text": [2, 6, 4, 1, 3, 6, 5, 2]}
STEPS = 6


def _sequence_run(kind, augment=None, **encoder):
    """A run of method ``kind`` on two sequence modalities (the tiny study's sequence encoder,
    its settings changed by ``encoder``; the tiny study's augmentations unless ``augment``)."""
    datasets = {
        "affect": {
            "family": "mosi",
            "modalities": [{"name": name, "kind": "sequence"} for name in FEATURES],
            "tasks": [{"name": "label", "kind": "binary"}],
        }
    }
    encoders = copy.deepcopy(TINY_CONFIG["encoders"])
    encoders["sequence"].update(encoder)
    augment = augment or copy.deepcopy(TINY_CONFIG["augment"])
    return tiny_run("affect", kind, datasets=datasets, encoders=encoders, augment=augment)


def _sequence_method(kind, **encoder):
    shapes = [(STEPS, f) for f in FEATURES.values()]
    return build_method(_sequence_run(kind, **encoder), shapes)


def _sequence_batch(seed=0) -> Batch:
    """Two right-padded modalities with their own lengths; every sample has a real step."""
    g = torch.Generator().manual_seed(seed)
    inputs, masks = [], []
    for name, f in FEATURES.items():
        mask = torch.arange(STEPS)[None, :] < torch.tensor(LENGTHS[name])[:, None]
        x = torch.randn(len(LENGTHS[name]), STEPS, f, generator=g)
        inputs.append(torch.where(mask[..., None], x, 0.0))
        masks.append(mask)
    return Batch(inputs, masks)


def _garbage(batch: Batch, seed=1) -> Batch:
    """The same batch with huge values (and a NaN) at its padded steps."""
    g = torch.Generator().manual_seed(seed)
    inputs = [
        torch.where(k[..., None], x, 1e4 * torch.randn(x.shape, generator=g))
        for x, k in zip(batch.inputs, batch.masks)
    ]
    sample, step = (~batch.masks[0]).nonzero()[0].tolist()
    inputs[0][sample, step, 0] = float("nan")
    return Batch(inputs, list(batch.masks))


def _loss(method, batch, seed=7):
    torch.manual_seed(seed)  # the same augmentations in every call
    return method.loss(batch)


def test_sequence_runs_resolve_the_sequence_encoder():
    method = _sequence_method("comm")
    assert method.kinds == ["sequence", "sequence"]
    assert [e.n_features for e in method.encoders] == list(FEATURES.values())
    assert all(e.dim == TINY_CONFIG["encoders"]["sequence"]["dim"] for e in method.encoders)


@pytest.mark.parametrize("kind", KINDS)
def test_padded_steps_do_not_change_the_loss_or_the_features(kind):
    """Dropout off (its draws depend on nothing but the RNG, yet it would make any two calls
    differ): with the same RNG seed, garbage at the padded steps leaves the loss and the
    features as they are, so the masks reach every encoder, the fusion and the pooling."""
    torch.manual_seed(0)
    method = _sequence_method(kind, dropout=0.0)
    batch = _sequence_batch()
    ref = _loss(method, batch)
    assert torch.isfinite(ref["loss"]) and ref["loss"] > 0
    spoiled = _garbage(batch)
    out = _loss(method, spoiled)
    assert set(out) == set(ref)
    for key in ref:
        assert torch.allclose(out[key], ref[key], rtol=1e-5, atol=1e-6), key
    # The test can fail: counted as real steps, the garbage does change the loss.
    unmasked = Batch([torch.nan_to_num(x) for x in spoiled.inputs], [None] * len(spoiled.inputs))
    assert not torch.allclose(_loss(method, unmasked)["loss"], ref["loss"], rtol=1e-3)
    method.eval()
    with torch.no_grad():
        features = method.features(batch)
        assert torch.isfinite(features).all()
        assert torch.allclose(method.features(spoiled), features, rtol=1e-5, atol=1e-6)


def _padded_further(batch: Batch, extra: int, seed=2) -> Batch:
    """The same samples padded with ``extra`` more steps (of garbage)."""
    g = torch.Generator().manual_seed(seed)
    inputs = [
        torch.cat([x, 1e4 * torch.randn(x.shape[0], extra, x.shape[2], generator=g)], dim=1)
        for x in batch.inputs
    ]
    masks = [
        torch.cat([k, torch.zeros(k.shape[0], extra, dtype=torch.bool)], 1) for k in batch.masks
    ]
    return Batch(inputs, masks)


@pytest.mark.parametrize("kind", KINDS)
def test_more_padding_does_not_change_the_loss_or_the_features(kind):
    """Padded encoder outputs are zero, so garbage alone cannot tell whether the fusion and the
    pooling skip them: more padded steps can. Augmentation off here, as its draws depend on the
    padded length."""
    augment = copy.deepcopy(TINY_CONFIG["augment"])
    augment["sequence"]["strong"] = {"drop_p": 0.0, "noise_p": 0.0}
    shapes = [(STEPS, f) for f in FEATURES.values()]
    torch.manual_seed(0)
    method = build_method(_sequence_run(kind, augment, dropout=0.0), shapes)
    batch, longer = _sequence_batch(), _padded_further(_sequence_batch(), 4)
    ref = _loss(method, batch)
    out = _loss(method, longer)
    for key in ref:
        assert torch.allclose(out[key], ref[key], rtol=1e-5, atol=1e-6), key
    # Counted as real, the zero padding of the shorter batch and the longer one differ.
    zeros = [
        Batch([torch.where(k[..., None], x, 0.0) for x, k in zip(b.inputs, b.masks)], [None, None])
        for b in (batch, longer)
    ]
    assert not torch.allclose(_loss(method, zeros[0])["loss"], _loss(method, zeros[1])["loss"])
    method.eval()
    with torch.no_grad():
        assert torch.allclose(method.features(longer), method.features(batch), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_sequence_losses_are_finite_with_dropout_and_can_be_trained(kind):
    torch.manual_seed(0)
    method = _sequence_method(kind)
    assert method.encoders[0].transformer.layers[0].dropout.p == 0.1  # the tiny study's
    batch = _garbage(_sequence_batch())
    opt = torch.optim.AdamW(method.param_groups(1e-4), lr=1e-3)
    for _ in range(3):
        loss = _loss(method, batch)["loss"]
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step()
        for name, p in method.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_comm_takes_an_image_and_a_sequence_modality():
    datasets = {
        "mixed": {
            "family": "pkg.mixed:Family",
            "modalities": [
                {"name": "frame", "kind": "image"},
                {"name": "audio", "kind": "sequence"},
            ],
            "tasks": [{"name": "label", "kind": "binary"}],
        }
    }
    run = tiny_run("mixed", "comm", datasets=datasets)
    method = build_method(run, [(SIZE, SIZE, 3), (STEPS, 5)])
    torch.manual_seed(0)
    images = _batch(1).inputs[0]
    sequences = _sequence_batch()
    batch = Batch([images, sequences.inputs[0]], [None, sequences.masks[0]])
    out = _loss(method, batch)
    assert torch.isfinite(out["loss"]) and {"loss_mod0", "loss_mod1"} <= set(out)
    method.eval()
    with torch.no_grad():
        assert method.features(batch).shape == (8, TINY_CONFIG["model"]["embed_dim"])


# Vision&Touch (datasets.md 3): a 128 px image (ResNet-18), 32 x 6 force readings (causal conv)
# and the 8 proprio values, with their per-modality tokens
VT_IMAGE = {"name": "image", "kind": "image", "encoder": {"name": "resnet18"}}
VT_FORCE = {
    "name": "force",
    "kind": "sequence",
    "encoder": {"name": "causal_conv", "dim": 128},
    "tokens": "feature",
}
VT_FORCE_TRI = {**VT_FORCE, "encoder": {"name": "causal_conv", "dim": 512}, "tokens": "step"}
VT_PROPRIO = {
    "name": "proprio",
    "kind": "tabular",
    "encoder": {"name": "proprio", "dim": 512},
    "tokens": "step",
}
VT_SHAPES = {"image": (128, 128, 3), "force": (32, 6), "proprio": (8,)}
NOISE = {"noise_p": 0.5, "noise_std": 0.1}


def _vt_method(kind, modalities, embed_dim=512):
    datasets = {
        "vt": {
            "family": "pkg.vt:Family",
            "modalities": copy.deepcopy(modalities),
            "tasks": [{"name": "ee_yaw_next", "kind": "regression"}],
        }
    }
    encoders = {**copy.deepcopy(TINY_CONFIG["encoders"]), "tabular": {"name": "mlp"}}
    augment = {**copy.deepcopy(TINY_CONFIG["augment"]), "tabular": {"strong": NOISE, "weak": {}}}
    model = {**TINY_CONFIG["model"], "embed_dim": embed_dim, "heads": 8}
    run = tiny_run("vt", kind, datasets=datasets, encoders=encoders, augment=augment, model=model)
    return build_method(run, [VT_SHAPES[m["name"]] for m in modalities])


def _vt_batch(modalities, b=4, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    inputs = []
    for m in modalities:
        shape = (b, *VT_SHAPES[m["name"]])
        if m["kind"] == "image":
            inputs.append(torch.randint(0, 256, shape, dtype=torch.uint8, generator=g))
        else:
            inputs.append(torch.randn(shape, generator=g).tanh())
    return Batch(inputs, [None] * len(modalities))


def _finite_loss_and_gradients(method, batch):
    torch.manual_seed(0)
    out = method.loss(batch)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = [p.grad for p in method.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    return out


def test_vision_and_touch_trimodal_comm_tokens_loss_and_backward():
    modalities = [VT_IMAGE, VT_FORCE_TRI, VT_PROPRIO]
    method = _vt_method("comm", modalities, embed_dim=512)
    batch = _vt_batch(modalities)
    views = method.views("strong", batch.inputs, batch.masks)
    tokens = [method._tokens(m, v, None) for m, v in enumerate(views)]
    # 16 patch tokens; the force and the proprio vectors one token each, as they are (512)
    assert [tuple(t.shape) for t in tokens] == [(4, 16, 512), (4, 1, 512), (4, 1, 512)]
    assert [type(t).__name__ for t in method.tokenizers] == [
        "PatchTokens",
        "SequenceTokens",
        "SequenceTokens",
    ]
    assert isinstance(method.tokenizers[2].proj, torch.nn.Identity)
    out = _finite_loss_and_gradients(method, batch)
    assert {"loss_full", "loss_mod0", "loss_mod1", "loss_mod2"} <= set(out)
    method.eval()
    with torch.no_grad():
        assert method.features(batch).shape == (4, 512)


def test_vision_and_touch_end_effector_comm_has_128_force_feature_tokens():
    modalities = [VT_IMAGE, VT_FORCE]
    method = _vt_method("comm", modalities, embed_dim=128)
    batch = _vt_batch(modalities)
    tokens = [method._tokens(m, method.views.plain(m, x), None) for m, x in enumerate(batch.inputs)]
    assert [tuple(t.shape) for t in tokens] == [(4, 16, 128), (4, 128, 128)]
    assert method.tokenizers[1].weight.shape == (128, 128)  # the feature tokenizer
    _finite_loss_and_gradients(method, batch)
    # without `tokens` a sequence modality takes the step tokens: one token
    default = _vt_method("comm", [VT_IMAGE, {k: v for k, v in VT_FORCE.items() if k != "tokens"}])
    assert type(default.tokenizers[1]).__name__ == "SequenceTokens"


@pytest.mark.parametrize("kind", ["cross", "cross_self", "cmc"])
def test_vision_and_touch_baselines_run_on_pooled_features(kind):
    modalities = [VT_IMAGE, VT_FORCE_TRI, VT_PROPRIO]
    method = _vt_method(kind, modalities)
    batch = _vt_batch(modalities)
    _finite_loss_and_gradients(method, batch)
    method.eval()
    with torch.no_grad():
        features = method.features(batch)
    if kind == "cross":
        assert features.shape == (4, 3 * TINY_CONFIG["methods"]["cross"]["proj_dim"])
    else:  # pooled encoder outputs: the image map's mean over its 16 locations, the vectors
        assert features.shape == (4, 512 + 512 + 512)
        image = method.encoders[0](method.views.plain(0, batch.inputs[0]))
        assert torch.allclose(features[:, :512], image.tokens.mean(1), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# MM-IMDb's baselines: SimCLR on one modality, the frozen encoders' own embeddings


def test_simclr_trains_on_its_modality_alone_and_probes_its_fused_embedding():
    run = _sequence_run("comm")
    run["method"] = {"name": "simclr", "kind": "simclr", "modality": "text", "temperature": 0.1}
    torch.manual_seed(0)
    method = build_method(run, [(STEPS, f) for f in FEATURES.values()])
    batch = _sequence_batch()
    out = method.loss(batch)
    assert set(out) == {"loss", "ssl_acc"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is None for p in method.encoders[0].parameters())  # vision never read
    assert any(p.grad is not None for p in method.encoders[1].parameters())
    method.eval()
    features = method.features(batch)
    assert features.shape == (8, TINY_CONFIG["model"]["embed_dim"])
    # the features do not change with the other modality
    other = Batch([torch.randn_like(batch.inputs[0]), batch.inputs[1]], list(batch.masks))
    torch.testing.assert_close(method.features(other), features)
    run["method"]["modality"] = "audio"
    with pytest.raises(ConfigError, match="'audio' is not a modality"):
        build_method(run, [(STEPS, f) for f in FEATURES.values()])


def test_frozen_embeddings_pool_the_named_modalities_and_train_nothing(tmp_path):
    from comm_repro.train import pretrain

    run = _sequence_run("comm")
    run["method"] = {"name": "public", "kind": "frozen_embeddings", "pool": {"text": "first"}}
    shapes = [(STEPS, f) for f in FEATURES.values()]
    method = build_method(run, shapes)
    method.requires_grad_(False)  # as frozen pretrained encoders are
    method.eval()
    batch = _sequence_batch()
    encoded = [
        method.encoder_output(m, x, k) for m, (x, k) in enumerate(zip(batch.inputs, batch.masks))
    ]
    want = torch.cat([encoded[0].pooled(), encoded[1].tokens[:, 0]], dim=1)
    torch.testing.assert_close(method.features(batch), want)
    run["method"]["use"] = ["text"]
    alone = build_method(run, shapes)
    alone.load_state_dict(method.state_dict())
    alone.eval()
    torch.testing.assert_close(alone.features(batch), encoded[1].tokens[:, 0])
    # nothing to train: the trainer writes the run's files without an epoch
    from comm_repro.data.paired import PairedBank

    data = PairedBank.aligned([x.numpy() for x in batch.inputs], [k.numpy() for k in batch.masks])
    run["train"].update(batch_size=4, epochs=3)
    summary = pretrain(method, data, run, tmp_path, CPU_DEVICE, "fp32", progress=False)
    assert summary["epochs"] == 0 and summary["last_epoch"] is None
    assert (tmp_path / "model.pt").is_file()
    assert (tmp_path / "train_log.csv").read_text().splitlines() == ["epoch,loss"]
    run["method"]["pool"] = {"text": "max"}
    with pytest.raises(ConfigError, match="pool"):
        build_method(run, shapes)


# ---------------------------------------------------------------------------------------------
# The fusion ablation (Table 4): concat + linear


def test_linear_fusion_has_the_expected_shapes_and_parameters():
    from comm_repro.models.fusion import LinearFusion
    from comm_repro.models.tokens import PooledLinear

    dim = TINY_CONFIG["model"]["embed_dim"]
    method = _build("comm", fusion="linear")
    assert isinstance(method.fusion, LinearFusion)
    assert all(isinstance(t, PooledLinear) for t in method.tokenizers)
    channels = method.encoders[0].out_channels  # AlexNet's 256
    # one linear map per modality (C -> d), then one over the concatenation (2d -> d)
    assert sum(p.numel() for p in method.tokenizers.parameters()) == 2 * (channels * dim + dim)
    assert sum(p.numel() for p in method.fusion.parameters()) == 2 * dim * dim + dim
    batch = _batch()
    out = method.loss(batch)
    assert {"loss_full", "loss_mod0", "loss_mod1"} <= set(out) and torch.isfinite(out["loss"])
    method.eval()
    assert method.features(batch).shape == (8, dim)
    with pytest.raises(ValueError, match="fusion"):
        _build("comm", fusion="bilinear")


def test_linear_fusion_cannot_represent_an_interaction_of_the_modalities():
    # The linear fusion is a sum of one term per modality: for any two tokens of each, the
    # mixed difference f(a1, a2) - f(a1, b2) - f(b1, a2) + f(b1, b2) is zero; attention's is not.
    from comm_repro.models import FusionTransformer
    from comm_repro.models.fusion import LinearFusion

    torch.manual_seed(0)
    dim = 32
    a, b = torch.randn(2, 8, 1, dim), torch.randn(2, 8, 1, dim)
    for fusion, interacts in (
        (LinearFusion(2, dim), False),
        (FusionTransformer(dim, heads=4, mlp_ratio=2, layers=1), True),
    ):
        with torch.no_grad():

            def f(x, y, fusion=fusion):
                return fusion([x, y])

            mixed = f(a[0], a[1]) - f(a[0], b[1]) - f(b[0], a[1]) + f(b[0], b[1])
            main = (f(a[0], a[1]) - f(b[0], a[1])).abs().max()
        assert (mixed.abs().max() > 1e-2 * main) == interacts, type(fusion).__name__
