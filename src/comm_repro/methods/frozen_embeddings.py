"""The frozen encoders' own embeddings, nothing trained: Table 2's public-weights rows."""

from __future__ import annotations

from comm_repro.config import ConfigError
from comm_repro.methods.base import Method

POOLS = ("first", "mean")


class FrozenEmbeddings(Method):
    """Probe features: the encoders' outputs of the modalities ``use`` (names; default all),
    each pooled as ``pool`` says (``{name: first | mean}``, default mean over the real tokens):
    ``first`` takes the first token (CLIP's and BERT's class token). Nothing trains: with
    frozen encoders (MM-IMDb's) this is the public model itself, e.g. CLIP V (poster: first),
    L (plot: mean, the multilingual model's pooling) and V+L; BLIP-2's "stacking" is both first
    tokens. The probe reads the class token before CLIP's 768 -> 512 projection, a linear map of
    which the projected embedding is."""

    def __init__(self, cfg, modalities, shapes, targets=None) -> None:
        super().__init__(cfg, modalities, shapes, targets)
        names = [m["name"] for m in modalities]
        use, pool = cfg.get("use") or names, cfg.get("pool") or {}
        where = f"methods.{cfg.get('name', '?')}"
        unknown = sorted(set(use) - set(names)) + sorted(set(pool) - set(names))
        if unknown:
            raise ConfigError(f"{where}: {unknown} are not modalities of the dataset: {names}")
        bad = {k: v for k, v in pool.items() if v not in POOLS}
        if bad:
            raise ConfigError(f"{where}.pool: {bad}; each is one of {POOLS}")
        self.use = {names.index(n) for n in use}
        self.first = {names.index(n) for n, how in pool.items() if how == "first"}

    def loss(self, batch):
        raise ConfigError(
            f"method {self.cfg.get('name', '?')!r} (frozen_embeddings) trains nothing; the "
            "trainer skips it"
        )

    def from_encoded(self, m, encoded):
        if m not in self.use:
            return encoded.tokens[:, 0, :0], None
        return (encoded.tokens[:, 0] if m in self.first else encoded.pooled()), None
