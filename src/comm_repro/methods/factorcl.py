"""FactorCL (Liang et al. 2023): shared and unique information, factorised by MI bounds.

Per modality, five heads on the pooled encoder output, one per objective; concat critics score
pairs of head outputs. The main loss maximises InfoNCE lower bounds and minimises CLUB upper
bounds: NCE(x1, x2) + CLUB(x1, x2) + NCE(x1, y) + NCE(x2, y) + NCE(x1, x2 | y) + CLUB(x1, x2 | y),
each NCE term being the negative of its lower bound. The two CLUB critics are not trained on the
main loss: their own optimiser fits them, after each main step, on an InfoNCE objective with the
same network (``learning_loss``), as the authors do.

SUP uses the labels of a task as y; SSL an augmented view of each modality in its place (the
weak view is x, the strong view is x_aug). Where the authors condition on a one-hot class and
feed the class value itself to the x-y critics (classification only), a regression task here
conditions on, and is scored against, its raw targets (an extension of ours).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from comm_repro.config import CLASSIFICATION, ConfigError
from comm_repro.losses import club_upper_bound, infonce_lower_bound
from comm_repro.methods.base import Method, minimise

MODES = ("ssl", "sup")
# The five heads of each modality, in the order of the probe features (the authors' order).
HEADS = ("infonce_x1x2", "club_x1x2", "infonce_xy", "infonce_x1x2_cond", "club_x1x2_cond")
CLUB_CRITICS = ("club_x1x2", "club_x1x2_cond")


def projection(dim: int) -> nn.Sequential:
    """A FactorCL head: Linear(d, d) - ReLU - Linear(d, d)."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))


class ConcatCritic(nn.Module):
    """T(x, y) = MLP([x; y]) -> a scalar (``y_first``: MLP([y; x])): a Linear to ``hidden``,
    ReLU, ``layers`` more (Linear(hidden, hidden), ReLU), then Linear(hidden, 1).

    ``scores(x, y)[i, j] = T(x_j, y_i)`` for all N x N pairs. The first Linear of a
    concatenation is the sum of its two column blocks applied to each part, so each part is
    projected once (N x hidden) and the N^2 sums are formed by broadcasting: the same values as
    concatenating every pair, without the N^2 x (dx + dy) inputs.
    """

    def __init__(
        self, x_dim: int, y_dim: int, hidden: int, layers: int, y_first: bool = False
    ) -> None:
        super().__init__()
        self.x_dim, self.y_dim, self.y_first = int(x_dim), int(y_dim), y_first
        self.first = nn.Linear(self.x_dim + self.y_dim, hidden)
        rest: list[nn.Module] = [nn.ReLU()]
        for _ in range(int(layers)):
            rest += [nn.Linear(hidden, hidden), nn.ReLU()]
        rest.append(nn.Linear(hidden, 1))
        self.rest = nn.Sequential(*rest)

    def concat(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The MLP's input for rows of x and y paired as given."""
        return torch.cat([y, x] if self.y_first else [x, y], dim=-1)

    def pair(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """T on explicitly concatenated pairs (rows of x and y as given; any leading axes)."""
        return self.rest(self.first(self.concat(x, y))).squeeze(-1)

    def scores(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = self.first.weight
        if self.y_first:
            w_y, w_x = w[:, : self.y_dim], w[:, self.y_dim :]
        else:
            w_x, w_y = w[:, : self.x_dim], w[:, self.x_dim :]
        hx = F.linear(x, w_x)  # (N, hidden), x_j
        hy = F.linear(y, w_y, self.first.bias)  # (N, hidden), y_i
        return self.rest(hy[:, None, :] + hx[None, :, :]).squeeze(-1)


class InfoNCECritic(ConcatCritic):
    """``forward(x, y)``: minus the InfoNCE lower bound of I(x; y) (a loss)."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -infonce_lower_bound(self.scores(x, y))


class CLUBCritic(ConcatCritic):
    """``forward(x, y)``: the CLUB upper bound of I(x; y), which the encoders minimise;
    ``learning_loss(x, y)``: minus the InfoNCE lower bound with the same network, on which the
    critic itself is trained. The network reads [y; x], as the authors' CLUB critic."""

    def __init__(self, x_dim: int, y_dim: int, hidden: int, layers: int) -> None:
        super().__init__(x_dim, y_dim, hidden, layers, y_first=True)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return club_upper_bound(self.scores(x, y))

    def learning_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -infonce_lower_bound(self.scores(x, y))


class FactorCL(Method):
    """FactorCL-SSL (``mode: ssl``) or FactorCL-SUP (``mode: sup``) on two modalities.

    Settings: ``mode``, ``critic_hidden`` (the critics' width), ``critic_layers`` (their extra
    hidden layers), ``num_club_iter`` (critic steps per main step), ``task`` (SUP: the task
    whose labels stand for y; default the dataset's first). Optimisers: plain Adam at
    ``train.lr`` without weight decay, "main" over everything but the two CLUB critics,
    "critics" over those. Probe features: the five heads of each modality on its pooled encoder
    output, concatenated (5 d1 + 5 d2).
    """

    def __init__(self, cfg, modalities, shapes, targets=None) -> None:
        super().__init__(cfg, modalities, shapes, targets)
        if self.n_modalities != 2:
            raise ValueError(f"FactorCL takes exactly 2 modalities, got {self.n_modalities}")
        self.mode = self.setting("mode")
        if self.mode not in MODES:
            raise ValueError(
                f"methods.*.mode of FactorCL must be one of {MODES}, got {self.mode!r}"
            )
        hidden, layers = int(self.setting("critic_hidden")), int(self.setting("critic_layers"))
        self.num_club_iter = int(self.setting("num_club_iter"))
        if self.num_club_iter < 1:
            raise ValueError(f"methods.*.num_club_iter must be >= 1, got {self.num_club_iter}")
        d1, d2 = (int(e.out_channels) for e in self.encoders)
        self.heads = nn.ModuleDict(
            {name: nn.ModuleList([projection(d1), projection(d2)]) for name in HEADS}
        )
        if self.mode == "sup":
            task = self.task()
            self.classification = task["kind"] in CLASSIFICATION
            if not task.get("dim"):
                raise ConfigError(
                    f"FactorCL-SUP on task {task['name']!r}: its number of classes or outputs "
                    "is unknown"
                )
            self.cond_dim = int(task["dim"])  # one-hot classes, or the regression outputs
            y_dims = (1, 1) if self.classification else (self.cond_dim,) * 2
            cond = (d1 + self.cond_dim, d2 + self.cond_dim)
        else:
            y_dims, cond = (d1, d2), (2 * d1, 2 * d2)
        self.critics = nn.ModuleDict(
            {
                "infonce_x1x2": InfoNCECritic(d1, d2, hidden, layers),
                "club_x1x2": CLUBCritic(d1, d2, hidden, layers),
                "infonce_x1y": InfoNCECritic(d1, y_dims[0], hidden, layers),
                "infonce_x2y": InfoNCECritic(d2, y_dims[1], hidden, layers),
                "infonce_x1x2_cond": InfoNCECritic(*cond, hidden, layers),
                "club_x1x2_cond": CLUBCritic(*cond, hidden, layers),
            }
        )

    # --- optimisation ------------------------------------------------------------------------

    def _club_parameters(self) -> list[nn.Parameter]:
        return [p for name in CLUB_CRITICS for p in self.critics[name].parameters()]

    def optimizers(self, train: dict[str, Any]) -> dict[str, torch.optim.Optimizer]:
        club = self._club_parameters()
        ids = {id(p) for p in club}
        main = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        lr = float(train["lr"])
        return {"main": torch.optim.Adam(main, lr=lr), "critics": torch.optim.Adam(club, lr=lr)}

    def train_step(self, batch, optimizers, autocast):
        step = self.step_inputs(batch)  # the views are drawn once, for both phases
        with autocast():
            terms = self.main_terms(step)
        minimise(terms["loss"], optimizers["main"])
        # The critics' objective depends on their own parameters only through their scores of
        # fixed inputs: recomputing the representations with the updated encoders and heads
        # under no_grad gives the critics exactly the gradients of the authors' full
        # recomputation (whose gradients on the encoders no optimiser of this phase applies),
        # at a fraction of its cost.
        for _ in range(self.num_club_iter):
            with autocast():
                learning = self.club_learning_loss(step)
            minimise(learning, optimizers["critics"])
        self.after_step()
        return {**terms, "club_learning_loss": learning.detach()}

    # --- the objectives ----------------------------------------------------------------------

    def step_inputs(self, batch) -> dict[str, Any]:
        """What one step draws of ``batch``: the weak views and their masks, and the strong
        views (SSL) or the label features (SUP)."""
        masks = list(batch.masks)
        out: dict[str, Any] = {"x": self.views("weak", batch.inputs, masks), "masks": masks}
        if self.mode == "ssl":
            out["x_aug"] = self.views("strong", batch.inputs, masks)
        else:
            out["y"], out["c"] = self.label_features(self.task_labels(batch), len(batch))
        return out

    def label_features(self, labels: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, c): what the x-y critics score against (the class value as one float, or the
        regression targets) and what the conditional critics condition on (the one-hot class,
        or the regression targets)."""
        if self.classification:
            labels = labels.reshape(-1)
            if labels.shape[0] != n:
                raise ConfigError(f"FactorCL-SUP needs one class per sample, got {labels.shape}")
            y = labels.float()[:, None]
            return y, F.one_hot(labels.long(), self.cond_dim).float()
        y = labels.reshape(n, -1).float()
        return y, y

    def _pooled(self, views, masks) -> list[torch.Tensor]:
        return [self.encoders[m](v, k).pooled() for m, (v, k) in enumerate(zip(views, masks))]

    def _head(self, name: str, m: int, z: list[torch.Tensor]) -> torch.Tensor:
        return self.heads[name][m](z[m])

    def _cond(self, name: str, m: int, z, z_aug, step) -> torch.Tensor:
        """Modality m's input to a conditional critic: its head output joined with the
        representation of y (the same head on the strong view, or the label condition)."""
        h = self._head(name, m, z)
        other = self._head(name, m, z_aug) if self.mode == "ssl" else step["c"]
        return torch.cat([h, other.to(h.dtype)], dim=1)

    def _representations(self, step) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        z = self._pooled(step["x"], step["masks"])
        z_aug = self._pooled(step["x_aug"], step["masks"]) if self.mode == "ssl" else None
        return z, z_aug

    def main_terms(self, step) -> dict[str, torch.Tensor]:
        c, (z, z_aug) = self.critics, self._representations(step)
        out = {
            "nce_x1x2": c["infonce_x1x2"](
                self._head("infonce_x1x2", 0, z), self._head("infonce_x1x2", 1, z)
            ),
            "club_x1x2": c["club_x1x2"](
                self._head("club_x1x2", 0, z), self._head("club_x1x2", 1, z)
            ),
        }
        for m in range(2):
            x = self._head("infonce_xy", m, z)
            y = self._head("infonce_xy", m, z_aug) if self.mode == "ssl" else step["y"]
            out[f"nce_x{m + 1}y"] = c[f"infonce_x{m + 1}y"](x, y.to(x.dtype))
        out["nce_x1x2_cond"] = c["infonce_x1x2_cond"](
            *(self._cond("infonce_x1x2_cond", m, z, z_aug, step) for m in range(2))
        )
        out["club_x1x2_cond"] = c["club_x1x2_cond"](
            *(self._cond("club_x1x2_cond", m, z, z_aug, step) for m in range(2))
        )
        return {"loss": torch.stack(list(out.values())).sum(), **out}

    def club_learning_loss(self, step) -> torch.Tensor:
        """The two CLUB critics' learning losses on representations of ``step`` by the current
        encoders and heads, which get no gradient."""
        with torch.no_grad():
            z, z_aug = self._representations(step)
            pairs = {
                "club_x1x2": [self._head("club_x1x2", m, z) for m in range(2)],
                "club_x1x2_cond": [
                    self._cond("club_x1x2_cond", m, z, z_aug, step) for m in range(2)
                ],
            }
        losses = [self.critics[name].learning_loss(*pairs[name]) for name in CLUB_CRITICS]
        return torch.stack(losses).sum()

    def loss(self, batch):
        return self.main_terms(self.step_inputs(batch))

    # --- probe features ----------------------------------------------------------------------

    def from_encoded(self, m, encoded):
        z = encoded.pooled()
        return torch.cat([self.heads[name][m](z) for name in HEADS], dim=1), None
