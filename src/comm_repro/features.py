"""Probe-time outputs of frozen encoders, computed once per prepared dataset and encoder.

A frozen pretrained encoder (:mod:`comm_repro.models.frozen`) is a fixed function, and at probe
time its input is fixed too (the plain view: no augmentation, each movie's first plot), so its
output on a split is the same for every method and seed that probes the dataset. The workflow
computes it once (``comm-repro features``) into ``{split}/tokens.npy`` (N, T, C) float16 and,
where the encoder pads, ``{split}/mask.npy`` (N, T) bool, with ``manifest.json`` last; every
probe of a run with that modality and encoder reads it (``comm-repro probe --features``)
instead of running the encoder. What training sees is still computed per step: augmented
posters, and plots whose tokens are masked anew in each view.

The folder is named by the modality and a digest of what the features depend on
(:func:`comm_repro.config.feature_dir`), so a changed encoder gets its own folder.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from comm_repro.atomic import write_json
from comm_repro.config import feature_dir
from comm_repro.data import prepared
from comm_repro.data.registry import ProbeData, family
from comm_repro.errors import DataError, describe
from comm_repro.models import build_encoder
from comm_repro.views import Views

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")


def compute(
    settings: dict[str, Any],
    data_dir: Path,
    out_dir: Path,
    device: torch.device,
    precision: str,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """The modality's encoder outputs on every split the dataset's probes read (see the module
    doc); returns the manifest."""
    from comm_repro.train import autocast_context

    t0 = time.perf_counter()
    dataset = settings["dataset"]
    modality = dataset["modalities"][0]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    data = family(dataset["family"]).probe_data(data_dir, dataset, dataset.get("probe") or {})
    banks = {"train": data.train, "valid": data.valid, "test": data.test}
    shape = data.train.sample_shapes()[0]
    encoder = build_encoder(modality["encoder"], shape).to(device).eval()
    plain = Views([modality], [shape]).plain
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "settings": settings,
        "data_manifest_sha256": _data_manifest_digest(data_dir),
        "precision": precision,
        "splits": {},
    }
    for split, bank in banks.items():
        if bank is None:
            continue
        records, writers = {}, {}
        x_all, m_all = bank.banks[0], bank.masks[0]
        starts = range(0, len(x_all), batch_size)
        for s in tqdm(starts, desc=f"{modality['name']} {split}", disable=not progress):
            x = x_all[s : s + batch_size].to(device)
            mask = None if m_all is None else m_all[s : s + batch_size].to(device)
            with torch.no_grad(), autocast_context(device, precision):
                out = encoder(plain(0, x), mask)
            if not writers:
                n, (t, c) = len(x_all), out.tokens.shape[1:]
                writers["tokens"] = prepared.NpyWriter(
                    prepared.npy_path(out_dir, split, "tokens"), (n, t, c), np.float16
                )
                if out.mask is not None:
                    writers["mask"] = prepared.NpyWriter(
                        prepared.npy_path(out_dir, split, "mask"), (n, t), np.bool_
                    )
            try:
                writers["tokens"].write(out.tokens.float().cpu().numpy())
                if "mask" in writers:
                    writers["mask"].write(out.mask.cpu().numpy())
            except BaseException:
                for w in writers.values():
                    w.abort()
                raise
        records = {name: w.close() for name, w in writers.items()}
        manifest["splits"][split] = {"count": len(x_all), **prepared.records_to_manifest(records)}
    manifest["wall_s"] = round(time.perf_counter() - t0, 2)
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def _data_manifest_digest(data_dir: Path) -> str:
    return hashlib.sha256((Path(data_dir) / "manifest.json").read_bytes()).hexdigest()


def use_features(data: ProbeData, run_cfg: dict[str, Any], folder: Path, data_dir: Path) -> int:
    """Replace, in ``data``, the bank of the modality ``folder`` holds features of by those
    features (checked against the run's settings and the prepared data); returns the
    modality's index."""
    manifest_path = Path(folder) / "manifest.json"
    hint = f"compute them again (`comm-repro features ... --out {folder}`)"
    try:
        manifest = json.loads(manifest_path.read_text())
        settings, splits = manifest["settings"], manifest["splits"]
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{manifest_path} is unreadable ({describe(err)}); {hint}") from None
    name = settings["modality"]
    names = [m["name"] for m in run_cfg["dataset"]["modalities"]]
    if name not in names or feature_dir(settings, name) != feature_dir(run_cfg, name):
        raise DataError(
            f"{folder} holds features of other settings than this run's modality {name!r}; "
            "give the folder the workflow made for this run's settings, or none"
        )
    if manifest.get("data_manifest_sha256") != _data_manifest_digest(data_dir):
        raise DataError(f"{folder} was computed from another copy of {data_dir}; {hint}")
    m = names.index(name)
    parts = {"train": data.train, "valid": data.valid, "test": data.test}
    for split, bank in parts.items():
        if bank is None:
            continue
        if split not in splits or splits[split]["count"] != len(bank.banks[m]):
            raise DataError(f"{folder} has no {split} split of {len(bank.banks[m])} rows; {hint}")
        # shape and dtype checked; not hashed: a probe job reads gigabytes of them on MM-IMDb
        arrays = prepared.load_npy_arrays(
            folder, split, list(splits[split]["shapes"]), verify=False, hint=hint
        )
        bank.banks[m] = torch.from_numpy(arrays["tokens"])
        bank.masks[m] = torch.from_numpy(arrays["mask"]) if "mask" in arrays else None
    data.encoded = data.encoded | {m}
    return m


def with_given_encoders(run_cfg: dict[str, Any], data: ProbeData) -> dict[str, Any]:
    """A copy of ``run_cfg`` in which each modality whose bank holds stored features
    (``data.encoded``) has the placeholder encoder ``given`` of the features' width: the probe
    builds the method without loading (or running) those encoders. Only for building the
    method; the probe's record keeps the run's settings."""
    out = copy.deepcopy(run_cfg)
    for m in data.encoded:
        width = int(data.train.banks[m].shape[-1])
        out["dataset"]["modalities"][m]["encoder"] = {"name": "given", "out_channels": width}
    return out
