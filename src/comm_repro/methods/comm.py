"""CoMM: contrastive learning on the fused multimodal embedding, with masked-modality terms."""

from __future__ import annotations

import torch
from torch import nn

from comm_repro.config import modality_tokens
from comm_repro.losses import info_nce
from comm_repro.methods.base import Method
from comm_repro.models import FusionTransformer, build_tokenizer, mlp_head
from comm_repro.models.fusion import LinearFusion
from comm_repro.models.tokens import PooledLinear

TERMS = ("both", "full_only", "unimodal_only")
REDUCTIONS = ("sum", "mean")
FUSIONS = ("attention", "linear")


class CoMM(Method):
    """Paper Eq. 7: L_CoMM = L + sum_i L_i.

    L aligns the full multimodal embeddings of two augmented views; L_i aligns the embedding of
    view 1 with only modality i visible to the full embedding of view 2, and vice versa.
    ``terms`` keeps L only, the L_i only, or both (the loss ablation); ``reduce: mean`` averages
    the kept terms as the authors' code does (same optimum, different scale). ``fusion:
    linear`` replaces the latent converters and the attention fusion by pooled linear maps and
    one linear layer over their concatenation (the fusion ablation, paper Table 4; default
    ``attention``).
    """

    def __init__(self, cfg, modalities, shapes, targets=None) -> None:
        super().__init__(cfg, modalities, shapes, targets)
        dim = int(self.setting("embed_dim"))
        self.terms, self.reduce = self.setting("terms"), self.setting("reduce")
        if self.terms not in TERMS:
            raise ValueError(f"methods.*.terms must be one of {TERMS}, got {self.terms!r}")
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"methods.*.reduce must be one of {REDUCTIONS}, got {self.reduce!r}")
        self.temperature = float(self.setting("temperature"))
        fusion = cfg.get("fusion", "attention")
        if fusion not in FUSIONS:
            raise ValueError(f"methods.*.fusion must be one of {FUSIONS}, got {fusion!r}")
        if fusion == "linear":
            self.tokenizers = nn.ModuleList(
                PooledLinear(e.out_channels, dim) for e in self.encoders
            )
            self.fusion = LinearFusion(self.n_modalities, dim)
        else:
            self.tokenizers = nn.ModuleList(
                build_tokenizer(modality_tokens(m), e.out_channels, dim)
                for m, e in zip(modalities, self.encoders)
            )
            self.fusion = FusionTransformer(
                dim,
                heads=int(self.setting("heads")),
                mlp_ratio=float(self.setting("mlp_ratio")),
                layers=int(self.setting("layers")),
            )
        self.head = mlp_head(dim, int(self.setting("head_hidden")), int(self.setting("head_out")))

    def _tokens(self, m: int, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.tokenizers[m](self.encoders[m](x, mask))

    def embeddings(
        self, tokens: list[torch.Tensor], masks: list[torch.Tensor | None]
    ) -> list[torch.Tensor]:
        """The n + 1 projected embeddings: modality 0 alone, ..., modality n-1 alone, all."""
        subsets = [[m] for m in range(self.n_modalities)] + [list(range(self.n_modalities))]
        return [self.head(z) for z in self.fusion.forward_subsets(tokens, subsets, masks)]

    def loss(self, batch):
        # Both views of a modality go through its encoder as one batch (the encoders have no
        # batch statistics, so this equals two calls); the head's BatchNorm sees one view at a time.
        masks = [None if k is None else torch.cat([k, k]) for k in batch.masks]
        views = self.views("strong", [torch.cat([x, x]) for x in batch.inputs], masks)
        halves = [self._tokens(m, v, k).chunk(2) for m, (v, k) in enumerate(zip(views, masks))]
        embedded = [self.embeddings([h[v] for h in halves], batch.masks) for v in range(2)]
        (*uni1, full1), (*uni2, full2) = embedded
        loss_full, acc = info_nce(full1, full2, self.temperature)
        out = {"loss_full": loss_full}
        for m in range(self.n_modalities):
            a, _ = info_nce(uni1[m], full2, self.temperature)
            b, _ = info_nce(uni2[m], full1, self.temperature)
            out[f"loss_mod{m}"] = 0.5 * (a + b)
        kept = []
        if self.terms in ("both", "full_only"):
            kept.append(out["loss_full"])
        if self.terms in ("both", "unimodal_only"):
            kept += [out[f"loss_mod{m}"] for m in range(self.n_modalities)]
        total = torch.stack(kept).sum()
        out["loss"] = total / len(kept) if self.reduce == "mean" else total
        out["ssl_acc"] = acc
        return out

    def fused(self, views: list[torch.Tensor], masks: list[torch.Tensor | None]) -> torch.Tensor:
        """The multimodal embedding (before the projection head) of inputs already made into
        views: what fine-tuning trains."""
        tokens = [self._tokens(m, v, k) for m, (v, k) in enumerate(zip(views, masks))]
        return self.fusion(tokens, masks=masks)

    def from_encoded(self, m, encoded):
        return self.tokenizers[m](encoded), encoded.mask

    def fuse_subset(self, encoded, subset):
        """The fused embedding (before the head) with only ``subset`` visible: Z_i for one
        modality, the embedding the masked terms L_i align; Z for all."""
        return self.fusion([t for t, _ in encoded], list(subset), [k for _, k in encoded])
