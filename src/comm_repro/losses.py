"""Contrastive losses as pure functions of embeddings (no state, no distributed gathering)."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

MASK_VALUE = 1e8  # removes self-similarities from the softmax without producing NaN


def _top1(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == targets).float().mean()


def info_nce(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent: each of the 2N embeddings must find its partner among the 2N - 1 others.

    Row i of ``z1`` is positive with row i of ``z2``; the other 2N - 2 embeddings of both views
    are negatives. Returns (loss, top-1 accuracy of finding the positive).
    """
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    n = z1.shape[0]
    self_mask = MASK_VALUE * torch.eye(n, device=z1.device)
    logits = (
        torch.cat(
            [
                torch.cat([z1 @ z2.T, z1 @ z1.T - self_mask], dim=1),
                torch.cat([z2 @ z1.T, z2 @ z2.T - self_mask], dim=1),
            ]
        )
        / temperature
    )
    targets = torch.arange(n, device=z1.device).repeat(2)
    return F.cross_entropy(logits, targets), _top1(logits, targets)


def pairwise_info_nce(
    embeddings: list[torch.Tensor], temperature: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`info_nce` of every pair of modalities' embeddings (rows aligned), averaged over
    the C(n, 2) pairs: (loss, top-1 accuracy)."""
    pairs = [info_nce(a, b, temperature) for a, b in itertools.combinations(embeddings, 2)]
    return torch.stack([p[0] for p in pairs]).mean(), torch.stack([p[1] for p in pairs]).mean()


def clip_loss(
    a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric cross-entropy of CLIP on ``exp(logit_scale) * cos(a_i, b_j)``."""
    a, b = F.normalize(a.float(), dim=1), F.normalize(b.float(), dim=1)
    logits = logit_scale.exp() * a @ b.T
    targets = torch.arange(a.shape[0], device=a.device)
    loss = 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
    acc = 0.5 * (_top1(logits, targets) + _top1(logits.T, targets))
    return loss, acc
