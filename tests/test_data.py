"""Batches drawn from paired banks (inputs, masks, labels by row), and the views a method asks
of them (images per modality, sequence modalities together, masks respected)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG

from comm_repro.augment import image_view_transforms
from comm_repro.config import ConfigError
from comm_repro.data.paired import Batch, PairedBank
from comm_repro.sequence_augment import SequenceAugment
from comm_repro.views import Views

AUGMENT = TINY_CONFIG["augment"]


def _bank() -> PairedBank:
    """Two sequence modalities of 5 and 4 samples paired by a 6-row index, masks per bank row,
    labels per pair row."""
    g = np.random.default_rng(0)
    banks = [g.normal(size=(5, 3, 2)).astype(np.float32), g.normal(size=(4, 2, 3))]
    masks = [g.random((5, 3)) < 0.6, g.random((4, 2)) < 0.6]
    index = np.array([[0, 3], [4, 1], [2, 2], [1, 0], [3, 3], [0, 1]])
    labels = {"label": np.array([0, 1, 1, 0, 1, 0]), "score": np.linspace(-1, 1, 6)}
    return PairedBank.from_numpy(banks, index, masks, labels)


def test_gather_takes_inputs_and_masks_by_bank_row_and_labels_by_pair_row():
    data = _bank()
    rows = torch.tensor([4, 0, 4, 5])
    batch = data.gather(rows)
    assert isinstance(batch, Batch) and len(batch) == 4
    for m in range(2):
        bank_rows = data.index[rows, m]
        assert torch.equal(batch.inputs[m], data.banks[m][bank_rows])
        assert torch.equal(batch.masks[m], data.masks[m][bank_rows])
    assert torch.equal(batch.masks[0][0], data.masks[0][3])  # pair 4 takes sample 3 of bank 0
    assert torch.equal(batch.masks[1][1], data.masks[1][3])  # pair 0 takes sample 3 of bank 1
    assert set(batch.labels) == {"label", "score"}
    assert batch.labels["label"].tolist() == [1, 0, 1, 0]
    assert torch.equal(batch.labels["score"], data.labels["score"][rows])


def test_a_bank_without_masks_or_labels_gathers_none_and_nothing():
    data = PairedBank.aligned([np.zeros((3, 8, 8, 3), np.uint8), np.ones((3, 8, 8, 3), np.uint8)])
    batch = data.gather(torch.tensor([2, 1]))
    assert batch.masks == [None, None] and batch.labels == {}
    assert torch.equal(data.index, torch.tensor([[0, 0], [1, 1], [2, 2]]))
    assert data.sample_shapes() == [(8, 8, 3), (8, 8, 3)] and data.n_modalities == 2


def test_aligned_banks_share_one_mask_and_keep_their_shapes():
    x, y, mask = np.zeros((4, 6, 2)), np.zeros((4, 6, 5)), np.ones((4, 6), bool)
    data = PairedBank.aligned([x, y], [mask, mask], {"label": np.arange(4)})
    assert data.masks[0] is data.masks[1]  # one array, one tensor
    assert data.sample_shapes() == [(6, 2), (6, 5)]
    moved = data.to("cpu")
    assert moved.masks[0] is moved.masks[1] and moved.digest() == data.digest()


def test_rows_and_masks_that_do_not_fit_are_refused():
    banks = [torch.zeros(3, 2), torch.zeros(3, 2)]
    index = torch.zeros(3, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="labels 'y' have 2 rows, not 3"):
        PairedBank(banks, index, labels={"y": torch.zeros(2)})
    with pytest.raises(ValueError, match="1 masks for 2 modalities"):
        PairedBank(banks, index, [None])
    with pytest.raises(ValueError, match=r"index must be \(P, 2\)"):
        PairedBank(banks, torch.zeros(3, 1, dtype=torch.long))


def test_digest_changes_when_a_mask_or_a_label_changes():
    data = _bank()
    assert _bank().digest() == data.digest()
    flipped = _bank()
    flipped.masks[1][2, 0] = ~flipped.masks[1][2, 0]
    relabelled = _bank()
    relabelled.labels["label"][5] = 1
    rescored = _bank()
    rescored.labels["score"][0] += 1e-9
    unlabelled = PairedBank(data.banks, data.index, data.masks)
    digests = {d.digest() for d in (data, flipped, relabelled, rescored, unlabelled)}
    assert len(digests) == 5


# ---------------------------------------------------------------------------------------------
# Views


def _image(name, strong=None, weak=None):
    aug = copy.deepcopy(AUGMENT["image"])
    aug["strong"].update(strong or {})
    aug["weak"].update(weak or {})
    return {"name": name, "kind": "image", "augment": aug}


def _sequence(name, strong=None):
    aug = copy.deepcopy(AUGMENT["sequence"])
    aug["strong"].update(strong or {})
    return {"name": name, "kind": "sequence", "augment": aug}


def _images(b=4, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(0, 256, (b, size, size, 3), dtype=torch.uint8, generator=g) for _ in range(2)
    ]


def _sequences(b=6, t=5, seed=0, garbage=1e3):
    """Two padded modalities with their own masks, huge values at the padded steps."""
    g = torch.Generator().manual_seed(seed)
    xs, masks = [], []
    for f in (3, 4):
        mask = torch.rand(b, t, generator=g) < 0.7
        mask[:, 0] = True
        x = torch.randn(b, t, f, generator=g)
        xs.append(torch.where(mask[..., None], x, garbage))
        masks.append(mask)
    return xs, masks


def test_image_views_are_drawn_per_modality_as_image_view_transforms_draws_them():
    modalities = [_image("a"), _image("b", strong={"flip_p": 1.0, "gray_p": 1.0})]
    views = Views(modalities, [(64, 64, 3)] * 2)
    images = _images()
    transforms = [
        image_view_transforms(64, m["augment"]["strong"], m["augment"]["weak"]) for m in modalities
    ]
    for name in ("strong", "weak"):
        torch.manual_seed(3)
        got = views(name, images, [None, None])
        torch.manual_seed(3)
        expected = [getattr(t, name)(x) for t, x in zip(transforms, images)]
        for a, b in zip(got, expected):
            assert a.shape == (4, 3, 64, 64) and torch.equal(a, b)
    torch.manual_seed(3)
    only = views("strong", images, [None, None], which=[1])
    torch.manual_seed(3)
    assert len(only) == 1 and torch.equal(only[0], transforms[1].strong(images[1]))
    assert torch.equal(views.plain(0, images[0]), transforms[0].plain(images[0]))
    torch.manual_seed(4)
    a = views("strong", images, [None, None])
    assert not torch.equal(a[0], views("strong", images, [None, None])[0])  # random draws


def test_image_views_come_out_at_the_resolution_of_the_data():
    views = Views([_image("a"), _image("b")], [(96, 96, 3)] * 2)
    images = _images(size=96)
    assert all(v.shape == (4, 3, 96, 96) for v in views("weak", images, [None, None]))


def test_sequence_modalities_are_augmented_together():
    modalities = [_sequence("vision"), _sequence("text")]
    xs, masks = _sequences()
    views = Views(modalities, [(5, 3), (5, 4)])
    torch.manual_seed(5)
    got = views("strong", xs, masks)
    torch.manual_seed(5)
    expected = SequenceAugment(**AUGMENT["sequence"]["strong"])(xs, masks)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    # Noise is decided once per sample for both modalities: noised in both or in neither.
    noisy_only = [_sequence(n, {"drop_p": 0.0, "noise_p": 0.5}) for n in ("vision", "text")]
    views = Views(noisy_only, [(5, 3), (5, 4)])
    xs, masks = _sequences(b=64, seed=1)
    torch.manual_seed(6)
    out = views("strong", xs, masks)
    changed = [(o != x).flatten(1).any(1) for o, x in zip(out, xs)]
    assert torch.equal(changed[0], changed[1])
    assert 0 < int(changed[0].sum()) < 64


def test_sequence_views_respect_the_masks():
    """Padded steps come out as they went in; only real steps are dropped or noised."""
    drop_all = [
        _sequence(n, {"drop_p": 1.0, "drop_frac": [1.0, 1.0], "noise_p": 0.0}) for n in "ab"
    ]
    views = Views(drop_all, [(5, 3), (5, 4)])
    xs, masks = _sequences()
    out = views("strong", xs, masks)
    for o, x, k in zip(out, xs, masks):
        assert torch.equal(o[~k], x[~k])  # the garbage is untouched
        assert torch.all(o[k] == 0)  # every real step dropped
    noise = [_sequence(n, {"drop_p": 0.0, "noise_p": 1.0}) for n in "ab"]
    out = Views(noise, [(5, 3), (5, 4)])("strong", xs, masks)
    for o, x, k in zip(out, xs, masks):
        assert torch.equal(o[~k], x[~k]) and torch.all(o[k] != x[k])
    # Without masks every step is real: the padded ones are dropped too.
    out = views("strong", xs, [None, None])
    assert all(torch.all(o == 0) for o in out)


def test_weak_sequence_view_with_probability_zero_is_the_input_itself():
    views = Views([_sequence("vision"), _sequence("text")], [(5, 3), (5, 4)])
    assert AUGMENT["sequence"]["weak"]["drop_p"] == AUGMENT["sequence"]["weak"]["noise_p"] == 0
    xs, masks = _sequences()
    state = torch.get_rng_state()
    out = views("weak", xs, masks)
    assert all(o is x for o, x in zip(out, xs))
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn
    assert views.plain(1, xs[1]) is xs[1]


def test_image_and_sequence_modalities_mixed():
    views = Views([_image("frame"), _sequence("audio")], [(64, 64, 3), (5, 3)])
    images = _images()[0]
    xs, masks = _sequences(b=4)
    torch.manual_seed(8)
    image_view, sequence_view = views("strong", [images, xs[0]], [None, masks[0]])
    torch.manual_seed(8)
    assert torch.equal(image_view, image_view_transforms(64, **AUGMENT["image"]).strong(images))
    assert sequence_view.shape == xs[0].shape
    assert torch.equal(sequence_view[~masks[0]], xs[0][~masks[0]])
    (alone,) = views("weak", [images, xs[0]], [None, masks[0]], which=[1])
    assert alone is xs[0]


def test_views_refuse_what_they_cannot_make():
    with pytest.raises(ConfigError, match="same augment settings"):
        Views([_sequence("a"), _sequence("b", {"noise_std": 0.5})], [(5, 3), (5, 4)])
    with pytest.raises(ConfigError, match="'graph'"):
        Views([{"name": "g", "kind": "graph", "augment": {}}, _image("b")], [(3,), (64, 64, 3)])
    views = Views([_image("a"), _image("b")], [(64, 64, 3)] * 2)
    with pytest.raises(ValueError, match="a view is one of"):
        views("medium", _images(), [None, None])


def test_a_tabular_view_adds_noise_to_whole_vectors_and_drops_nothing():
    tabular = {
        "name": "tabular",
        "kind": "tabular",
        "augment": {"strong": {"noise_p": 1.0, "noise_std": 0.1}, "weak": {"noise_p": 0.0}},
    }
    views = Views([tabular, _sequence("timeseries")], [(5,), (5, 3)])
    xs, masks = _sequences()
    x = torch.randn(xs[0].shape[0], 5)
    strong, _ = views("strong", [x, xs[0]], [None, masks[0]])
    noise = strong - x
    assert torch.all(noise != 0) and 0.05 < noise.std().item() < 0.2  # N(0, 0.1^2), no zeros
    weak, _ = views("weak", [x, xs[0]], [None, masks[0]])
    assert weak is x


def test_a_batch_draws_one_alternative_per_row_anew_each_time():
    # 3 samples with 1, 2 and 3 alternatives (texts) of 4 steps; alternative j of sample i
    # holds 10 * i + j, the padded alternatives -1 (never drawn)
    ids = np.full((3, 3, 4), -1, dtype=np.int64)
    counts = np.array([1, 2, 3])
    for i, c in enumerate(counts):
        for j in range(c):
            ids[i, j] = 10 * i + j
    mask = ids >= 0
    images = np.zeros((3, 8, 8, 3), np.uint8)
    data = PairedBank.aligned([images, ids], [None, mask], None, [None, counts])
    assert data.sample_shapes() == [(8, 8, 3), (4,)]
    torch.manual_seed(0)
    seen = {i: set() for i in range(3)}
    for _ in range(60):
        batch = data.gather(torch.arange(3))
        assert batch.inputs[1].shape == (3, 4) and bool(batch.masks[1].all())
        for i, row in enumerate(batch.inputs[1]):
            assert len(set(row.tolist())) == 1  # one alternative, whole
            seen[i].add(int(row[0]) - 10 * i)
    assert seen == {0: {0}, 1: {0, 1}, 2: {0, 1, 2}}  # every real one, no padded one
    other = PairedBank.aligned([images, ids], [None, mask], None, [None, np.array([1, 1, 3])])
    assert other.digest() != data.digest()  # the counts are part of the data
    with pytest.raises(ValueError, match="alternative"):
        PairedBank.aligned([images, ids], [None, mask], None, [None, np.array([1, 0, 3])])


@pytest.mark.parametrize(
    "dataset, crop_only",
    [
        ("trifeatures_crop1", [True, False]),
        ("trifeatures_crop2", [False, True]),
        ("trifeatures_synergy_crop12", [True, True]),
        ("trifeatures", [False, False]),
    ],
)
def test_the_augmentation_switches_change_only_the_named_modalitys_views(dataset, crop_only):
    # Table 5's datasets in config/paper.yaml: a modality's crop-only strong view keeps the
    # crop and turns colour jitter, grayscale, blur and flip off; the other modality keeps all
    from pathlib import Path

    from comm_repro.config import load_yaml, run_config
    from comm_repro.views import Views

    cfg = load_yaml(Path(__file__).parents[1] / "config" / "paper.yaml")
    run = run_config(cfg, dataset, "comm", 0)
    views = Views(run["dataset"]["modalities"], [(224, 224, 3)] * 2)
    for m, crop in enumerate(crop_only):
        strong, weak = views.image[m].strong, views.image[m].weak
        assert strong.crop_scale == (0.08, 1.0) and weak.crop_scale == (0.5, 1.0)
        probabilities = (strong.jitter_p, strong.gray_p, strong.blur_p, strong.flip_p)
        assert probabilities == ((0.0, 0.0, 0.0, 0.0) if crop else (0.8, 0.2, 0.5, 0.5))
