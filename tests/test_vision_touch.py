"""Vision&Touch (triangle_real_data): the authors' split and samples, the memory-mapped prepared
set and its checks, the zip (given or downloaded, resumably) and the family; on fixture files in
the real .h5 format (tests/vt_fixture.py)."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from http_fixture import Server
from vt_fixture import fixture_name, write_file, write_vision_touch_fixture

from comm_repro import download
from comm_repro.cli import main
from comm_repro.config import ConfigError, check
from comm_repro.data import prepared
from comm_repro.data import vision_touch as vt
from comm_repro.data.registry import family
from comm_repro.errors import DataError

N_FILES = 12  # test int(0.2 * 12) = 2 files, train 10
DATASET = {
    "name": "vision_touch",
    "family": "vision_touch",
    "modalities": [
        {"name": "image", "kind": "image"},
        {"name": "force", "kind": "sequence"},
        {"name": "proprio", "kind": "tabular"},
    ],
    "tasks": [
        {"name": "contact", "kind": "binary", "labels": "contact_next"},
        {"name": "yaw", "kind": "regression", "metric": "mse", "labels": "ee_yaw_next"},
    ],
}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vt") / "triangle_real_data"
    write_vision_touch_fixture(folder, n_files=N_FILES)
    return folder


@pytest.fixture(scope="module")
def out(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("vt_out") / "prepared"
    vt.prepare(raw, out, progress=False)
    return out


def authors_split(folder: Path) -> dict[str, list[str]]:
    """The authors' split, step by step as they write it."""
    files = sorted(os.listdir(folder))
    perm = np.arange(len(files))
    rng = np.random.default_rng(42)
    rng.shuffle(perm)
    n_test = int(0.2 * len(files))
    return {
        "train": [files[i] for i in perm[: len(files) - n_test]],
        "test": [files[i] for i in perm[len(files) - n_test :]],
    }


def expected_samples(path: Path, r: int) -> dict[str, list]:
    """One file's 49 samples read straight from h5py, t = 48 replaced by ``r``."""
    rows = {k: [] for k in vt.ARRAYS}
    with h5py.File(path, "r") as f:
        for t in [*range(48), r]:
            rows["image"].append(f["image"][t])
            rows["force"].append(np.tanh(f["ee_forces_continuous"][t][-32:]))
            rows["proprio"].append(f["proprio"][t][:8])
            rows["ee_yaw_next"].append(f["proprio"][t + 1][:4])
            rows["contact_next"].append(int(f["contact"][t + 1].sum() > 0))
            rows["action_next"].append(f["action"][t + 1])
    return rows


def test_split_follows_the_authors_permutation(raw, out):
    manifest = vt.read_manifest(out)
    theirs = authors_split(raw)
    assert len(theirs["test"]) == 2 and len(theirs["train"]) == 10
    for split in vt.SPLITS:
        assert manifest["splits"][split]["files"] == theirs[split]
        assert manifest["splits"][split]["count"] == 49 * len(theirs[split])
    assert set(theirs["train"]).isdisjoint(theirs["test"])
    # the samples come file by file in that order: the fixture writes file i's index at
    # image[t, 0, 0, 0] and t at image[t, 0, 0, 1]
    index = {fixture_name(i): i for i in range(N_FILES)}
    for split in vt.SPLITS:
        image = vt.load_split(out, split)["image"]
        files = [index[name] for name in theirs[split]]
        assert image[:, 0, 0, 0].tolist() == [i for i in files for _ in range(49)]
        t = image[:, 0, 0, 1].reshape(-1, 49)
        assert (t[:, :48] == np.arange(48)).all()


def test_samples_match_the_h5_files(raw, out):
    manifest = vt.read_manifest(out)
    replaced = manifest["replacement"]["values"]
    assert sorted(replaced) == sorted(os.listdir(raw)) and manifest["replacement"]["seed"] == 0
    assert all(0 <= r < 48 for r in replaced.values())
    for split in vt.SPLITS:
        ours = vt.load_split(out, split)
        for key, (shape, dtype) in vt.SHAPES.items():
            assert ours[key].shape[1:] == shape and ours[key].dtype == dtype
        for k, name in enumerate(manifest["splits"][split]["files"]):
            theirs = expected_samples(raw / name, replaced[name])
            rows = slice(49 * k, 49 * (k + 1))
            assert (ours["image"][rows] == np.stack(theirs["image"])).all()
            assert ours["image"][rows][48, 0, 0, 1] == replaced[name]  # t recorded in pixel
            for key in ("force", "proprio", "ee_yaw_next", "action_next"):
                np.testing.assert_allclose(ours[key][rows], np.stack(theirs[key]), rtol=1e-6)
            assert ours["contact_next"][rows].tolist() == theirs["contact_next"]
    # the fixture's derivable values: contact where (t + 1) % 3 == 0, action[t + 1]
    train = vt.load_split(out, "train")
    t = np.arange(48)
    assert train["contact_next"][:48].tolist() == ((t + 1) % 3 == 0).astype(int).tolist()
    assert train["action_next"][:48, 1].tolist() == (t + 1).tolist()
    assert 0.99 < np.abs(train["force"]).max() <= 1  # tanh of readings with std 3


def test_preparation_is_deterministic_and_the_seed_is_recorded(raw, out, tmp_path):
    again = vt.prepare(raw, tmp_path / "again", progress=False)
    first = vt.read_manifest(out)
    assert again["replacement"] == first["replacement"]
    assert again["splits"] == first["splits"]
    other = vt.prepare(raw, tmp_path / "other", seed=1, progress=False)
    assert other["replacement"]["seed"] == 1
    assert other["replacement"]["values"] != first["replacement"]["values"]
    assert other["splits"]["train"]["files"] == first["splits"]["train"]["files"]
    assert (
        other["splits"]["train"]["sha256"]["image"] != first["splits"]["train"]["sha256"]["image"]
    )


def test_channel_first_images_are_transposed_as_the_authors_do(tmp_path, out):
    folder = tmp_path / "raw"
    write_vision_touch_fixture(folder, n_files=N_FILES, channel_first=True)
    with h5py.File(folder / fixture_name(0), "r") as f:
        assert f["image"].shape == (50, 3, 128, 128)
    manifest = vt.prepare(folder, tmp_path / "out", progress=False)
    # the fixture stored each image transposed (2, 1, 0); the authors' transpose undoes it
    assert manifest["splits"] == vt.read_manifest(out)["splits"]


def test_load_is_memory_mapped_and_shared_with_torch(out, monkeypatch):
    arrays = vt.load_split(out, "train")
    for array in arrays.values():
        assert isinstance(array, np.memmap) and array.mode == "c"
    image = arrays["image"]
    assert torch.from_numpy(image).data_ptr() == image.ctypes.data  # no copy
    loaded, load = {}, vt.load_split
    monkeypatch.setattr(vt, "load_split", lambda *a: loaded.setdefault("x", load(*a)))
    bank = family("vision_touch").pretrain_data(out, DATASET)
    for tensor, name in zip(bank.banks, ("image", "force", "proprio")):
        assert tensor.data_ptr() == loaded["x"][name].ctypes.data  # the bank maps the file
    assert bank.labels["ee_yaw_next"].data_ptr() == loaded["x"]["ee_yaw_next"].ctypes.data
    record = vt.read_manifest(out)["splits"]["train"]
    assert prepared.array_sha256(np.asarray(image)) == record["sha256"]["image"]
    assert prepared.chunked_sha256(image, chunk_bytes=1000) == record["sha256"]["image"]


def test_altered_truncated_or_missing_arrays_are_named(raw, tmp_path):
    out = tmp_path / "out"
    vt.prepare(raw, out, progress=False)
    path = out / "train" / "image.npy"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        vt.load_split(out, "train")
    message = str(err.value)
    assert str(path) in message and "sha256" in message
    assert f"comm-repro prepare vision_touch --out {out}" in message and "\n" not in message
    assert vt.load_split(out, "train", verify=False)["image"].shape[0] == 490

    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(DataError, match=r"image\.npy is unreadable"):
        vt.load_split(out, "train")
    path.unlink()
    with pytest.raises(DataError, match=r"image\.npy is missing.*comm-repro prepare"):
        vt.load_split(out, "train")
    (out / "manifest.json").unlink()
    with pytest.raises(DataError, match="manifest.json is missing"):
        vt.load_split(out, "test")


def _only_temporary_files_gone(out: Path) -> bool:
    return not (out / "manifest.json").exists() and not [
        p for p in out.rglob("*") if p.name.endswith(".tmp")
    ]


@pytest.mark.parametrize(
    "damage, named",
    [
        (
            lambda p: write_file(p, 0, np.random.default_rng(0), skip=("contact",)),
            "'contact' missing",
        ),
        (lambda p: write_file(p, 0, np.random.default_rng(0), image_size=64), "'image' has shape"),
        (lambda p: write_file(p, 0, np.random.default_rng(0), steps=40), "has shape (40,"),
        (lambda p: p.write_bytes(b"not an HDF5 file"), "is not a readable HDF5 file"),
    ],
)
def test_bad_raw_files_are_named(raw, tmp_path, damage, named):
    folder = tmp_path / "raw"
    folder.mkdir()
    for name in os.listdir(raw):
        os.symlink(raw / name, folder / name)
    bad = folder / sorted(os.listdir(raw))[3]
    bad.unlink()
    damage(bad)
    with pytest.raises(DataError) as err:
        vt.prepare(folder, tmp_path / "out", progress=False)
    assert str(bad) in str(err.value) and named in str(err.value)
    assert _only_temporary_files_gone(tmp_path / "out")


def test_too_few_files(tmp_path):
    write_vision_touch_fixture(tmp_path / "raw", n_files=4)
    with pytest.raises(DataError, match="4 .h5 files; the authors' split needs at least 5"):
        vt.prepare(tmp_path / "raw", tmp_path / "out", progress=False)


def _zip(folder: Path, path: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(os.listdir(folder)):
            zf.write(folder / name, f"triangle_real_data/{name}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def test_the_zip_is_unpacked_atomically_and_checked(raw, out, tmp_path):
    (tmp_path / "given").mkdir()
    extra = {"__MACOSX/triangle_real_data/._x.h5": b"resource fork", "README.txt": b"hi"}
    zip_path = _zip(raw, tmp_path / "given" / "triangle_real_data.zip", extra)
    vt.check_zip(zip_path)
    stale = tmp_path / "given" / ".triangle_real_data.killed.unpack"  # a killed run's
    stale.mkdir()
    (stale / "half.h5").write_bytes(b"x")
    folder = vt.obtain_raw(source=zip_path, progress=False)
    assert folder == tmp_path / "given" / "triangle_real_data" and not stale.exists()
    assert sorted(os.listdir(folder)) == sorted(os.listdir(raw))
    manifest = vt.prepare(folder, tmp_path / "out", progress=False)
    assert manifest["splits"] == vt.read_manifest(out)["splits"]
    assert vt.obtain_raw(source=zip_path, progress=False) == folder  # reused
    assert vt.obtain_raw(source=folder.parent, progress=False) == folder  # its parent: found

    # a corrupt member: refused, and neither the final nor a temporary folder is left
    data = bytearray(zip_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    broken = tmp_path / "broken" / "triangle_real_data.zip"
    broken.parent.mkdir()
    broken.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt|CRC|Bad"):
        vt.check_zip(broken)
    with pytest.raises(DataError) as err:
        vt.obtain_raw(source=broken, progress=False)
    assert str(broken) in str(err.value) and "unpack it yourself" in str(err.value)
    assert os.listdir(broken.parent) == ["triangle_real_data.zip"]

    # unsafe member names are refused before anything is written
    for name in ("../evil.h5", "/abs/evil.h5"):
        hostile = tmp_path / "hostile" / "triangle_real_data.zip"
        hostile.parent.mkdir(exist_ok=True)
        with zipfile.ZipFile(hostile, "w") as zf:
            zf.writestr("triangle_real_data/a.h5", b"x")
            zf.writestr(name, b"x")
        with pytest.raises(DataError, match="unsafe path"):
            vt.obtain_raw(source=hostile, progress=False)
        assert os.listdir(hostile.parent) == ["triangle_real_data.zip"]
    assert not (tmp_path / "evil.h5").exists()

    not_zip = tmp_path / "file.bin"
    not_zip.write_bytes(b"plain")
    with pytest.raises(DataError, match="neither a folder of .h5 files nor a zip"):
        vt.obtain_raw(source=not_zip)
    with pytest.raises(DataError, match="has no .h5 files"):
        vt.obtain_raw(source=tmp_path / "hostile")


# ---------------------------------------------------------------------------------------------
# Resumable download against a local HTTP server


PAYLOAD = np.random.default_rng(1).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


def test_an_interrupted_transfer_resumes_where_it_stopped(tmp_path):
    output = tmp_path / "file.zip"
    part = download.part_path(output)
    with Server(PAYLOAD) as server:
        server.cut = 100_000
        with pytest.raises(ConnectionError, match="ended after 100,000 of 300,000 bytes"):
            download.http_range_transport(server.url, output, False, timeout=10)
        assert part.read_bytes() == PAYLOAD[:100_000] and not output.exists()
        download.http_range_transport(server.url, output, False, timeout=10)
        assert server.requests == [None, "bytes=100000-"]
        assert output.read_bytes() == PAYLOAD and not part.exists()

        # a part that a killed run left complete: 416, kept and renamed
        output.rename(part)
        download.http_range_transport(server.url, output, False, timeout=10)
        assert server.requests[-1] == "bytes=300000-" and output.read_bytes() == PAYLOAD
        # a part longer than the file: 416 too, started again
        part.write_bytes(PAYLOAD + b"more")
        output.unlink()
        download.http_range_transport(server.url, output, False, timeout=10)
        assert server.requests[-2:] == ["bytes=300004-", None]
        assert output.read_bytes() == PAYLOAD and not part.exists()


def test_a_server_that_ignores_ranges_restarts_the_transfer(tmp_path):
    output = tmp_path / "file.zip"
    part = download.part_path(output)
    part.write_bytes(b"stale bytes from another file")
    with Server(PAYLOAD, ranges=False) as server:
        download.http_range_transport(server.url, output, False, timeout=10)
        assert server.requests == ["bytes=29-"]
    assert output.read_bytes() == PAYLOAD and not part.exists()


def test_the_zip_is_downloaded_resumably_verified_and_unpacked(raw, out, tmp_path):
    payload = _zip(raw, tmp_path / "served.zip").read_bytes()
    target = tmp_path / "raw" / "vision_touch" / "triangle_real_data.zip"
    with Server(payload) as server:
        calls = []

        def transport(url, output, progress):
            calls.append(url)
            return download.http_range_transport(server.url, output, progress, timeout=10)

        server.cut = len(payload) // 3
        with pytest.raises(DataError) as err:
            vt.obtain_raw(download_to=f"{target.parent}/", progress=False, transport=transport)
        assert vt.URL in str(err.value) and "a rerun resumes" in str(err.value)
        assert calls == [vt.URL] and not target.exists()
        assert download.part_path(target.with_name(f".{target.name}.download")).exists()

        folder = vt.obtain_raw(download_to=f"{target.parent}/", progress=False, transport=transport)
        assert server.requests[-1] == f"bytes={len(payload) // 3}-"
    assert folder == target.parent / "triangle_real_data" and target.read_bytes() == payload
    record = json.loads(download.record_path(target).read_text())
    assert record["sha256"] == download.sha256_file(target) and record["url"] == vt.URL
    assert sorted(os.listdir(target.parent)) == [
        "triangle_real_data",
        "triangle_real_data.zip",
        "triangle_real_data.zip.json",
    ]
    manifest = vt.prepare(folder, tmp_path / "out", progress=False)
    assert manifest["splits"] == vt.read_manifest(out)["splits"]


# ---------------------------------------------------------------------------------------------
# The family, the schema and the command line


def test_the_family_serves_the_modalities_and_validates_on_test(out):
    vt_family = family("vision_touch")
    bank = vt_family.pretrain_data(out, DATASET)
    assert len(bank) == 490 and bank.sample_shapes() == [(128, 128, 3), (32, 6), (8,)]
    assert set(bank.labels) == set(vt.LABELS) and bank.masks == [None, None, None]
    assert bank.banks[0].dtype == torch.uint8 and bank.labels["contact_next"].dtype == torch.int64
    probe = vt_family.probe_data(out, DATASET, {})
    assert len(probe.train) == 490 and len(probe.test) == 98
    assert probe.valid is probe.test and probe.valid_labels is probe.test_labels
    assert set(probe.test_labels) == {"contact", "yaw"}
    assert probe.train_labels["yaw"].shape == (490, 4)
    with pytest.raises(ConfigError, match="max_train_samples"):
        vt_family.probe_data(out, DATASET, {"max_train_samples": 10})
    reordered = {**DATASET, "modalities": DATASET["modalities"][::-1][:2]}
    assert vt_family.pretrain_data(out, reordered).sample_shapes() == [(8,), (32, 6)]
    wrong = {**DATASET, "modalities": [{"name": "force", "kind": "tabular"}]}
    with pytest.raises(ConfigError, match="'force' is a sequence modality"):
        vt_family.pretrain_data(out, wrong)
    unknown = {**DATASET, "tasks": [{"name": "x", "kind": "binary", "labels": "label"}]}
    with pytest.raises(ConfigError, match="'label' is not in this dataset"):
        vt_family.probe_data(out, unknown, {})
    with pytest.raises(ConfigError, match="no preparation options"):
        vt_family.prepare(out, {"seed": 1}, None, None, False)
    with pytest.raises(ConfigError, match="not both"):
        vt_family.prepare(out, {}, Path("a"), "b", False)


def test_the_schema_knows_the_family():
    dataset = {k: v for k, v in DATASET.items() if k != "name"}
    check(dataset, "dataset")
    for change, message in (
        ({"modalities": [{"name": "force", "kind": "tabular"}] * 2}, "modalities"),
        ({"tasks": [{"name": "t", "kind": "binary", "labels": "label"}]}, "labels"),
        ({"prepare": {"seed": 1}}, "prepare.seed"),
    ):
        with pytest.raises(ConfigError, match=message):
            check({**dataset, **change}, "dataset")


def test_the_command_line_prepares_the_folder(raw, tmp_path, capsys, monkeypatch):
    out = tmp_path / "prepared"
    args = ["prepare", "vision_touch", "--source", str(raw), "--out", str(out), "--quiet"]
    assert main(args) == 0
    captured = capsys.readouterr().out
    assert "train 490, test 98" in captured and "12 files" in captured
    assert vt.load_split(out, "test")["force"].shape == (98, 32, 6)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["prepare", "vision_touch", "--source", str(empty), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no .h5 files" in err
    assert main([*args, "--option", "seed=3"]) == 2
    assert "no preparation options" in capsys.readouterr().err

    def offline(url, output, progress):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(download, "http_range_transport", offline)
    monkeypatch.setenv(download.RAW_DIR_ENV, str(tmp_path / "raw"))
    assert main(["prepare", "vision_touch", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and vt.URL in err and "Network is unreachable" in err
    assert str(tmp_path / "raw" / "vision_touch" / "triangle_real_data.zip") in err
