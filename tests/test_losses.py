"""InfoNCE and CLIP losses against values computed by hand."""

from __future__ import annotations

import math

import torch

from comm_repro.losses import clip_loss, info_nce


def _nt_xent_by_hand(z1, z2, tau):
    """Explicit sum over anchors: -log exp(s_pos/tau) / sum_{k != anchor} exp(s_k/tau)."""
    z = [[c / math.hypot(*v) for c in v] for v in z1 + z2]
    n = len(z1)
    total = 0.0
    for a in range(2 * n):
        pos = (a + n) % (2 * n)
        sims = {k: sum(x * y for x, y in zip(z[a], z[k])) / tau for k in range(2 * n) if k != a}
        total += -sims[pos] + math.log(sum(math.exp(s) for s in sims.values()))
    return total / (2 * n)


def test_info_nce_matches_hand_computation():
    z1 = [[1.0, 0.0], [0.6, 0.8], [-1.0, 0.2]]
    z2 = [[0.9, 0.1], [0.0, 1.0], [-0.5, -0.5]]
    for tau in (0.1, 0.5, 1.0):
        loss, _ = info_nce(torch.tensor(z1), torch.tensor(z2), tau)
        assert math.isclose(loss.item(), _nt_xent_by_hand(z1, z2, tau), rel_tol=1e-5)


def test_info_nce_two_samples_closed_form():
    # Orthogonal pairs: positives have cosine 1, every negative cosine 0.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss, acc = info_nce(z, z, temperature=1.0)
    # Each anchor: candidates {pos: 1, other view's negative: 0, own-view negative: 0}.
    expected = -1.0 + math.log(math.e + 2.0)
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    assert acc.item() == 1.0


def test_info_nce_is_scale_invariant_and_symmetric():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    l1, _ = info_nce(a, b)
    assert torch.allclose(l1, info_nce(3 * a, 0.5 * b)[0], atol=1e-5)
    assert torch.allclose(l1, info_nce(b, a)[0], atol=1e-5)


def test_info_nce_gradients_flow():
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(4, 3, requires_grad=True)
    info_nce(a, b)[0].backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_clip_loss_matches_hand_computation():
    a = [[1.0, 0.0], [0.0, 1.0]]
    b = [[1.0, 1.0], [0.0, 1.0]]
    scale = 2.0
    cos = [
        [sum(x * y for x, y in zip(u, v)) / math.hypot(*u) / math.hypot(*v) for v in b] for u in a
    ]

    def ce(rows):
        return (
            sum(
                -scale * r[i] + math.log(sum(math.exp(scale * s) for s in r))
                for i, r in enumerate(rows)
            )
            / 2
        )

    expected = 0.5 * (ce(cos) + ce([list(col) for col in zip(*cos)]))
    loss, acc = clip_loss(torch.tensor(a), torch.tensor(b), torch.tensor(math.log(scale)))
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    assert acc.item() == 1.0  # each row/column's largest cosine is on the diagonal
