"""Trifeature generator (bit-identical to the reference for seed 42), storage, pairing, tasks.

The golden digests in tests/data/trifeatures_seed42.json were computed from the reference
generator of the CoMM authors (its per-pixel implementation, run once for the whole seed-42 set).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from comm_repro.data import trifeatures as tf
from comm_repro.errors import DataError

GOLDEN = json.loads((Path(__file__).parent / "data" / "trifeatures_seed42.json").read_text())


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def paper_set() -> dict[str, tf.TrifeatureSplit]:
    return tf.generate(seed=42, num_per_combination=3, progress=False)


@pytest.mark.parametrize("shape", tf.SHAPES)
def test_shape_templates_match_the_reference(shape):
    assert _sha(tf.shape_template(shape)) == GOLDEN["templates"][shape]


@pytest.mark.parametrize("texture", tf.TEXTURES)
def test_textures_and_their_random_draws_match_the_reference(texture):
    rng = np.random.default_rng(7)
    pattern = tf.texture_pattern(texture, rng)
    golden = GOLDEN["textures_seed7"][texture]
    assert _sha(pattern) == golden["sha256"] and str(pattern.dtype) == golden["dtype"]
    assert int(rng.integers(0, 2**62)) == golden["next_draw"]  # same number of draws consumed


def test_vectorised_bernoulli_draws_equal_scalar_draws():
    """The rain texture relies on one sized draw consuming the stream like per-pixel draws."""
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    sized = a.binomial(1, 0.05, (30, 40))
    scalar = np.array([b.binomial(1, 0.05) for _ in range(1200)]).reshape(30, 40)
    assert np.array_equal(sized, scalar)
    assert a.integers(0, 2**62) == b.integers(0, 2**62)


def test_first_stimuli_are_bit_identical_to_the_reference():
    prefix = GOLDEN["prefix_sha256"]
    drawn = itertools.islice(tf.stimuli(seed=42), len(prefix))
    assert [_sha(image) for _, _, image in drawn] == prefix


def test_whole_seed42_set_is_bit_identical_to_the_reference(paper_set):
    for split in tf.SPLITS:
        assert _sha(paper_set[split].images) == GOLDEN["split_images_sha256"][split], split


def test_counts_labels_and_first_test_combinations(paper_set):
    train, test = paper_set["train"], paper_set["test"]
    assert train.images.shape == (2400, 224, 224, 3) and train.images.dtype == np.uint8
    assert len(test) == 200
    first = [
        (tf.SHAPES[s], tf.TEXTURES[t], tf.COLORS[c])
        for s, t, c in zip(test.shape, test.texture, test.color)
    ]
    assert first[:3] == [
        ("circle", "grid", "blue"),
        ("circle", "grid", "ocean"),
        ("circle", "grid", "orange"),
    ]
    combos = lambda s: set(zip(s.shape.tolist(), s.texture.tolist(), s.color.tolist()))  # noqa: E731
    assert len(combos(train)) == 800 and len(combos(test)) == 200
    assert not combos(train) & combos(test)  # held-out combinations never appear in training
    # Labels are what the pixels show: background grey, object in its colour.
    img = test.images[0].reshape(-1, 3)
    blue = (np.array(tf.COLOR_RGB["blue"]) * 255).astype(np.uint8)
    assert (img == blue).all(axis=1).any() and (img == 127).all(axis=1).any()


def test_generation_is_deterministic_and_seeded():
    a = [img for _, _, img in itertools.islice(tf.stimuli(seed=5), 4)]
    b = [img for _, _, img in itertools.islice(tf.stimuli(seed=5), 4)]
    c = [img for _, _, img in itertools.islice(tf.stimuli(seed=6), 4)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_synergy_mapping():
    names = {tf.TEXTURES[t]: tf.COLORS[c] for t, c in enumerate(tf.synergy_mapping(42))}
    assert names == {
        "solid": "cyan", "stripes": "purple", "grid": "red", "hexgrid": "ocean",
        "dots": "yellow", "noise": "blue", "triangles": "pink", "zigzags": "white",
        "rain": "green", "pluses": "orange",
    }  # fmt: skip


def test_pairing_sizes_and_invariants(paper_set):
    train, test = paper_set["train"], paper_set["test"]
    mapping = tf.synergy_mapping(42)
    assert len(tf.make_pairs(train, biased=False, max_pairs=None)) == 576_846
    assert len(tf.make_pairs(train, biased=True, max_pairs=None)) == 57_636
    assert len(tf.make_pairs(test, biased=False, max_pairs=None)) == 4_094
    assert len(tf.make_pairs(test, biased=True, max_pairs=None)) == 404
    for biased in (False, True):
        pairs = tf.make_pairs(train, biased=biased, max_pairs=10_000, seed=42)
        assert pairs.shape == (10_000, 2) and len(np.unique(pairs, axis=0)) == 10_000
        assert (train.shape[pairs[:, 0]] == train.shape[pairs[:, 1]]).all()
        labels = tf.task_labels(train, pairs, mapping)
        if biased:
            assert labels["synergy"].all()
        else:
            assert 0.05 < labels["synergy"].mean() < 0.15  # about 10 % positives
        assert np.array_equal(pairs, tf.make_pairs(train, biased=biased, max_pairs=10_000, seed=42))
    assert not np.array_equal(
        tf.make_pairs(train, False, 100, seed=42), tf.make_pairs(train, False, 100, seed=43)
    )
    assert _sha(tf.make_pairs(train, False, 10_000, 42)) == GOLDEN["pairs_sha256"]["train_unbiased"]
    assert _sha(tf.make_pairs(train, True, 10_000, 42)) == GOLDEN["pairs_sha256"]["train_biased"]


def test_task_labels():
    split = tf.TrifeatureSplit(
        images=np.zeros((3, 1, 1, 3), np.uint8),
        shape=np.array([0, 0, 1]),
        texture=np.array([0, 4, 2]),
        color=np.array([5, 4, 3]),
    )
    mapping = np.array([5, 6, 0, 7, 3, 2, 4, 9, 1, 8])  # texture 0 -> colour 5, texture 4 -> 3
    labels = tf.task_labels(split, np.array([[0, 1], [1, 2], [2, 2], [0, 0]]), mapping)
    assert labels["share"].tolist() == [0, 0, 1, 0]
    assert labels["unique1"].tolist() == [0, 4, 2, 0]
    assert labels["unique2"].tolist() == [4, 2, 2, 0]
    # (texture 0, colour 4): no; (4, 3): yes; (2, 3): no; (0, 5): yes
    assert labels["synergy"].tolist() == [0, 1, 0, 1]


def test_save_load_round_trip_and_corruption(tmp_path):
    rng = np.random.default_rng(0)
    split = tf.TrifeatureSplit(
        images=rng.integers(0, 256, (4, 224, 224, 3), dtype=np.uint8),
        shape=np.arange(4), texture=np.arange(4) + 1, color=np.arange(4) + 2,
    )  # fmt: skip
    tf.save_splits({"train": split, "test": split}, tmp_path, seed=1, num_per_combination=1)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["splits"]["test"]["count"] == 4
    loaded = tf.load_split(tmp_path, "train")
    for key in tf.ARRAYS:
        assert np.array_equal(getattr(loaded, key), getattr(split, key))
    split.images[0, 0, 0, 0] ^= 1
    tf.save_splits({"train": split}, tmp_path / "other", seed=1, num_per_combination=1)
    (tmp_path / "train.npz").write_bytes((tmp_path / "other" / "train.npz").read_bytes())
    with pytest.raises(DataError, match="comm-repro prepare trifeatures"):
        tf.load_split(tmp_path, "train")
    with pytest.raises(DataError, match="comm-repro prepare trifeatures"):
        tf.load_split(tmp_path / "missing", "train")


def test_downsample_area_average():
    images = np.zeros((2, 224, 224, 3), np.uint8)
    images[:, :112] = 200  # top half bright
    small = tf.downsample(images, 56)
    assert small.shape == (2, 56, 56, 3) and small.dtype == np.uint8
    assert (small[:, :28] == 200).all() and (small[:, 28:] == 0).all()
    assert abs(small.mean() - images.mean()) < 0.5
    assert tf.downsample(images, 224) is images
