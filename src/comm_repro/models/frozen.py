"""Frozen pretrained encoders (MM-IMDb, datasets.md §6): CLIP's ViT-B/32 image tokens (timm), a
sentence-transformers text model's token states, and BLIP-2's Q-Former image queries and text
states (transformers).

The weights are never downloaded by a run. Each encoder names its model (``model``: a hub
repository id) and where its files are (``weights``):

- ``hub`` (default): the Hugging Face hub cache (``cache_dir``, else ``$HF_HUB_CACHE`` /
  ``$HF_HOME/hub``), read with ``local_files_only``; fill it beforehand with
  ``hf download <model>`` on a machine that has the network;
- a folder path: the model's files, as that command or ``save_pretrained`` leaves them;
- ``random``: the same architecture with random weights (tests, and Table 8's complexity counts,
  which do not depend on the weights), drawn from a fixed seed so that every build is the same
  function (the probe features computed once stay those of the run's encoder).

Absent weights stop the job at once (:class:`MissingWeights`) with the model's name, the places
looked in, and the command that fetches them. Safetensors only: no pickled checkpoint is read.

A frozen encoder stays in eval mode (no dropout), has no trainable
parameter, and runs under ``no_grad``; its output is an :class:`Encoded` of tokens with their
padding mask. Under the trainer's bf16 autocast on CUDA it computes in bf16. Its weights are
left out of the module's state dict: a run's checkpoints hold what it trains, and the settings
name the weights it started from (loading a state dict keeps the encoder's own).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from comm_repro.errors import DataError
from comm_repro.models.encoders import Encoded

HUB, RANDOM = "hub", "random"
CLIP_VIT = "vit_base_patch32_clip_224.openai"  # timm's name; the hub repo is timm/<name>
MULTILINGUAL_CLIP_TEXT = "sentence-transformers/clip-ViT-B-32-multilingual-v1"
BLIP2 = "Salesforce/blip2-itm-vit-g"
DEFAULT_MASK_PROB = 0.15  # the authors' TextMasking


class MissingWeights(DataError):
    """A frozen encoder's weights are not where the config says."""


def hub_cache() -> Path:
    """Where the hub cache is by default (huggingface_hub's rule)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = (
        os.environ.get("HF_HOME")
        or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    )
    return Path(home).expanduser() / "hub"


def random_init(build, *args, **kwargs):
    """``build(*args, **kwargs)`` with the random weights of seed 0, the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build(*args, **kwargs)


def model_folder(repo: str, weights: str | None, cache_dir: str | None, needs: tuple[str, ...]):
    """The folder of ``repo``'s files (module doc: ``weights``), None for random weights.
    ``needs``: files the folder must hold (at least one of each ``a|b`` alternative)."""
    weights = weights or HUB
    if weights == RANDOM:
        return None
    fetch = f"`hf download {repo}`"
    if weights == HUB:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        cache = Path(cache_dir).expanduser() if cache_dir else hub_cache()
        try:
            folder = Path(snapshot_download(repo, cache_dir=cache, local_files_only=True))
        except (LocalEntryNotFoundError, FileNotFoundError, OSError) as err:
            raise MissingWeights(
                f"the weights of {repo} are not in the hub cache {cache} ({type(err).__name__}); "
                f"fill it with {fetch} where there is network (HF_HOME or the encoder's cache_dir "
                "says where the cache is), or name a folder with the model's files in the "
                "encoder's `weights:`"
            ) from None
        where = f"the hub cache {cache}"
    else:
        folder = Path(weights).expanduser()
        where = str(folder)
        if not folder.is_dir():
            raise MissingWeights(
                f"the weights of {repo} are configured at {folder}, which is not a folder; "
                f"put the model's files there ({fetch} --local-dir {folder}) or set the "
                "encoder's `weights: hub`"
            )
    for need in needs:
        if not any((folder / name).is_file() for name in need.split("|")):
            raise MissingWeights(
                f"{where} has no {need.replace('|', ' or ')} for {repo} (a partial copy?); "
                f"fetch the model again with {fetch}"
            )
    return folder


def _drop_weights(module, state_dict, prefix, local_metadata) -> None:
    if not module.with_weights:
        for key in [k for k in state_dict if k.startswith(prefix)]:
            del state_dict[key]


def _keep_own_weights(module, state_dict, prefix, *args) -> None:
    """A state dict without the frozen weights loads them from the encoder itself."""
    module.with_weights = True
    try:
        own = module.state_dict(keep_vars=True)
    finally:
        module.with_weights = False
    for key, value in own.items():
        state_dict.setdefault(prefix + key, value.detach())


class FrozenEncoder(nn.Module):
    """Shared behaviour: frozen parameters, forward under no_grad, the pretrained modules always
    in eval mode (no dropout: the encoder is a fixed function), weights out of the state dict
    (module doc). The encoder's own ``training`` flag still follows ``train()`` / ``eval()``:
    it says whether a training step is running (text masking). Subclasses implement
    :meth:`encode`."""

    out_channels: int
    frozen = True  # its outputs at evaluation are a fixed function of the input: cacheable

    def __init__(self) -> None:
        super().__init__()
        self.with_weights = False
        self.register_state_dict_post_hook(_drop_weights)
        self.register_load_state_dict_pre_hook(_keep_own_weights)

    def freeze(self) -> None:
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> FrozenEncoder:
        super().train(mode)
        for child in self.children():
            child.train(False)
        return self

    def encode(self, x: torch.Tensor, mask: torch.Tensor | None) -> Encoded:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Encoded:
        with torch.no_grad():
            return self.encode(x, mask)


class ClipImageTokens(FrozenEncoder):
    """CLIP's image transformer through timm (``model``, default ViT-B/32 from OpenAI), without
    its pooling and projection: (B, 50, 768) tokens (the class token and 49 patches) after the
    final LayerNorm, for (B, 3, 224, 224) images (ImageNet-normalised, as the authors feed it)."""

    def __init__(
        self, model: str = CLIP_VIT, weights: str | None = None, cache_dir: str | None = None
    ) -> None:
        super().__init__()
        import timm

        folder = model_folder(f"timm/{model}", weights, cache_dir, ("model.safetensors",))
        options: dict[str, Any] = {"num_classes": 0, "global_pool": ""}
        if folder is None:
            self.net = random_init(timm.create_model, model, **options)
        else:
            overlay = {"file": str(folder / "model.safetensors")}
            self.net = timm.create_model(
                model, pretrained=True, pretrained_cfg_overlay=overlay, **options
            )
        self.out_channels = int(self.net.num_features)
        self.min_input_size = int(self.net.patch_embed.img_size[0])
        self.freeze()

    def encode(self, x, mask=None):
        return Encoded(self.net.forward_features(x))


class TextStates(FrozenEncoder):
    """Token states of a text transformer, before any pooling: (B, L, C) for token ids (B, L)
    with their attention mask (True at real tokens). Subclasses set ``tokenizer`` and
    ``states(ids, mask)``. ``mask_prob``: in training, each real token other than the special
    ones ([CLS], [SEP], padding) is replaced by [MASK] with this probability before the frozen
    forward (the authors' text augmentation); at evaluation nothing is masked."""

    mask_prob: float
    max_length: int
    tokenizer: Any

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, mask) of ``texts``, padded to the longest and cut at ``max_length``."""
        if self.tokenizer is None:
            raise MissingWeights(
                f"{type(self).__name__} with random weights has no tokenizer; give it the "
                "model's files (`weights:`) to tokenize text"
            )
        out = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return out["input_ids"], out["attention_mask"].bool()

    def masked(
        self, ids: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``ids`` with each maskable token replaced by [MASK] with probability ``mask_prob``."""
        special = torch.tensor(sorted(self.special_ids), device=ids.device)
        maskable = mask & ~torch.isin(ids, special)
        draw = torch.rand(ids.shape, generator=generator, device=ids.device)
        return torch.where(maskable & (draw < self.mask_prob), self.mask_id, ids)

    def encode(self, ids, mask=None):
        ids = ids.long()
        mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
        if self.training and self.mask_prob > 0:  # each call masks anew: each view its own
            ids = self.masked(ids, mask)
        return Encoded(self.states(ids, mask), mask)

    def states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SentenceTransformerStates(TextStates):
    """A sentence-transformers model's transformer module (default the multilingual CLIP text
    model, a DistilBERT), its ``token_embeddings`` before pooling and the Dense projection:
    (B, L, 768), truncated at the model's max length (128)."""

    def __init__(
        self,
        model: str = MULTILINGUAL_CLIP_TEXT,
        weights: str | None = None,
        cache_dir: str | None = None,
        mask_prob: float = DEFAULT_MASK_PROB,
        max_length: int | None = None,
    ) -> None:
        super().__init__()
        folder = model_folder(model, weights, cache_dir, ("modules.json",))
        self.mask_prob = float(mask_prob)
        if folder is None:
            from transformers import DistilBertConfig, DistilBertModel

            # the architecture of the default model's transformer (distilbert-base-multilingual)
            config = DistilBertConfig(vocab_size=119547, dim=768, n_layers=6, n_heads=12)
            self.net, self.tokenizer, self.max_length = (
                random_init(DistilBertModel, config),
                None,
                128,
            )
        else:
            from sentence_transformers import SentenceTransformer

            st = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
            self.net, self.tokenizer = st[0].auto_model, st.tokenizer
            self.max_length = int(max_length or st.max_seq_length)
        self.special_ids, self.mask_id = _special_ids(self.tokenizer)
        self.out_channels = int(self.net.config.hidden_size)
        self.freeze()

    def states(self, ids, mask):
        return self.net(input_ids=ids, attention_mask=mask.long()).last_hidden_state


def text_tokenizer(cfg: dict[str, Any]) -> tuple[Any, int]:
    """The tokenizer of a text encoder's settings (``cfg``: a modality's resolved ``encoder``)
    and the length it cuts at, without loading the model: what a dataset of plots is tokenized
    with before training."""
    from transformers import AutoTokenizer

    name = cfg.get("name")
    if name not in TEXT_DEFAULTS:
        raise DataError(f"encoder {name!r} is not a text encoder: {sorted(TEXT_DEFAULTS)} are")
    model = cfg.get("model", TEXT_DEFAULTS[name])
    needs = ("modules.json",) if name == "sentence_transformer" else ("config.json",)
    folder = model_folder(model, cfg.get("weights"), cfg.get("cache_dir"), needs)
    if folder is None:
        raise MissingWeights(
            f"{model} with random weights has no tokenizer; give the encoder the model's files "
            "(`weights:` a folder, or `hub`) to tokenize the text"
        )
    max_length = cfg.get("max_length")
    if name == "sentence_transformer":
        # the Transformer module's folder and max_seq_length, as sentence-transformers reads them
        modules = json.loads((folder / "modules.json").read_text())
        first = folder / next(m.get("path", "") for m in modules if m.get("idx", 0) == 0)
        st_config = first / "sentence_bert_config.json"
        if max_length is None and st_config.is_file():
            max_length = json.loads(st_config.read_text()).get("max_seq_length")
        folder = first
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return tokenizer, int(max_length or tokenizer.model_max_length)


def _special_ids(tokenizer) -> tuple[set[int], int]:
    """The ids masking leaves alone, and [MASK]'s id. Without a tokenizer (random weights):
    BERT's vocabularies' [PAD], [CLS], [SEP] and [MASK], which both default models use."""
    if tokenizer is None:
        return {0, 101, 102}, 103
    if tokenizer.mask_token_id is None:
        raise DataError(f"the tokenizer {type(tokenizer).__name__} has no [MASK] token")
    return set(tokenizer.all_special_ids) - {tokenizer.mask_token_id}, int(tokenizer.mask_token_id)


def _blip2(model: str, weights: str | None, cache_dir: str | None, config: Any = None):
    """The BLIP-2 image-text model (``Blip2ForImageTextRetrieval``: ViT-g, Q-Former and its text
    embeddings, the LAVIS feature extractor's parts) and its tokenizer (None when random)."""
    from transformers import AutoTokenizer, Blip2Config, Blip2ForImageTextRetrieval

    folder = model_folder(
        model, weights, cache_dir, ("config.json", "model.safetensors|model.safetensors.index.json")
    )
    if folder is None:
        # the checkpoint's architecture: ViT-g, a BERT-base Q-Former that also reads text
        config = config or Blip2Config(qformer_config={"use_qformer_text_input": True})
        return random_init(Blip2ForImageTextRetrieval, config), None
    net = Blip2ForImageTextRetrieval.from_pretrained(
        folder, local_files_only=True, use_safetensors=True
    )
    return net, AutoTokenizer.from_pretrained(folder, local_files_only=True)


class Blip2ImageQueries(FrozenEncoder):
    """BLIP-2's 32 Q-Former query outputs for an image (B, 32, 768), before the projection to the
    shared space: what LAVIS's feature extractor returns as ``image_embeds``. Images (B, 3, 224,
    224) as the vision model expects them."""

    def __init__(self, model=BLIP2, weights=None, cache_dir=None, config: Any = None) -> None:
        super().__init__()
        net, _ = _blip2(model, weights, cache_dir, config)
        self.vision, self.qformer, self.query_tokens = (
            net.vision_model,
            net.qformer,
            net.query_tokens,
        )
        self.out_channels = int(net.config.qformer_config.hidden_size)
        self.min_input_size = int(net.config.vision_config.image_size)
        self.freeze()

    def encode(self, x, mask=None):
        image = self.vision(pixel_values=x).last_hidden_state
        queries = self.query_tokens.expand(len(x), -1, -1)
        attention = torch.ones(image.shape[:-1], dtype=torch.long, device=x.device)
        out = self.qformer(
            query_embeds=queries, encoder_hidden_states=image, encoder_attention_mask=attention
        )
        return Encoded(out.last_hidden_state)


class Blip2TextStates(TextStates):
    """BLIP-2's Q-Former run on text alone (its BERT embeddings, no queries): the (B, L, 768)
    states LAVIS's ``Qformer.bert(...).last_hidden_state`` gives."""

    def __init__(
        self,
        model=BLIP2,
        weights=None,
        cache_dir=None,
        mask_prob=DEFAULT_MASK_PROB,
        max_length=None,
        config=None,
    ) -> None:
        super().__init__()
        net, self.tokenizer = _blip2(model, weights, cache_dir, config)
        self.embeddings, self.qformer = net.embeddings, net.qformer
        self.mask_prob = float(mask_prob)
        self.max_length = int(max_length or net.config.qformer_config.max_position_embeddings)
        self.special_ids, self.mask_id = _special_ids(self.tokenizer)
        self.out_channels = int(net.config.qformer_config.hidden_size)
        self.freeze()

    def states(self, ids, mask):
        embedded = self.embeddings(input_ids=ids)
        return self.qformer(
            query_embeds=embedded, query_length=0, attention_mask=mask.long()
        ).last_hidden_state


# The frozen encoders by their `encoders:` name (comm_repro.config.FROZEN_ENCODERS names them).
ENCODER_CLASSES = {
    "clip_vit": ClipImageTokens,
    "blip2_image": Blip2ImageQueries,
    "sentence_transformer": SentenceTransformerStates,
    "blip2_text": Blip2TextStates,
}
TEXT_DEFAULTS = {"sentence_transformer": MULTILINGUAL_CLIP_TEXT, "blip2_text": BLIP2}
