"""Multimodal samples as per-modality banks plus index rows, and the batches drawn from them.

A bimodal Trifeature pair is two images of one image set, so storing each image once and a
(P, n_modalities) table of indices keeps the whole training set in memory (and on the GPU) at the
cost of one gather per batch. Datasets whose modalities are aligned one-to-one use
``index[:, m] = arange(N)``. Padded sequence modalities carry a (N, T) bool mask bank beside
their inputs (True at real steps); labels, when a dataset has them, are indexed by row. A
modality with several alternatives per sample (MM-IMDb's plots) stores them on axis 1 with the
count of each sample's (``choices``); a batch draws one of them per row, anew at every draw.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch


def hash_tensor(h: hashlib._Hash, tensor: torch.Tensor, name: str = "") -> None:
    """Feed ``name``, the tensor's shape, dtype and bytes to the hash ``h``."""
    t = tensor.detach().cpu().contiguous()
    h.update(f"{name}{tuple(t.shape)}{t.dtype};".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")


@dataclass
class Batch:
    """What a method's ``loss`` receives: one input tensor per modality, its padding mask (None
    where every step is real) and the labels of the samples, by label array (the ``labels`` a
    task reads), where the dataset's training data has them."""

    inputs: list[torch.Tensor]
    masks: list[torch.Tensor | None]
    labels: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.inputs[0].shape[0])


@dataclass
class PairedBank:
    banks: list[torch.Tensor]  # one tensor per modality, first axis indexes its samples
    index: torch.Tensor  # (P, n_modalities) int64: row p takes banks[m][index[p, m]]
    masks: list[torch.Tensor | None] | None = None  # per modality, rows as in banks[m]
    labels: dict[str, torch.Tensor] = field(default_factory=dict)  # per label array, (P, ...)
    # per modality: None, or (N,) int64, how many of the sample's alternatives (axis 1) are real
    choices: list[torch.Tensor | None] | None = None

    def __post_init__(self) -> None:
        if self.index.ndim != 2 or self.index.shape[1] != len(self.banks):
            raise ValueError(
                f"index must be (P, {len(self.banks)}) for {len(self.banks)} modalities, "
                f"got {tuple(self.index.shape)}"
            )
        if self.masks is None:
            self.masks = [None] * len(self.banks)
        if len(self.masks) != len(self.banks):
            raise ValueError(f"got {len(self.masks)} masks for {len(self.banks)} modalities")
        if self.choices is None:
            self.choices = [None] * len(self.banks)
        for m, counts in enumerate(self.choices):
            if counts is not None and (len(counts) != len(self.banks[m]) or counts.min() < 1):
                raise ValueError(f"modality {m}: every sample needs >= 1 alternative")
        for task, labels in self.labels.items():
            if labels.shape[0] != len(self):
                raise ValueError(f"labels {task!r} have {labels.shape[0]} rows, not {len(self)}")

    @classmethod
    def from_numpy(
        cls,
        banks: list[np.ndarray],
        index: np.ndarray,
        masks: list[np.ndarray | None] | None = None,
        labels: dict[str, np.ndarray] | None = None,
        choices: list[np.ndarray | None] | None = None,
    ) -> PairedBank:
        # Modalities that share one array (both Trifeature images, one mask of aligned
        # sequences) share one tensor too.
        tensors: dict[int, torch.Tensor] = {}

        def tensor(a: np.ndarray | None) -> torch.Tensor | None:
            if a is None:
                return None
            return tensors.setdefault(id(a), torch.from_numpy(np.ascontiguousarray(a)))

        return cls(
            [tensor(b) for b in banks],
            torch.from_numpy(np.asarray(index, dtype=np.int64)),
            None if masks is None else [tensor(m) for m in masks],
            {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in (labels or {}).items()},
            None if choices is None else [tensor(c) for c in choices],
        )

    @classmethod
    def aligned(
        cls,
        banks: list[np.ndarray],
        masks: list[np.ndarray | None] | None = None,
        labels: dict[str, np.ndarray] | None = None,
        choices: list[np.ndarray | None] | None = None,
    ) -> PairedBank:
        """Modalities aligned one-to-one: sample i of every bank forms row i."""
        n = len(banks[0])
        index = np.repeat(np.arange(n, dtype=np.int64)[:, None], len(banks), axis=1)
        return cls.from_numpy(banks, index, masks, labels, choices)

    def sample_shapes(self) -> list[tuple[int, ...]]:
        """Each modality's sample shape as a batch has it (without the batch axis, nor the
        axis of alternatives)."""
        return [tuple(b.shape[1 if c is None else 2 :]) for b, c in zip(self.banks, self.choices)]

    @property
    def n_modalities(self) -> int:
        return len(self.banks)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def to(self, device: torch.device | str) -> PairedBank:
        moved: dict[int, torch.Tensor] = {}

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else moved.setdefault(id(t), t.to(device))

        return PairedBank(
            [move(b) for b in self.banks],
            self.index.to(device),
            [move(m) for m in self.masks],
            {k: v.to(device) for k, v in self.labels.items()},
            [move(c) for c in self.choices],
        )

    def digest(self) -> str:
        """sha256 of every bank, mask, label and the index (shapes and dtypes included): what a
        run trains on, so that a rerun can tell the same data from changed data."""
        h = hashlib.sha256()
        extra = [t for t in [*self.masks, *self.choices] if t is not None] + [
            self.labels[k] for k in sorted(self.labels)
        ]
        for tensor in [*self.banks, self.index, *extra]:
            hash_tensor(h, tensor)
        return h.hexdigest()

    def gather(self, rows: torch.Tensor) -> Batch:
        """The samples of ``rows`` as a batch (one random alternative of each sample, where a
        modality has several)."""
        rows = rows.to(self.index.device)
        idx = self.index[rows]
        inputs, masks = [], []
        for m, (bank, mask, counts) in enumerate(zip(self.banks, self.masks, self.choices)):
            at: tuple[torch.Tensor, ...] = (idx[:, m],)
            if counts is not None:
                draw = torch.rand(len(rows), device=counts.device)
                at = (idx[:, m], (draw * counts[idx[:, m]]).long())
            inputs.append(bank[at])
            masks.append(None if mask is None else mask[at])
        return Batch(inputs, masks, {k: v[rows] for k, v in self.labels.items()})
