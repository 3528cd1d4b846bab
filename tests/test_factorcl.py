"""FactorCL and SupCon: the critic bounds, the factorised all-pairs critic, FactorCL's two
optimisers and their step, its probe features and resume; the supervised contrastive loss."""

from __future__ import annotations

import contextlib
import copy
import math

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, tiny_run

from comm_repro.config import ConfigError
from comm_repro.data.paired import Batch, PairedBank
from comm_repro.errors import TrainingInterrupted
from comm_repro.losses import club_upper_bound, info_nce, infonce_lower_bound, supcon_loss
from comm_repro.methods import METHODS, FactorCL, SupCon, build_method
from comm_repro.methods.factorcl import CLUB_CRITICS, HEADS, CLUBCritic, InfoNCECritic
from comm_repro.train import CHECKPOINT, pretrain

CPU = torch.device("cpu")
CRITIC_PATHS = [["critics", name] for name in CLUB_CRITICS]
FEATURES = {"vision": 5, "text": 7}
DIMS = {"vision": 16, "text": 12}  # the encoders' widths: d1, d2
STEPS = 6
B = 8
FACTORCL = {"kind": "factorcl", "critic_hidden": 16, "critic_layers": 1, "num_club_iter": 1}
METHOD_SETTINGS = {
    "factorcl": {**FACTORCL, "mode": "ssl"},
    "factorcl_sup": {**FACTORCL, "mode": "sup"},
    "supcon": {"kind": "supcon", "proj_dim": 8, "temperature": 0.5},
}
TASKS = [{"name": "label", "kind": "binary"}, {"name": "score", "kind": "regression"}]


def _sequence_run(method, n_modalities=2, dropout=0.1, **settings):
    """A run of ``method`` on two (or more) sequence modalities of their own widths."""
    names = list(FEATURES) + [f"extra{i}" for i in range(n_modalities - 2)]
    modalities = [
        {"name": n, "kind": "sequence", "encoder": {"dim": DIMS.get(n, 16)}}
        for n in names[:n_modalities]
    ]
    datasets = {"affect": {"family": "mosi", "modalities": modalities, "tasks": TASKS}}
    encoders = copy.deepcopy(TINY_CONFIG["encoders"])
    encoders["sequence"]["dropout"] = dropout
    methods = copy.deepcopy(METHOD_SETTINGS)
    methods[method].update(settings)
    run = tiny_run("affect", method, datasets=datasets, encoders=encoders, methods=methods)
    run["train"].update(batch_size=B, lr=1e-3, epochs=2, precision="fp32")
    return run


def _build(method, n_modalities=2, dropout=0.1, **settings):
    run = _sequence_run(method, n_modalities, dropout, **settings)
    shapes = [(STEPS, FEATURES.get(m["name"], 3)) for m in run["dataset"]["modalities"]]
    return build_method(run, shapes, {"label": (), "score": (1,)})


def _batch(seed=0, n=B) -> Batch:
    g = torch.Generator().manual_seed(seed)
    inputs, masks = [], []
    for f in FEATURES.values():
        lengths = torch.randint(1, STEPS + 1, (n,), generator=g)
        mask = torch.arange(STEPS)[None, :] < lengths[:, None]
        inputs.append(torch.where(mask[..., None], torch.randn(n, STEPS, f, generator=g), 0.0))
        masks.append(mask)
    labels = {"label": torch.arange(n) % 2, "score": torch.randn(n, 1, generator=g)}
    return Batch(inputs, masks, labels)


# ---------------------------------------------------------------------------------------------
# The bounds and the critics


def test_infonce_and_club_bounds_of_a_score_matrix_by_hand():
    # scores[i, j] = T(x_j, y_i): row i holds every x against y_i; the diagonal the positives
    scores = torch.tensor([[1.0, 0.0], [2.0, 3.0]])
    lse0, lse1 = math.log(math.e + 1.0), math.log(math.e**2 + math.e**3)  # over each row
    expected = (1.0 + 3.0) / 2 - ((lse0 + lse1) / 2 - math.log(2))
    assert math.isclose(infonce_lower_bound(scores).item(), expected, rel_tol=1e-6)
    # over the columns instead, the bound would differ: the orientation matters here
    assert not math.isclose(infonce_lower_bound(scores.T).item(), expected, rel_tol=1e-3)
    assert math.isclose(club_upper_bound(scores).item(), 2.0 - 6.0 / 4, rel_tol=1e-6)
    s3 = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0], [4.0, 0.0, -1.0]])
    lse = [
        math.log(1 + math.e + math.e**2),
        math.log(3 * math.e),
        math.log(math.e**4 + 1 + 1 / math.e),
    ]
    expected3 = 0.0 / 3 - (sum(lse) / 3 - math.log(3))
    assert math.isclose(infonce_lower_bound(s3).item(), expected3, rel_tol=1e-6)
    assert math.isclose(club_upper_bound(s3).item(), 0.0 - 9.0 / 9, abs_tol=1e-6)


@pytest.mark.parametrize("critic_type", [InfoNCECritic, CLUBCritic])
def test_all_pairs_scores_equal_an_explicit_concatenation_of_every_pair(critic_type):
    torch.manual_seed(0)
    n, dx, dy = 5, 3, 4
    critic = critic_type(dx, dy, hidden=8, layers=2)
    x, y = torch.randn(n, dx), torch.randn(n, dy)
    net = torch.nn.Sequential(critic.first, critic.rest)
    explicit = torch.empty(n, n)
    for i in range(n):
        for j in range(n):
            # the authors' order: [x; y] for the InfoNCE critic, [y; x] for the CLUB critic
            pair = [y[i], x[j]] if critic_type is CLUBCritic else [x[j], y[i]]
            explicit[i, j] = net(torch.cat(pair))[0]
    scores = critic.scores(x, y)
    assert torch.allclose(scores, explicit, atol=1e-6)
    assert torch.allclose(critic.pair(x, y), explicit.diagonal(), atol=1e-6)
    if critic_type is CLUBCritic:
        assert torch.allclose(critic(x, y), explicit.diagonal().mean() - explicit.mean())
        assert torch.allclose(critic.learning_loss(x, y), -infonce_lower_bound(explicit))
    else:
        lower = explicit.diagonal().mean() - explicit.logsumexp(1).mean() + math.log(n)
        assert torch.allclose(critic(x, y), -lower, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# FactorCL: its parts, its two-optimiser step, its features


class _CountingViews:
    """The method's views, counting the calls that draw augmentations."""

    def __init__(self, views):
        self.inner, self.calls = views, []

    def __call__(self, name, *args, **kwargs):
        self.calls.append(name)
        return self.inner(name, *args, **kwargs)

    def plain(self, m, x):
        return self.inner.plain(m, x)


def _club_learning_by_hand(method, step):
    """The CLUB critics' learning losses on ``step``'s views by the method's current state."""
    with torch.no_grad():
        z, z_aug = (
            [method.encoders[m](step[key][m], step["masks"][m]).pooled() for m in range(2)]
            for key in ("x", "x_aug" if method.mode == "ssl" else "x")
        )
        heads = method.heads["club_x1x2"], method.heads["club_x1x2_cond"]
        x = [heads[0][m](z[m]) for m in range(2)]
        y = [heads[1][m](z_aug[m]) if method.mode == "ssl" else step["c"] for m in range(2)]
        cond = [torch.cat([heads[1][m](z[m]), y[m]], 1) for m in range(2)]
        return method.critics["club_x1x2"].learning_loss(*x) + method.critics[
            "club_x1x2_cond"
        ].learning_loss(*cond)


def _snapshot(method):
    return {n: p.detach().clone() for n, p in method.named_parameters()}


def _changed(before, after):
    return {n for n in before if not torch.equal(before[n], after[n])}


@pytest.mark.parametrize(("method_name", "iters"), [("factorcl", 1), ("factorcl_sup", 2)])
def test_factorcl_step_moves_the_main_parameters_then_only_the_club_critics(method_name, iters):
    torch.manual_seed(0)
    method = _build(method_name, dropout=0.0, num_club_iter=iters)
    assert isinstance(method, FactorCL)
    assert method.mode == ("sup" if method_name == "factorcl_sup" else "ssl")
    optimizers = method.optimizers({"lr": 1e-3, "weight_decay": 0.5})
    assert set(optimizers) == {"main", "critics"}
    club = {n for n, _ in method.named_parameters() if n.split(".")[:2] in CRITIC_PATHS}
    assert len(club) == 2 * (2 + 1) * 2  # 2 critics x (2 + critic_layers) Linear x (W, b)
    every = {id(p) for p in method.parameters()}
    ids = [{id(p) for g in o.param_groups for p in g["params"]} for o in optimizers.values()]
    assert ids[0] | ids[1] == every and not ids[0] & ids[1]  # a partition of the parameters
    assert ids[1] == {id(p) for n, p in method.named_parameters() if n in club}
    assert all(type(o) is torch.optim.Adam for o in optimizers.values())
    assert all(g["weight_decay"] == 0 for o in optimizers.values() for g in o.param_groups)

    views = method.views = _CountingViews(method.views)
    recorded, at_critic_steps = {}, []
    step_inputs = method.step_inputs

    def record(batch):
        recorded["step"] = step_inputs(batch)
        return recorded["step"]

    method.step_inputs = record
    critic_step = optimizers["critics"].step

    def spy():
        at_critic_steps.append(
            (_snapshot(method), _club_learning_by_hand(method, recorded["step"]).item())
        )
        critic_step()

    optimizers["critics"].step = spy
    before = _snapshot(method)
    terms = method.train_step(_batch(), optimizers, contextlib.nullcontext)
    after = _snapshot(method)

    assert len(at_critic_steps) == iters
    after_main = at_critic_steps[0][0]
    # Both bounds ignore a constant added to every score, so the critics' output biases get
    # a gradient of rounding errors only: they may or may not move.
    shift = {n for n in before if n.startswith("critics.") and n.endswith(".rest.3.bias")}
    assert len(shift) == 6
    moved = _changed(before, after_main)
    assert not moved & club, "the main step must leave the CLUB critics alone"
    assert set(before) - club - shift <= moved, sorted(set(before) - club - shift - moved)
    for k in range(iters):  # each critic step changes the CLUB critics and nothing else
        nxt = at_critic_steps[k + 1][0] if k + 1 < iters else after
        moved = _changed(at_critic_steps[k][0], nxt)
        assert club - shift <= moved <= club, sorted(moved ^ club)
    # The critics learn on representations by the updated encoders and heads, of the views the
    # main step drew (one weak and, in SSL, one strong view per step).
    assert terms["club_learning_loss"].item() == pytest.approx(at_critic_steps[-1][1], rel=1e-5)
    assert views.calls == (["weak", "strong"] if method.mode == "ssl" else ["weak"])
    names = ["nce_x1x2", "club_x1x2", "nce_x1y", "nce_x2y", "nce_x1x2_cond", "club_x1x2_cond"]
    assert set(terms) == {"loss", "club_learning_loss", *names}
    assert all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
    total = sum(terms[n] for n in names)
    assert torch.allclose(terms["loss"], total)


def test_factorcl_critic_dimensions_follow_the_mode_and_the_task():
    d1, d2 = DIMS["vision"], DIMS["text"]
    ssl, sup = _build("factorcl"), _build("factorcl_sup")
    reg = _build("factorcl_sup", task="score")
    dims = {
        name: [(c.x_dim, c.y_dim) for c in (m.critics[name] for m in (ssl, sup, reg))]
        for name in ("infonce_x1x2", "club_x1x2", "infonce_x1y", "infonce_x2y")
    }
    assert dims["infonce_x1x2"] == dims["club_x1x2"] == [(d1, d2)] * 3
    assert dims["infonce_x1y"] == [(d1, d1), (d1, 1), (d1, 1)]
    assert dims["infonce_x2y"] == [(d2, d2), (d2, 1), (d2, 1)]
    cond = [
        (m.critics["infonce_x1x2_cond"].x_dim, m.critics["club_x1x2_cond"].y_dim)
        for m in (ssl, sup, reg)
    ]
    assert cond == [(2 * d1, 2 * d2), (d1 + 2, d2 + 2), (d1 + 1, d2 + 1)]  # binary: 2 classes
    assert sum(1 for _ in ssl.heads.children()) == 5 and all(
        len(h) == 2 for h in ssl.heads.values()
    )
    # SUP: the label value as one float for the x-y critics, the one-hot class to condition on
    batch = _batch()
    step = sup.step_inputs(batch)
    assert torch.equal(step["y"], batch.labels["label"].float()[:, None])
    assert torch.equal(step["c"], torch.nn.functional.one_hot(batch.labels["label"], 2).float())
    reg_step = reg.step_inputs(batch)
    assert torch.equal(reg_step["y"], batch.labels["score"]) and torch.equal(
        reg_step["c"], reg_step["y"]
    )
    assert torch.isfinite(reg.loss(batch)["loss"])
    with pytest.raises(ValueError, match="FactorCL takes exactly 2 modalities"):
        _build("factorcl", n_modalities=3)


def test_factorcl_probe_features_are_the_five_heads_of_both_modalities():
    torch.manual_seed(0)
    method = _build("factorcl").eval()
    batch = _batch()
    with torch.no_grad():
        features = method.features(batch)
        assert features.shape == (B, 5 * DIMS["vision"] + 5 * DIMS["text"])
        z = method.encoders[1](batch.inputs[1], batch.masks[1]).pooled()
        expected = torch.cat([method.heads[name][1](z) for name in HEADS], 1)
    assert torch.allclose(features[:, 5 * DIMS["vision"] :], expected, atol=1e-6)
    assert method.encode(0, batch.inputs[0], batch.masks[0])[1] is None


# ---------------------------------------------------------------------------------------------
# SupCon


def test_supcon_loss_of_two_samples_by_hand():
    # sample 0: views (1, 0), (0, 1); sample 1: (-1, 0), (0, -1). Each anchor has one other
    # embedding at dot product -1 and two at 0.
    features = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, -1.0]]])
    tau = 0.5  # logits: dots / 0.5, so -2 and 0, 0
    denom = math.log(2.0 + math.exp(-2.0))
    different = supcon_loss(features, torch.tensor([0, 1]), tau, tau)
    assert math.isclose(different.item(), denom, rel_tol=1e-6)  # the one positive is at 0
    same = supcon_loss(features, torch.tensor([3, 3]), tau, tau)
    assert math.isclose(same.item(), denom + 2.0 / 3.0, rel_tol=1e-6)  # mean of -2, 0, 0
    scaled = supcon_loss(features, torch.tensor([3, 3]), tau, base_temperature=1.0)
    assert math.isclose(scaled.item(), 0.5 * (denom + 2.0 / 3.0), rel_tol=1e-6)
    assert torch.allclose(supcon_loss(features, None, tau), different)  # own sample only


def test_supcon_without_labels_is_nt_xent_scaled_by_temperature_over_base():
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    tau, base = 0.3, 0.07
    views = torch.stack([torch.nn.functional.normalize(z, dim=1) for z in (z1, z2)], 1)
    expected = info_nce(z1, z2, tau)[0] * tau / base
    assert torch.allclose(supcon_loss(views, None, tau, base), expected, atol=1e-5)
    # with labels, the other samples of the class become positives too: a different loss
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert not torch.allclose(supcon_loss(views, labels, tau, base), expected, atol=1e-3)


def test_supcon_method_loss_features_and_task_check():
    torch.manual_seed(0)
    method = _build("supcon")
    assert isinstance(method, SupCon) and METHODS["supcon"] is SupCon
    assert method.base_temperature == method.temperature == 0.5
    batch = _batch()
    torch.manual_seed(1)
    out = method.loss(batch)
    torch.manual_seed(1)  # the same weak views, by hand
    views = method.views("weak", batch.inputs, batch.masks)
    z = [
        torch.nn.functional.normalize(method.heads[m](method.encoders[m](v, k).pooled()), dim=1)
        for m, (v, k) in enumerate(zip(views, batch.masks))
    ]
    expected = supcon_loss(torch.stack(z, 1), batch.labels["label"], 0.5, 0.5)
    assert torch.allclose(out["loss"], expected)
    method.eval()
    with torch.no_grad():
        assert method.features(batch).shape == (B, DIMS["vision"] + DIMS["text"])
    assert _build("supcon", base_temperature=0.07).base_temperature == 0.07
    with pytest.raises(ConfigError, match="SupCon needs class labels"):
        _build("supcon", task="score")


# ---------------------------------------------------------------------------------------------
# Resume: both optimisers' states are checkpointed


def _bank(n=32, seed=0) -> PairedBank:
    rng = np.random.default_rng(seed)
    banks, masks = [], []
    for f in FEATURES.values():
        lengths = rng.integers(1, STEPS + 1, n)
        mask = np.arange(STEPS)[None, :] < lengths[:, None]
        banks.append((rng.standard_normal((n, STEPS, f)) * mask[..., None]).astype(np.float32))
        masks.append(mask)
    labels = {"label": np.arange(n) % 2, "score": rng.standard_normal((n, 1)).astype(np.float32)}
    return PairedBank.aligned(banks, masks, labels)


def _pretrain(out, stop_at_call=None):
    torch.manual_seed(0)
    method = _build("factorcl")
    run = _sequence_run("factorcl")
    if stop_at_call is not None:  # Ctrl-C at that step: the checkpoint holds the epochs before
        calls, step = [0], method.train_step

        def interrupted(*args):
            calls[0] += 1
            if calls[0] == stop_at_call:
                raise KeyboardInterrupt
            return step(*args)

        method.train_step = interrupted
    pretrain(method, _bank(), run, out, CPU, "fp32", progress=False)
    return method.state_dict()


def test_a_resumed_factorcl_run_equals_an_uninterrupted_one(tmp_path):
    full = _pretrain(tmp_path / "full")
    with pytest.raises(TrainingInterrupted):
        _pretrain(tmp_path / "resumed", stop_at_call=32 // B + 1)  # the 1st step of epoch 2
    ckpt = torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)
    assert ckpt["epoch"] == 1 and set(ckpt["optimizers"]) == {"main", "critics"}
    assert ckpt["optimizers"]["critics"]["state"]  # Adam moments of the CLUB critics
    resumed = _pretrain(tmp_path / "resumed")
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
