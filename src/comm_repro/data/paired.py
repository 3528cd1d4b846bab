"""Multimodal samples as per-modality banks plus index rows.

A bimodal Trifeature pair is two images of one image set, so storing each image once and a
(P, n_modalities) table of indices keeps the whole training set in memory (and on the GPU) at the
cost of one gather per batch. Datasets whose modalities are aligned one-to-one use
``index[:, m] = arange(N)``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class PairedBank:
    banks: list[torch.Tensor]  # one tensor per modality, first axis indexes its samples
    index: torch.Tensor  # (P, n_modalities) int64: row p takes banks[m][index[p, m]]

    def __post_init__(self) -> None:
        if self.index.ndim != 2 or self.index.shape[1] != len(self.banks):
            raise ValueError(
                f"index must be (P, {len(self.banks)}) for {len(self.banks)} modalities, "
                f"got {tuple(self.index.shape)}"
            )

    @classmethod
    def from_numpy(cls, banks: list[np.ndarray], index: np.ndarray) -> PairedBank:
        # Modalities that share one array (both Trifeature images) share one tensor too.
        tensors: dict[int, torch.Tensor] = {}
        shared = [
            tensors.setdefault(id(b), torch.from_numpy(np.ascontiguousarray(b))) for b in banks
        ]
        return cls(shared, torch.from_numpy(np.asarray(index, dtype=np.int64)))

    @property
    def n_modalities(self) -> int:
        return len(self.banks)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def to(self, device: torch.device | str) -> PairedBank:
        moved: dict[int, torch.Tensor] = {}
        banks = [moved.setdefault(id(b), b.to(device)) for b in self.banks]
        return PairedBank(banks, self.index.to(device))

    def digest(self) -> str:
        """sha256 of every bank and the index (shapes and dtypes included): what a run trains on,
        so that a rerun can tell the same data from changed data."""
        h = hashlib.sha256()
        for tensor in [*self.banks, self.index]:
            t = tensor.detach().cpu().contiguous()
            h.update(f"{tuple(t.shape)}{t.dtype};".encode())
            h.update(t.view(torch.uint8).numpy() if t.numel() else b"")
        return h.hexdigest()

    def gather(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """The samples of ``rows``, one batch tensor per modality."""
        idx = self.index[rows.to(self.index.device)]
        return [bank[idx[:, m]] for m, bank in enumerate(self.banks)]
