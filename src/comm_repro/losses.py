"""Contrastive losses as pure functions of embeddings (no state, no distributed gathering)."""

from __future__ import annotations

import itertools
import math

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


# ---------------------------------------------------------------------------------------------
# FactorCL's critic bounds and the supervised contrastive loss
#
# The two bounds take a score matrix of a critic T on all pairs of a batch of N aligned samples
# (x_k, y_k), in the convention of FactorCL's critics: scores[i, j] = T(x_j, y_i), so that row i
# holds every x against y_i and the diagonal holds the N positive pairs.


def infonce_lower_bound(scores: torch.Tensor) -> torch.Tensor:
    """The InfoNCE lower bound of I(X; Y) from ``scores[i, j] = T(x_j, y_i)`` (N x N):
    mean_i T(x_i, y_i) - mean_i [logsumexp_j T(x_j, y_i) - log N]. As a loss, its negative."""
    scores = scores.float()
    n = scores.shape[0]
    return scores.diagonal().mean() - (scores.logsumexp(dim=1).mean() - math.log(n))


def club_upper_bound(scores: torch.Tensor) -> torch.Tensor:
    """The CLUB-style upper bound of I(X; Y) that FactorCL minimises, from ``scores[i, j] =
    T(x_j, y_i)`` (N x N): mean over the positive pairs minus mean over all N^2 pairs."""
    scores = scores.float()
    return scores.diagonal().mean() - scores.mean()


def supcon_loss(
    features: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    base_temperature: float | None = None,
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020), every view an anchor.

    ``features``: (N, n_views, D), used as given (normalise them first for cosine logits);
    ``labels``: (N,) class of each sample, or None for SimCLR's NT-Xent (the positives of an
    anchor are then the other views of its own sample). For each of the N * n_views anchors, the
    log-softmax of its dot products / ``temperature`` over every other embedding is averaged over
    its positives (the other embeddings of the same label); the loss is minus that, scaled by
    ``temperature / base_temperature`` (default: ``temperature``), averaged over the anchors.
    With 2 views and no labels it equals :func:`info_nce` of the two views times that factor.
    """
    if features.ndim != 3:
        raise ValueError(f"features must be (N, n_views, D), got {tuple(features.shape)}")
    n, n_views = features.shape[:2]
    if n_views < 2:
        raise ValueError("supcon_loss needs >= 2 views per sample (an anchor needs a positive)")
    base = temperature if base_temperature is None else base_temperature
    device = features.device
    if labels is None:
        groups = torch.arange(n, device=device)
    else:
        groups = labels.reshape(-1)
        if groups.shape[0] != n:
            raise ValueError(f"got {groups.shape[0]} labels for {n} samples")
    # Embeddings view after view: row v * N + i is view v of sample i.
    flat = features.float().transpose(0, 1).reshape(n * n_views, -1)
    groups = groups.repeat(n_views)
    logits = flat @ flat.T / temperature
    self_mask = torch.eye(n * n_views, dtype=torch.bool, device=device)
    logits = logits.masked_fill(self_mask, -torch.inf)
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    positives = (groups[:, None] == groups[None, :]) & ~self_mask
    mean_log_prob_pos = log_prob.masked_fill(~positives, 0.0).sum(1) / positives.sum(1)
    return -(temperature / base) * mean_log_prob_pos.mean()
