"""MultiBench affect data: the restricted unpickler, structure checks, the authors' preprocessing,
the prepared files and their manifest, the download path and the `prepare` command.

The raw files are written here in the authors' format: a pickled dict of splits, each a dict of
float32 arrays (N, 50, d) with left zero-padded text, -inf in the audio and one sample whose text
is all zero; MOSI labels (N, 1, 1) continuous with exact zeros, humor/sarcasm labels (N, 1) 0/1.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
import warnings
import zipfile

import numpy as np
import pytest

from comm_repro import download
from comm_repro.cli import main
from comm_repro.data import multibench as mb
from comm_repro.data import prepared
from comm_repro.errors import DataError

# The fixtures are not the authors' MOSI file; tests of that warning catch it themselves.
pytestmark = pytest.mark.filterwarnings("ignore::comm_repro.data.multibench.RawDigestWarning")

SIZES = {"train": 9, "valid": 5, "test": 6}
DROPPED = ("train", 2)  # the sample whose text is all zero


def affect_data(name: str, seed: int = 0, sizes: dict | None = None) -> tuple[dict, dict]:
    """A raw dict in the authors' layout, and the padding (leading zero steps) of each sample."""
    rng = np.random.default_rng(seed)
    dims = mb.DATASETS[name].dims
    data, padding = {}, {}
    for split, n in (sizes or SIZES).items():
        pad = rng.integers(0, 45, size=n)
        pad[0] = 0  # one sample without padding
        arrays = {k: rng.standard_normal((n, 50, d)).astype(np.float32) for k, d in dims.items()}
        for i, p in enumerate(pad):
            for k in mb.MODALITIES:
                arrays[k][i, :p] = 0
        arrays["text"][1, pad[1] + 2] = 0  # an unknown word inside a sentence: not padding
        arrays["audio"][:, :, 0][arrays["audio"][:, :, 0] > 1.0] = -np.inf
        if split == DROPPED[0]:
            arrays["text"][DROPPED[1]] = 0
        if name == "mosi":
            labels = rng.uniform(-3, 3, size=(n, 1, 1)).astype(np.float32)
            labels[:2] = 0.0  # exact zeros are negatives
        else:
            labels = (np.arange(n) % 2).astype(np.float32).reshape(n, 1)
        arrays["labels"] = labels
        arrays["id"] = np.array([f"{split}_{i}" for i in range(n)], dtype=object)
        data[split], padding[split] = arrays, pad
    return data, padding


def write_pickle(path, obj, protocol: int = 4):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


@pytest.fixture
def mosi_pkl(tmp_path):
    data, padding = affect_data("mosi")
    return write_pickle(tmp_path / "mosi_data.pkl", data), data, padding


class Payload:
    """A pickle that runs a shell command when loaded by a plain unpickler."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_a_payload(tmp_path):
    live, refused = tmp_path / "live", tmp_path / "refused"
    pickle.loads(pickle.dumps({"train": Payload(live)}))  # the plain unpickler runs it
    assert live.exists()
    path = write_pickle(tmp_path / "hostile.pkl", {"train": Payload(refused)})
    with pytest.raises(DataError) as err:
        mb.load_pickle(path)
    assert not refused.exists()
    message = str(err.value)
    assert str(path) in message and "system" in message and "\n" not in message


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_reads_arrays(tmp_path, protocol):
    data = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": [1, 2.5, "s", b"x", None, True, (3,)],
        "c": np.float64(1.5),
        "d": np.array(["u", "v"], dtype=object),
    }
    path = write_pickle(tmp_path / "ok.pkl", data, protocol)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy.core deprecation either
        loaded, digest, size = mb.load_pickle(path)
    np.testing.assert_array_equal(loaded["a"], data["a"])
    assert loaded["b"] == data["b"] and loaded["c"] == 1.5 and list(loaded["d"]) == ["u", "v"]
    assert digest == download.sha256_file(path) and size == path.stat().st_size


def test_restricted_unpickler_reads_the_numpy_1_spelling(tmp_path):
    """Files written before numpy 2 name numpy.core.multiarray."""
    raw = pickle.dumps({"a": np.ones((2, 2), np.float32)}, protocol=2)
    assert b"numpy._core.multiarray\n" in raw  # protocol 2 names globals in plain lines
    path = tmp_path / "old.pkl"
    path.write_bytes(raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded, _, _ = mb.load_pickle(path)
    np.testing.assert_array_equal(loaded["a"], np.ones((2, 2)))


def test_restricted_unpickler_refuses_other_codecs(tmp_path):
    raw = pickle.dumps(b"abc", protocol=2).replace(b"latin1", b"zlib__")  # same length
    path = tmp_path / "codec.pkl"
    path.write_bytes(raw)
    with pytest.raises(DataError, match="not a readable pickle"):
        mb.load_pickle(path)


def test_truncated_pickle_is_named(tmp_path, mosi_pkl):
    path, _, _ = mosi_pkl
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="cut.pkl is not a readable pickle"):
        mb.load_pickle(cut)


def _break(data, what):
    if what == "dims":
        data["valid"]["vision"] = np.zeros((SIZES["valid"], 50, 21), np.float32)
    elif what == "split":
        del data["valid"]
    elif what == "key":
        del data["test"]["audio"]
    elif what == "steps":
        data["train"]["text"] = data["train"]["text"][:, :40]
    elif what == "labels":
        data["test"]["labels"] = np.zeros((SIZES["test"], 2), np.float32)
    elif what == "samples":
        data["train"]["audio"] = data["train"]["audio"][:-1]
    elif what == "dtype":
        data["train"]["vision"] = data["train"]["vision"].astype(np.int32)


@pytest.mark.parametrize(
    "what, named",
    [
        ("dims", "split 'valid': 'vision' has shape (5, 50, 21): feature size 21, expected 20"),
        ("split", "split 'valid' is missing"),
        ("key", "split 'test' has no 'audio'"),
        ("steps", "'text' has shape (9, 40, 300): 40 time steps, expected 50"),
        ("labels", "'labels' has shape (6, 2): 2 values per sample, expected one"),
        ("samples", "'audio' has shape (8, 50, 5): 8 samples, but text has 9"),
        ("dtype", "of dtype int32, expected floats"),
    ],
)
def test_structure_errors_are_named(tmp_path, what, named):
    data, _ = affect_data("mosi")
    _break(data, what)
    path = write_pickle(tmp_path / "bad.pkl", data)
    with pytest.raises(DataError) as err:
        mb.prepare("mosi", path, tmp_path / "out", progress=False)
    assert named in str(err.value) and str(path) in str(err.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_humor_dims_are_not_mosi_dims(tmp_path):
    data, _ = affect_data("mosi")
    path = write_pickle(tmp_path / "humor.pkl", data)
    with pytest.raises(DataError, match="feature size 20, expected 371"):
        mb.prepare("humor", path, tmp_path / "out", progress=False)


@pytest.mark.parametrize("protocol", [2, 4])
def test_preprocessing(tmp_path, protocol):
    data, padding = affect_data("mosi")
    path = write_pickle(tmp_path / "mosi_data.pkl", data, protocol)
    with pytest.warns(mb.RawDigestWarning):
        manifest = mb.prepare("mosi", path, tmp_path / "out", progress=False)
    for split, n in SIZES.items():
        loaded = mb.load_split(tmp_path / "out", split)
        keep = np.ones(n, bool)
        if split == DROPPED[0]:
            keep[DROPPED[1]] = False
        assert len(loaded) == keep.sum() == manifest["splits"][split]["count"]
        raw = {k: v[keep] for k, v in data[split].items()}
        # -inf (and only it) became 0; the other values are the raw ones, as float32
        audio = raw["audio"].copy()
        assert np.isneginf(audio).any()
        audio[np.isneginf(audio)] = 0
        np.testing.assert_array_equal(loaded.audio, audio)
        assert np.isfinite(loaded.audio).all()
        np.testing.assert_array_equal(loaded.vision, raw["vision"])
        np.testing.assert_array_equal(loaded.text, raw["text"])
        # labels: > 0, exact 0 -> 0; the raw score kept
        np.testing.assert_array_equal(loaded.label_raw, raw["labels"].reshape(-1))
        np.testing.assert_array_equal(loaded.label, (raw["labels"].reshape(-1) > 0).astype(int))
        assert loaded.label[:2].tolist() == [0, 0] and loaded.label_raw[:2].tolist() == [0, 0]
        # the mask is the left padding; an interior zero step stays unmasked
        expected_mask = np.arange(50)[None] >= padding[split][keep][:, None]
        np.testing.assert_array_equal(loaded.mask, expected_mask)
        assert loaded.mask[1].sum() == 50 - padding[split][1]
        assert loaded.mask[0].all()
        assert loaded.vision.dtype == loaded.text.dtype == np.float32
        assert loaded.mask.dtype == bool and loaded.label.dtype == np.int64
        assert loaded.label_raw.dtype == np.float32
        info = manifest["splits"][split]
        assert info["dropped_all_zero_text"] == (0 if keep.all() else 1)
        assert info["non_finite_replaced"]["audio"]["-inf"] == int(np.isneginf(raw["audio"]).sum())
        assert info["label_counts"] == {
            "0": int((loaded.label == 0).sum()),
            "1": int((loaded.label == 1).sum()),
        }
        assert info["masked_steps"] == int(padding[split][keep].sum())
    assert manifest["dropped_samples"] == 1
    total_inf = sum(int(np.isneginf(data[s]["audio"][:]).sum()) for s in SIZES)
    dropped_inf = int(np.isneginf(data["train"]["audio"][DROPPED[1]]).sum())
    assert manifest["non_finite_replaced"] == total_inf - dropped_inf
    assert manifest["raw"]["sha256"] == download.sha256_file(path)


def test_other_non_finite_values_are_counted(tmp_path):
    data, _ = affect_data("sarcasm")
    data["valid"]["audio"][0, 49, 3] = np.inf
    data["valid"]["audio"][1, 49, 4] = np.nan
    data["valid"]["vision"][2, 49, 5] = np.nan
    path = write_pickle(tmp_path / "sarcasm.pkl", data, 2)
    manifest = mb.prepare("sarcasm", path, tmp_path / "out", progress=False)
    counts = manifest["splits"]["valid"]["non_finite_replaced"]
    assert counts["audio"]["+inf"] == 1 and counts["audio"]["nan"] == 1
    assert counts["vision"] == {"-inf": 0, "+inf": 0, "nan": 1}
    loaded = mb.load_split(tmp_path / "out", "valid")
    assert np.isfinite(loaded.audio).all() and np.isfinite(loaded.vision).all()
    assert loaded.vision.shape[1:] == (50, 371) and loaded.audio.shape[1:] == (50, 81)
    assert loaded.label.tolist() == [0, 1, 0, 1, 0] and manifest["raw"]["matches"] is None


def test_manifest_digests_and_refusals(tmp_path, mosi_pkl):
    path, _, _ = mosi_pkl
    out = tmp_path / "out"
    with pytest.warns(mb.RawDigestWarning):
        manifest = mb.prepare("mosi", path, out, progress=False)
    with np.load(out / "test.npz") as npz:
        assert sorted(npz.files) == sorted(mb.ARRAYS)
        for key in mb.ARRAYS:
            assert manifest["splits"]["test"]["sha256"][key] == prepared.array_sha256(npz[key])
    assert json.loads((out / "manifest.json").read_text()) == manifest

    good = (out / "test.npz").read_bytes()
    (out / "test.npz").write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(DataError, match="test.npz is unreadable"):
        mb.load_split(out, "test")

    (out / "test.npz").write_bytes(good)
    altered = mb.load_split(out, "test")  # a readable npz with one value changed
    altered.vision[0, 49, 0] += 1
    with (out / "test.npz").open("wb") as f:
        np.savez_compressed(f, **{k: getattr(altered, k) for k in mb.ARRAYS})
    with pytest.raises(DataError, match=r"test.npz: array 'vision' does not match manifest"):
        mb.load_split(out, "test")
    with zipfile.ZipFile(out / "valid.npz", "w") as z:  # an array missing
        z.writestr("label.npy", b"")
    with pytest.raises(DataError, match="valid.npz is unreadable"):
        mb.load_split(out, "valid")
    (out / "manifest.json").write_text("{")
    with pytest.raises(DataError, match="manifest.json is unreadable"):
        mb.load_split(out, "train")
    (out / "manifest.json").unlink()
    with pytest.raises(DataError, match="manifest.json is missing"):
        mb.load_split(out, "train")


def test_mosi_digest_warning_names_both_digests(mosi_pkl, tmp_path):
    path, _, _ = mosi_pkl
    actual = download.sha256_file(path)
    with pytest.warns(mb.RawDigestWarning) as caught:
        manifest = mb.prepare("mosi", path, tmp_path / "out", progress=False)
    message = str(caught[0].message)
    assert actual in message and mb.DATASETS["mosi"].sha256 in message and str(path) in message
    assert manifest["raw"]["matches"] is False
    assert manifest["splits"]["train"]["count"] == SIZES["train"] - 1  # prepared anyway


def _writes(payload: bytes, fail: bool = False):
    """A stand-in for gdown: writes ``payload`` (half of it, then raises, when ``fail``)."""
    calls = []

    def transport(url, output, progress):
        calls.append((url, output))
        assert not output.exists() and output.name.startswith(".")
        if fail:
            output.write_bytes(payload[: len(payload) // 2])
            raise ConnectionError("Failed to resolve 'drive.google.com'\nmore detail")
        target = output.with_name(output.name[1 : -len(".download")])
        assert not target.exists()  # renamed only after the transfer and the check
        output.write_bytes(payload)

    transport.calls = calls
    return transport


def test_download_failure_leaves_nothing_and_names_url_and_target(tmp_path, mosi_pkl):
    path, _, _ = mosi_pkl
    target = tmp_path / "raw" / "humor" / "humor.pkl"
    transport = _writes(path.read_bytes(), fail=True)
    with pytest.raises(DataError) as err:
        mb.obtain_raw("humor", download_to=target, progress=False, transport=transport)
    message = str(err.value)
    assert mb.DATASETS["humor"].url in message and str(target) in message
    assert "ConnectionError" in message and "\n" not in message
    assert (
        transport.calls[0][0] == "https://drive.google.com/uc?id=1L5slPmYyhEVtwGyM1kgcFMjeBpXLZGT0"
    )
    assert os.listdir(target.parent) == []


def test_download_records_digest_and_later_runs_check_it(tmp_path):
    data, _ = affect_data("humor")
    payload = pickle.dumps(data, protocol=4)
    target = tmp_path / "raw" / "humor.pkl"
    transport = _writes(payload)
    got = mb.obtain_raw("humor", download_to=target, progress=False, transport=transport)
    assert got == target and target.read_bytes() == payload
    record = json.loads(download.record_path(target).read_text())
    assert record["sha256"] == download.sha256_file(target) and record["size"] == len(payload)
    assert sorted(os.listdir(target.parent)) == ["humor.pkl", "humor.pkl.json"]
    # present: not downloaded again
    assert mb.obtain_raw("humor", download_to=target, transport=_writes(b"", fail=True)) == target
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manifest = mb.prepare("humor", target, tmp_path / "out", progress=False)
    assert manifest["raw"]["matches"] is True
    # the file changed since it was downloaded: prepared, with a warning naming both digests
    data["test"]["vision"][0, 49, 0] += 1
    write_pickle(target, data)
    with pytest.warns(mb.RawDigestWarning, match=record["sha256"]):
        assert (
            mb.prepare("humor", target, tmp_path / "out", progress=False)["raw"]["matches"] is False
        )
    # a new download must match the recorded digest
    target.unlink()
    with pytest.raises(DataError, match="recorded in .*humor.pkl.json"):
        mb.obtain_raw("humor", download_to=target, transport=_writes(pickle.dumps(data)))
    assert not target.exists()


def test_download_of_mosi_is_verified(tmp_path, monkeypatch, mosi_pkl):
    path, _, _ = mosi_pkl
    payload = path.read_bytes()
    target = tmp_path / "raw" / "mosi_data.pkl"
    with pytest.raises(DataError) as err:  # the fixture is not the authors' file
        mb.obtain_raw("mosi", download_to=target, progress=False, transport=_writes(payload))
    assert "bytes, expected 154,041,300" in str(err.value) and str(target) in str(err.value)
    assert os.listdir(target.parent) == []

    same_size = mb.AffectSpec(**{**vars(mb.DATASETS["mosi"]), "size": len(payload)})
    monkeypatch.setitem(mb.DATASETS, "mosi", same_size)
    with pytest.raises(DataError) as err:
        mb.obtain_raw("mosi", download_to=target, progress=False, transport=_writes(payload))
    assert download.sha256_file(path) in str(err.value) and same_size.sha256 in str(err.value)
    assert os.listdir(target.parent) == []

    matching = mb.AffectSpec(**{**vars(same_size), "sha256": download.sha256_file(path)})
    monkeypatch.setitem(mb.DATASETS, "mosi", matching)
    got = mb.obtain_raw(
        "mosi", download_to=target.parent, progress=False, transport=_writes(payload)
    )
    assert got == target and target.read_bytes() == payload


def test_download_refuses_a_web_page(tmp_path):
    target = tmp_path / "sarcasm.pkl"
    page = b"<!DOCTYPE html><html>Google Drive - Quota exceeded</html>"
    with pytest.raises(DataError, match="is a web page"):
        mb.obtain_raw("sarcasm", download_to=target, progress=False, transport=_writes(page))
    assert os.listdir(tmp_path) == []


def test_gdown_transport_resumes(monkeypatch, tmp_path):
    calls = []

    class FakeGdown:
        @staticmethod
        def download(**kwargs):
            calls.append(kwargs)
            return kwargs["output"]

    monkeypatch.setitem(sys.modules, "gdown", FakeGdown)
    download.gdown_transport("https://drive.google.com/uc?id=X", tmp_path / "f", False)
    assert calls == [
        {"url": "https://drive.google.com/uc?id=X", "output": str(tmp_path / "f"), "quiet": True,
         "resume": True}
    ]  # fmt: skip


def test_default_raw_location_is_outside_results(monkeypatch, tmp_path):
    monkeypatch.delenv(download.RAW_DIR_ENV, raising=False)
    path = mb.default_raw_path("mosi")
    assert path.parts[-4:] == ("data", "raw", "mosi", "mosi_data.pkl")
    assert "results" not in path.parts
    monkeypatch.setenv(download.RAW_DIR_ENV, str(tmp_path))
    assert mb.default_raw_path("humor") == tmp_path / "humor" / "humor.pkl"


def test_cli_prepare(tmp_path, mosi_pkl, monkeypatch, capsys):
    path, _, _ = mosi_pkl
    out = tmp_path / "prepared"
    assert main(["prepare", "mosi", "--source", str(path), "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "train 8, valid 5, test 6" in captured.out
    assert captured.err.count("\n") == 1 and "warning" in captured.err  # the digest differs
    assert mb.load_split(out, "test").text.shape == (6, 50, 300)

    hostile = write_pickle(tmp_path / "sarcasm.pkl", {"train": Payload(tmp_path / "m")})
    args = ["prepare", "sarcasm", "--source", str(hostile), "--out", str(out), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused" in err and not (tmp_path / "m").exists()

    # no --source, nothing at the location: downloaded; here the transfer fails
    def offline(url, output, progress):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(download, "gdown_transport", offline)
    raw_dir = tmp_path / "raw"
    args = ["prepare", "humor", "--download-to", f"{raw_dir}/", "--out", str(out), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and mb.DATASETS["humor"].url in err
    assert str(raw_dir / "humor.pkl") in err

    monkeypatch.setenv(download.RAW_DIR_ENV, str(raw_dir))  # the default location
    (raw_dir / "mosi").mkdir()
    shutil.copy(path, raw_dir / "mosi" / "mosi_data.pkl")
    assert main(["prepare", "mosi", "--out", str(out), "--quiet"]) == 0
    assert main(["prepare", "trifeatures", "--source", str(path), "--out", str(out)]) == 2
