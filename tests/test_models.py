"""Encoders, patch tokens, fusion transformer with modality masking, heads."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import alexnet, resnet18, resnet50

from comm_repro.config import ConfigError
from comm_repro.models import (
    AlexNetEncoder,
    CausalConv1d,
    CausalConvEncoder,
    Encoded,
    FusionTransformer,
    GRUEncoder,
    PatchTokens,
    ProprioEncoder,
    ResNet18Encoder,
    ResNet50Encoder,
    SequenceEncoder,
    SequenceTokens,
    TabularEncoder,
    build_encoder,
    build_tokenizer,
    mlp_head,
    sequence,
    sincos_2d,
)
from comm_repro.models.encoders import ConvTrunk


@pytest.mark.parametrize(("size", "side"), [(224, 6), (128, 3), (64, 1)])
def test_alexnet_feature_map(size, side):
    out = AlexNetEncoder()(torch.zeros(2, 3, size, size))
    assert isinstance(out, Encoded)
    assert out.tokens.shape == (2, side * side, 256)
    assert out.grid == (side, side) and out.mask is None


def test_alexnet_tokens_are_the_feature_map_row_major():
    torch.manual_seed(0)
    encoder = AlexNetEncoder().eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        out, fmap = encoder(x), encoder.features(x)
    assert fmap.shape == (2, 256, 3, 3)
    for r in range(3):
        for c in range(3):
            assert torch.equal(out.tokens[:, r * 3 + c], fmap[:, :, r, c])
    with pytest.raises(ValueError, match="no mask"):
        encoder(x, torch.ones(2, 9, dtype=torch.bool))


def test_alexnet_trunk_equals_torchvision_order_in_values_and_gradients():
    torch.manual_seed(0)
    ours = AlexNetEncoder().double()
    reference = alexnet(weights=None).features.double()
    reference.load_state_dict(ours.features.state_dict())
    assert [type(m) for m in ours.features] != [type(m) for m in reference]  # really reordered
    x = torch.randn(3, 3, 96, 96, dtype=torch.float64)
    encoded, out_ref = ours(x), reference(x)
    out_ours = encoded.tokens.transpose(1, 2).reshape(out_ref.shape)
    assert encoded.grid == tuple(out_ref.shape[-2:])
    assert torch.equal(out_ours, out_ref)
    grad = torch.randn_like(out_ref)
    out_ours.backward(grad)
    out_ref.backward(grad)
    for (name, p), q in zip(ours.features.named_parameters(), reference.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-10, atol=1e-12), name


def test_encoded_pooled_is_the_mean_over_real_steps_only():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 5, 4, generator=g)
    lengths = torch.tensor([5, 2, 0])
    mask = torch.arange(5)[None, :] < lengths[:, None]
    pooled = Encoded(tokens, mask).pooled()
    assert pooled.shape == (3, 4)
    assert torch.allclose(pooled[0], tokens[0].mean(0))
    assert torch.allclose(pooled[1], tokens[1, :2].mean(0))
    assert torch.equal(pooled[2], torch.zeros(4))  # no real step: zeros, not NaN
    huge = torch.where(mask[..., None], tokens, 1e6 * torch.randn(3, 5, 4, generator=g))
    assert torch.allclose(Encoded(huge, mask).pooled(), pooled, atol=1e-6)
    # ... which the padded steps would change if they were counted
    assert not torch.allclose(Encoded(huge).pooled(), pooled, atol=1.0)
    assert torch.allclose(Encoded(tokens).pooled(), tokens.mean(1))  # no mask: every step


def test_build_encoder_from_a_modalitys_settings():
    assert isinstance(build_encoder({"name": "alexnet"}, (64, 64, 3)), AlexNetEncoder)
    options = {"dim": 16, "layers": 2, "heads": 4, "dim_feedforward": 32, "dropout": 0.0}
    enc = build_encoder({"name": "transformer", **options}, (50, 7))
    assert isinstance(enc, SequenceEncoder)
    assert enc.n_features == 7 and enc.out_channels == 16  # features: the sample's last axis
    assert len(enc.transformer.layers) == 2
    assert enc.transformer.layers[0].self_attn.num_heads == 4
    assert enc.transformer.layers[0].linear1.out_features == 32
    with pytest.raises(ConfigError, match="'resnet'"):
        build_encoder({"name": "resnet"}, (64, 64, 3))


def test_sincos_positions():
    pos = sincos_2d(6, 6, 32)
    assert pos.shape == (36, 32)
    assert torch.equal(pos, sincos_2d(6, 6, 32))
    assert len({tuple(r.tolist()) for r in pos}) == 36  # every location distinct
    # Row and column halves: locations in one row share the row half, not the column half.
    assert torch.equal(pos[0, :16], pos[5, :16]) and not torch.equal(pos[0, 16:], pos[5, 16:])
    with pytest.raises(ValueError):
        sincos_2d(2, 2, 30)


def test_patch_tokens_are_fixed_positions_plus_projection():
    tok = PatchTokens(8, 16)
    assert not any("pos" in n for n, _ in tok.named_parameters())
    out = tok(Encoded(torch.zeros(1, 9, 8), None, (3, 3)))
    assert out.shape == (1, 9, 16)
    assert torch.allclose(out[0], tok.proj.bias + sincos_2d(3, 3, 16))
    # A non-square grid: the positions of its (h, w), row-major.
    out = tok(Encoded(torch.zeros(2, 6, 8), None, (2, 3)))
    assert torch.allclose(out[1], tok.proj.bias + sincos_2d(2, 3, 16))
    with pytest.raises(ValueError, match="grid"):
        tok(Encoded(torch.zeros(1, 9, 8)))


def test_sequence_tokens_pass_through_at_the_fusion_width_else_project():
    x = torch.randn(2, 5, 16)
    same = SequenceTokens(16, 16)
    assert isinstance(same.proj, torch.nn.Identity) and not list(same.parameters())
    assert torch.equal(same(Encoded(x, torch.ones(2, 5, dtype=torch.bool))), x)
    wider = SequenceTokens(16, 32)
    assert isinstance(wider.proj, torch.nn.Linear) and wider(Encoded(x)).shape == (2, 5, 32)
    assert not any("pos" in n for n, _ in wider.named_parameters())  # no positions
    assert isinstance(build_tokenizer("patch", 256, 32), PatchTokens)
    assert isinstance(build_tokenizer("step", 40, 32), SequenceTokens)
    with pytest.raises(ValueError, match="tokens must be one of"):
        build_tokenizer("sequence", 40, 32)  # a kind is not a tokenizer


@pytest.mark.parametrize("n", [2, 3])
def test_fusion_output_depends_only_on_the_chosen_modalities(n):
    torch.manual_seed(0)
    fusion = FusionTransformer(16, heads=4, mlp_ratio=4, layers=1).eval()
    tokens = [torch.randn(2, 3 + m, 16) for m in range(n)]
    for subset in [[m] for m in range(n)] + [list(range(n))]:
        ref = fusion(tokens, subset)
        assert ref.shape == (2, 16)
        changed = [t if m in subset else torch.randn_like(t) for m, t in enumerate(tokens)]
        assert torch.allclose(fusion(changed, subset), ref, atol=1e-6)
        if len(subset) < n:  # ... while a chosen modality does matter
            other = [torch.randn_like(t) if m in subset else t for m, t in enumerate(tokens)]
            assert not torch.allclose(fusion(other, subset), ref, atol=1e-4)
    assert torch.allclose(fusion(tokens), fusion(tokens, list(range(n))))


def test_mlp_head_layout():
    head = mlp_head(512, 512, 256)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert head(torch.randn(4, 512)).shape == (4, 256)


@pytest.mark.parametrize("layers", [1, 2])
def test_fusion_shortcuts_equal_the_full_sequence_computation(layers):
    """Evaluating only [CLS] in the last block (and sharing keys/values across subsets when
    there is one block) must give what running every block on the whole sequence gives."""
    torch.manual_seed(0)
    fusion = FusionTransformer(16, heads=4, mlp_ratio=4, layers=layers).eval()
    tokens = [torch.randn(3, 4, 16), torch.randn(3, 2, 16), torch.randn(3, 5, 16)]
    subsets = [[0], [1], [2], [0, 2], [0, 1, 2]]
    fast = fusion.forward_subsets(tokens, subsets)
    for s, out in zip(subsets, fast):
        x = fusion._sequence([tokens[m] for m in s])
        for block in fusion.blocks:
            x = block(x)
        assert torch.allclose(out, fusion.norm(x[:, 0]), atol=1e-5)


def _padded_tokens(seed: int = 0):
    """Three modalities of a batch of 4; modality 1 of sample 2 is entirely padding."""
    g = torch.Generator().manual_seed(seed)
    lengths = [[4, 1, 3, 2], [2, 3, 0, 1], [5, 5, 2, 4]]
    tokens = [torch.randn(4, max(ls), 16, generator=g) for ls in lengths]
    masks = [
        torch.arange(t.shape[1])[None, :] < torch.tensor(ls)[:, None]
        for t, ls in zip(tokens, lengths)
    ]
    return tokens, masks


SUBSETS = [[0], [1], [2], [0, 1], [1, 2], [0, 1, 2]]


@pytest.mark.parametrize("layers", [1, 2])
def test_fusion_all_true_masks_equal_no_masks(layers):
    torch.manual_seed(0)
    fusion = FusionTransformer(16, heads=4, mlp_ratio=4, layers=layers).eval()
    tokens = [torch.randn(3, 4, 16), torch.randn(3, 2, 16)]
    ones = [torch.ones(3, 4, dtype=torch.bool), None]
    subsets = [[0], [1], [0, 1]]
    for a, b in zip(
        fusion.forward_subsets(tokens, subsets), fusion.forward_subsets(tokens, subsets, ones)
    ):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.equal(fusion(tokens, masks=None), fusion(tokens))


@pytest.mark.parametrize("layers", [1, 2])
def test_fusion_ignores_padded_steps(layers):
    torch.manual_seed(0)
    fusion = FusionTransformer(16, heads=4, mlp_ratio=4, layers=layers).eval()
    tokens, masks = _padded_tokens()
    ref = fusion.forward_subsets(tokens, SUBSETS, masks)
    for out in ref:
        assert out.shape == (4, 16) and torch.isfinite(out).all()
    changed = [
        torch.where(m[..., None], t, 100 * torch.randn_like(t)) for t, m in zip(tokens, masks)
    ]
    changed[0][~masks[0]] = float("nan")
    for a, b in zip(ref, fusion.forward_subsets(changed, SUBSETS, masks)):
        assert torch.allclose(a, b, atol=1e-6)
    # The padded steps really are dropped: this equals the fusion of sample 0's real steps.
    real = [t[:1, : int(m[0].sum())] for t, m in zip(tokens, masks)]
    for s, out in zip(SUBSETS, ref):
        assert torch.allclose(out[:1], fusion(real, s), atol=1e-5)
    # Modality 1 of sample 2 is all padding: alone it gives the embedding of [CLS] alone.
    cls_only = fusion.forward_subsets(tokens, [[1]], [None, torch.zeros(4, 3, dtype=bool), None])
    assert torch.allclose(ref[1][2], cls_only[0][2], atol=1e-6)
    assert torch.allclose(cls_only[0], cls_only[0][:1].expand(4, -1), atol=1e-6)


@pytest.mark.parametrize("layers", [1, 2])
def test_fusion_gradient_is_zero_at_padded_steps(layers):
    torch.manual_seed(0)
    fusion = FusionTransformer(16, heads=4, mlp_ratio=4, layers=layers)
    tokens, masks = _padded_tokens(1)
    tokens = [t.requires_grad_() for t in tokens]
    sum(o.square().sum() for o in fusion.forward_subsets(tokens, SUBSETS, masks)).backward()
    for t, m in zip(tokens, masks):
        assert torch.all(t.grad[~m] == 0)
        assert t.grad[m].abs().sum(-1).min() > 0
    assert all(torch.isfinite(p.grad).all() for p in fusion.parameters())


def test_fusion_mask_shapes_are_checked():
    fusion = FusionTransformer(16, heads=4)
    tokens = [torch.randn(2, 3, 16), torch.randn(2, 2, 16)]
    with pytest.raises(ValueError, match="masks for 2 modalities"):
        fusion(tokens, masks=[torch.ones(2, 3, dtype=torch.bool)])
    with pytest.raises(ValueError, match="modality 1"):
        fusion(tokens, masks=[None, torch.ones(2, 3, dtype=torch.bool)])


def _sequence_params(f: int, d: int, layers: int, ff: int) -> int:
    conv = f * d  # 1x1 convolution, no bias
    attention = (3 * d * d + 3 * d) + (d * d + d)  # in_proj (q, k, v) and out_proj
    feed_forward = (d * ff + ff) + (ff * d + d)
    norms = 2 * 2 * d  # two LayerNorms, weight and bias
    return conv + layers * (attention + feed_forward + norms)


def test_sequence_encoder_parameter_count_and_shapes():
    enc = SequenceEncoder(20)  # the paper's MOSI vision encoder: d = 40, 5 layers, 5 heads
    n = sum(p.numel() for p in enc.parameters())
    assert n == _sequence_params(20, 40, 5, 2048) == 800 + 5 * (6560 + 165928 + 160) == 864040
    layer = enc.transformer.layers[0]
    assert layer.norm_first and layer.self_attn.batch_first and layer.self_attn.num_heads == 5
    assert layer.dropout.p == 0.1 and enc.proj.bias is None and enc.proj.kernel_size == (1,)
    x = torch.randn(3, 7, 20)
    mask = torch.ones(3, 7, dtype=torch.bool)
    _e = enc(x, mask)
    tokens, out_mask = _e.tokens, _e.mask
    assert tokens.shape == (3, 7, 40) and out_mask is mask
    _e = enc(x)
    tokens, out_mask = _e.tokens, _e.mask
    assert tokens.shape == (3, 7, 40) and out_mask is None
    small = SequenceEncoder(5, dim=16, layers=2, heads=4, dim_feedforward=32, dropout=0.0)
    assert sum(p.numel() for p in small.parameters()) == _sequence_params(5, 16, 2, 32)
    assert small.transformer.layers[0].self_attn.num_heads == 4
    with pytest.raises(ValueError, match="divisible"):
        SequenceEncoder(5, dim=16, heads=5)
    with pytest.raises(ValueError, match=r"\(B, T, 20\)"):
        enc(torch.randn(3, 7, 5))


@pytest.mark.parametrize("grad", [False, True])
def test_sequence_encoder_padding_does_not_reach_real_steps(grad):
    torch.manual_seed(0)
    enc = SequenceEncoder(6, dim=20, layers=2, heads=5, dim_feedforward=64).eval()
    lengths = torch.tensor([5, 2, 0, 4])
    x = torch.randn(4, 5, 6)
    mask = torch.arange(5)[None, :] < lengths[:, None]
    x = torch.where(mask[..., None], x, 0.0)
    with torch.set_grad_enabled(grad):
        _e = enc(x, mask)
        ref, _ = _e.tokens, _e.mask
        noisy = torch.where(mask[..., None], x, 1e3 * torch.randn_like(x))
        noisy[2, 0] = float("nan")
        _e = enc(noisy, mask)
        out, _ = _e.tokens, _e.mask
        assert torch.allclose(out, ref, atol=1e-5)
        assert torch.isfinite(ref).all() and torch.all(ref[~mask] == 0)
        for i, n in enumerate(lengths.tolist()):
            if n:  # each sample alone, without padding, gives its real steps' tokens
                _e = enc(x[i : i + 1, :n])
                alone, _ = _e.tokens, _e.mask
                assert torch.allclose(ref[i, :n], alone[0], atol=1e-5)


def test_sequence_encoder_gradient_is_zero_at_padded_steps():
    torch.manual_seed(0)
    enc = SequenceEncoder(6, dim=20, layers=2, heads=5, dim_feedforward=64)
    mask = torch.arange(5)[None, :] < torch.tensor([5, 2, 0])[:, None]
    x = torch.randn(3, 5, 6, requires_grad=True)
    _e = enc(x, mask)
    tokens, _ = _e.tokens, _e.mask
    tokens.square().sum().backward()
    assert torch.all(x.grad[~mask] == 0) and x.grad[mask].abs().sum(-1).min() > 0
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters())


def _reference_tokens(enc, x, mask):
    """PyTorch's own nn.TransformerEncoder forward over the encoder's layers."""
    x = torch.where(mask[..., None], x, 0.0)
    h = enc.proj(x.transpose(1, 2)).transpose(1, 2)
    ignore = ~mask & mask.any(dim=1, keepdim=True)
    return torch.where(mask[..., None], enc.transformer(h, src_key_padding_mask=ignore), 0.0)


@pytest.mark.parametrize("lengths", [[7, 7, 7], [7, 3, 0, 5]])
def test_sequence_encoder_computes_pytorchs_layers(lengths):
    """Without dropout our forward is PyTorch's pre-norm layer: same tokens, same gradients
    (padded batches take the packed feed-forward, full ones the whole batch)."""
    torch.manual_seed(0)
    enc = SequenceEncoder(6, dim=20, layers=2, heads=5, dim_feedforward=64, dropout=0.0)
    mask = torch.arange(7)[None, :] < torch.tensor(lengths)[:, None]
    x = torch.randn(len(lengths), 7, 6, requires_grad=True)
    inputs = [x, *enc.parameters()]
    ours = enc(x, mask).tokens
    grads_ours = torch.autograd.grad(ours.sin().sum(), inputs)
    ref = _reference_tokens(enc, x, mask)
    grads_ref = torch.autograd.grad(ref.sin().sum(), inputs)
    assert torch.allclose(ours, ref, atol=1e-5)
    for mine, theirs in zip(grads_ours, grads_ref):
        assert torch.allclose(mine, theirs, atol=1e-5)
    enc.eval()  # with dropout set, eval mode is deterministic and equal too
    with torch.no_grad():
        assert torch.allclose(enc(x, mask).tokens, _reference_tokens(enc, x, mask), atol=1e-5)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_keys_keep_each_element_with_probability_one_minus_p(p):
    torch.manual_seed(0)
    n = 400_000
    kept = sequence.dropout_keys((n // 4, 4), torch.device("cpu")) > sequence.key_threshold(p)
    sd = (p * (1 - p) / (n // 4)) ** 0.5
    # each of the four 16-bit lanes of a 64-bit draw keeps at the same rate
    assert torch.all((kept.float().mean(0) - (1 - p)).abs() < 5 * sd)
    x = torch.ones(n)
    dropped = sequence.dropout(x, p, training=True)
    assert dropped.unique().tolist() == pytest.approx([0.0, 1 / (1 - p)])
    assert abs(dropped.mean().item() - 1.0) < 5 * (p / (1 - p) / n) ** 0.5
    assert sequence.dropout(x, p, training=False) is x


def test_feed_forward_blocks_equal_the_plain_layer_with_the_same_dropout_keys():
    """The blocked, in-place feed-forward with dropout gives the output and the gradients of
    linear2(dropout(relu(linear1(x)))) computed by autograd with the same keys."""
    torch.manual_seed(0)
    n, d, hidden, p, block = 11, 6, 16, 0.3, 4
    x = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    params = [
        torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        for shape in ((hidden, d), (hidden,), (d, hidden), (d,))
    ]
    torch.manual_seed(1)
    out = sequence._FeedForward.apply(x, *params, p, block)
    grads = torch.autograd.grad(out.square().sum(), [x, *params])
    torch.manual_seed(1)  # the same keys, block by block
    keys = [
        sequence.dropout_keys((len(range(s, min(s + block, n))), hidden), x.device)
        for s in range(0, n, block)
    ]
    w1, b1, w2, b2 = params
    h = torch.relu(x @ w1.t() + b1) * (torch.cat(keys) > sequence.key_threshold(p)) / (1 - p)
    ref = h @ w2.t() + b2
    ref_grads = torch.autograd.grad(ref.square().sum(), [x, *params])
    assert torch.allclose(out, ref)
    for mine, theirs in zip(grads, ref_grads):
        assert torch.allclose(mine, theirs)


def test_sequence_encoder_dropout_is_seeded_and_active_in_training():
    enc = SequenceEncoder(6, dim=20, layers=2, heads=5, dim_feedforward=64)
    x = torch.randn(3, 5, 6)
    mask = torch.arange(5)[None, :] < torch.tensor([5, 2, 4])[:, None]
    torch.manual_seed(3)
    a = enc(x, mask).tokens
    torch.manual_seed(3)
    b = enc(x, mask).tokens
    c = enc(x, mask).tokens
    assert torch.equal(a, b) and not torch.allclose(b, c)
    assert torch.isfinite(a).all() and torch.all(a[~mask] == 0)


def test_tabular_encoder_is_multibenchs_two_layer_perceptron():
    torch.manual_seed(0)
    enc = TabularEncoder(5)  # MIMIC: 5 -> 10 -> 10
    x = torch.randn(4, 5)
    out = enc(x)
    expected = enc.fc2(torch.relu(enc.fc(x)))
    assert out.tokens.shape == (4, 1, 10) and torch.equal(out.tokens[:, 0], expected)
    assert sum(p.numel() for p in enc.parameters()) == (5 * 10 + 10) + (10 * 10 + 10)
    tokens = build_tokenizer("feature", enc.out_channels, 16)(out)
    assert tokens.shape == (4, 10, 16)  # one token per output channel: x_i * w_i + b_i
    tok = build_tokenizer("feature", 10, 16)
    manual = expected[..., None] * tok.weight + tok.bias
    assert torch.allclose(tok(out), manual)
    with pytest.raises(ValueError, match=r"\(B, 5\)"):
        enc(torch.randn(4, 6))


def test_gru_encoder_tokens_are_its_outputs_and_ignore_later_padding():
    torch.manual_seed(0)
    enc = GRUEncoder(12, dim=8)
    x = torch.randn(3, 24, 12)
    full = enc(x)
    assert full.tokens.shape == (3, 24, 8) and full.mask is None
    assert torch.allclose(full.tokens, enc.gru(x)[0])
    mask = torch.arange(24)[None, :] < torch.tensor([24, 10, 0])[:, None]
    noisy = torch.where(mask[..., None], x, 1e3 * torch.randn_like(x))
    out = enc(noisy, mask)
    assert torch.allclose(out.tokens[mask], full.tokens[mask], atol=1e-6)
    assert torch.all(out.tokens[~mask] == 0) and out.mask is mask
    assert isinstance(build_encoder({"name": "gru", "dim": 8}, (24, 12)), GRUEncoder)
    with pytest.raises(ConfigError, match="gru"):
        build_encoder({"name": "gru", "dim": 8, "layers": 5}, (24, 12))


# ---------------------------------------------------------------------------------------------
# Vision&Touch: the ResNet-18 trunk, the causal-conv force encoder, the proprio MLP


def test_resnet18_tokens_are_its_4_by_4_map_at_128_px_row_major():
    torch.manual_seed(0)
    encoder = ResNet18Encoder().eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        out, fmap = encoder(x), encoder.feature_map(x)
    assert encoder.out_channels == 512 and fmap.shape == (2, 512, 4, 4)
    assert out.tokens.shape == (2, 16, 512) and out.grid == (4, 4) and out.mask is None
    for r in range(4):
        for c in range(4):
            assert torch.equal(out.tokens[:, r * 4 + c], fmap[:, :, r, c])
    with pytest.raises(ValueError, match="no mask"):
        encoder(x, torch.ones(2, 16, dtype=torch.bool))


@pytest.mark.parametrize(
    "encoder, reference, channels",
    [(ResNet18Encoder, resnet18, 512), (ResNet50Encoder, resnet50, 2048)],
)
@pytest.mark.parametrize("train", [False, True])
def test_resnets_equal_torchvisions_forward_up_to_layer4(encoder, reference, channels, train):
    torch.manual_seed(0)
    ours = encoder().double().train(train)
    reference = reference(weights=None).double().train(train)
    state = ours.state_dict()
    # torchvision's names, every parameter and buffer but the classifier's
    assert set(state) == {k for k in reference.state_dict() if not k.startswith("fc.")}
    reference.load_state_dict({**reference.state_dict(), **state})
    trunk = torch.nn.Sequential(*list(reference.children())[:-2])  # up to layer4
    x = torch.randn(3, 3, 128, 128, dtype=torch.float64)
    out_ref = trunk(x)
    encoded = ours(x)
    assert out_ref.shape == (3, channels, 4, 4) and ours.out_channels == channels
    assert torch.equal(encoded.tokens.transpose(1, 2).reshape(out_ref.shape), out_ref)
    assert isinstance(build_encoder({"name": encoder.arch}, (64, 64, 3)), encoder)


def test_resnet18_map_side_is_ceil_of_a_32nd_and_the_size_check_is_shared():
    encoder = ResNet18Encoder().eval()
    with torch.no_grad():
        for side, grid in [(1, 1), (32, 1), (33, 2), (64, 2), (224, 7)]:
            assert encoder(torch.zeros(1, 3, side, side)).grid == (grid, grid)
        assert encoder(torch.zeros(1, 3, 40, 96)).grid == (2, 3)  # not square: (h, w)
    assert ResNet18Encoder.min_input_size == 1
    with pytest.raises(ConfigError, match="ResNet-18 encoder needs images of at least 1 x 1"):
        encoder(torch.zeros(1, 3, 0, 8))
    assert isinstance(AlexNetEncoder(), ConvTrunk) and isinstance(encoder, ConvTrunk)
    assert isinstance(build_encoder({"name": "resnet18"}, (128, 128, 3)), ResNet18Encoder)


def test_causal_conv_encoder_layout_and_default_initialisation():
    enc = CausalConvEncoder(6, dim=96)
    convs = [m for m in enc.layers if isinstance(m, torch.nn.Conv1d)]
    acts = [m for m in enc.layers if isinstance(m, torch.nn.LeakyReLU)]
    assert len(convs) == 5 and len(acts) == 5 and len(enc.layers) == 10
    assert all(isinstance(a, torch.nn.LeakyReLU) for a in list(enc.layers)[1::2])
    assert all(a.negative_slope == 0.1 for a in acts)
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (6, 16),
        (16, 32),
        (32, 64),
        (64, 128),
        (128, 96),
    ]
    for c in convs:
        assert isinstance(c, CausalConv1d) and c.trim == 1
        assert (c.kernel_size, c.stride, c.padding, c.dilation) == ((2,), (2,), (1,), (1,))
        # PyTorch's default init (the authors re-initialise only 2-D layers): biases not zero
        assert c.bias.abs().min() > 0
    assert enc.out_channels == 96 and CausalConvEncoder(6).out_channels == 128


def test_causal_conv_first_layer_output_j_reads_inputs_2j_minus_1_and_2j_only():
    """Padding 1 on both sides, kernel 2, stride 2, the last output cut: output j of the layer
    is w0 x[2j - 1] + w1 x[2j] + b (x[-1] = 0), so input k reaches output ceil(k / 2) alone
    (none for k = 31) and no output sees an input after its own position 2j."""
    torch.manual_seed(0)
    layer = CausalConvEncoder(6).layers[0].double()
    x = torch.randn(2, 6, 32, dtype=torch.float64)
    with torch.no_grad():
        ref = layer(x)
        assert ref.shape == (2, 16, 16)
        padded = torch.nn.functional.pad(x, (1, 0))
        manual = torch.einsum("oik,bijk->boj", layer.weight, padded[..., :32].unfold(2, 2, 2))
        assert torch.allclose(ref, manual + layer.bias[:, None])
        for k in range(32):
            moved = x.clone()
            moved[..., k] += 1.0
            changed = (layer(moved) - ref).abs().amax(dim=(0, 1)) > 0
            expected = {-(-k // 2)} - {16}
            assert set(torch.nonzero(changed).flatten().tolist()) == expected, k


def test_causal_conv_encoder_gives_one_token_from_the_oldest_reading():
    """Output j of every layer reads its inputs 2j - 1 and 2j, and only output 0 is left after
    five layers: the token depends on step 0 of the 32 alone (the authors' network)."""
    torch.manual_seed(0)
    enc = CausalConvEncoder(6, dim=64).double()
    x = torch.randn(3, 32, 6, dtype=torch.float64)
    with torch.no_grad():
        out = enc(x)
        assert out.tokens.shape == (3, 1, 64) and out.mask is None and out.grid is None
        later = x.clone()
        later[:, 1:] = torch.randn(3, 31, 6, dtype=torch.float64)
        assert torch.equal(enc(later).tokens, out.tokens)
        first = x.clone()
        first[:, 0] += 1.0
        assert not torch.allclose(enc(first).tokens, out.tokens)
    with pytest.raises(ValueError, match="no mask"):
        enc(x, torch.ones(3, 32, dtype=torch.bool))
    for steps in (31, 33, 64):
        with pytest.raises(ValueError, match=r"\(B, 32, 6\)"):
            enc(torch.randn(3, steps, 6, dtype=torch.float64))
    built = build_encoder({"name": "causal_conv", "dim": 128}, (32, 6))
    assert isinstance(built, CausalConvEncoder) and built.n_features == 6
    with pytest.raises(ConfigError, match="causal_conv"):
        build_encoder({"name": "causal_conv", "layers": 5}, (32, 6))


def test_proprio_encoder_is_a_four_layer_leaky_mlp():
    torch.manual_seed(0)
    enc = ProprioEncoder(8, dim=48)
    n = sum(p.numel() for p in enc.parameters())
    assert n == (8 * 32 + 32) + (32 * 64 + 64) + (64 * 128 + 128) + (128 * 48 + 48)
    default = ProprioEncoder(8)
    assert default.out_channels == 512
    assert sum(p.numel() for p in default.parameters()) == 10_720 + 128 * 512 + 512 == 76_768
    x = torch.randn(4, 8)
    out = enc(x)
    assert out.tokens.shape == (4, 1, 48) and out.mask is None
    h = x
    for linear in [m for m in enc.layers if isinstance(m, torch.nn.Linear)]:
        h = torch.nn.functional.leaky_relu(linear(h), 0.1)  # after the last layer too
    assert torch.allclose(out.tokens[:, 0], h)
    assert (out.tokens < 0).any()  # the last LeakyReLU lets negatives through, scaled
    with pytest.raises(ValueError, match=r"\(B, 8\)"):
        enc(torch.randn(4, 7))
    assert isinstance(build_encoder({"name": "proprio", "dim": 512}, (8,)), ProprioEncoder)


def test_feature_tokens_make_one_token_per_channel_and_step_tokens_one():
    torch.manual_seed(0)
    force = CausalConvEncoder(6, dim=128)(torch.randn(4, 32, 6))
    features = build_tokenizer("feature", 128, 32)(force)
    assert features.shape == (4, 128, 32)
    steps = build_tokenizer("step", 128, 32)
    assert steps(force).shape == (4, 1, 32) and isinstance(steps.proj, torch.nn.Linear)
    proprio = ProprioEncoder(8)(torch.randn(4, 8))
    same = build_tokenizer("step", 512, 512)
    assert isinstance(same.proj, torch.nn.Identity) and torch.equal(same(proprio), proprio.tokens)
    with pytest.raises(ValueError, match="one vector per sample"):  # a GRU's 24 steps
        build_tokenizer("feature", 8, 16)(GRUEncoder(12, dim=8)(torch.randn(2, 24, 12)))
