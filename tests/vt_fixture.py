"""Fixture files in the Vision&Touch raw format (datasets.md §3): every key of the real files, at
their shapes, in a flat folder of ``<prefix>_<k>_1000.h5`` files (k = 0..19, the 50-step chunk
of a 1000-step trajectory).

Values a test can derive without h5py: in file i (in writing order) at step t,
``image[t, 0, 0] = (i % 256, t, 255 - t)``, ``proprio[t, j] = i + t / 100 + j / 1000``,
``action[t] = (i, t, 2 t, -t)`` and ``contact[t]`` is all ones where t % 3 == 0, else zeros;
the rest of the image and the forces are seeded noise (forces large enough that tanh matters).
The keys the preparation never reads (depth, optical flow) are zeros, gzip-compressed, to keep
the files small (~2.5 MB each). Used by the tests and by ``benchmarks/bench_vt_prepare.py``.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

TRAJECTORY = 20  # chunks per trajectory


def fixture_name(i: int, prefix: str = "triangle") -> str:
    return f"{prefix}{i // TRAJECTORY:03d}_{i % TRAJECTORY}_1000.h5"


def write_file(
    path: str | Path,
    i: int,
    rng: np.random.Generator,
    steps: int = 50,
    image_size: int = 128,
    channel_first: bool = False,
    skip: tuple[str, ...] = (),
) -> Path:
    """One raw file: file index ``i`` in the values (module doc); keys in ``skip`` left out."""
    t = np.arange(steps, dtype=np.float64)
    image = rng.integers(0, 256, (steps, image_size, image_size, 3), dtype=np.uint8)
    image[:, 0, 0] = np.stack([np.full(steps, i % 256), t, 255 - t], axis=1).astype(np.uint8)
    contact = np.zeros((steps, 50))
    contact[::3] = 1.0
    proprio = i + t[:, None] / 100 + np.arange(8)[None, :] / 1000
    small = lambda d: rng.normal(size=(steps, d))  # noqa: E731
    arrays = {
        "action": np.stack([np.full(steps, float(i)), t, 2 * t, -t], axis=1),
        "contact": contact,
        "ee_forces_continuous": rng.normal(0.0, 3.0, (steps, 50, 6)),
        "ee_ori": small(4),
        "ee_pos": small(3),
        "ee_vel": small(3),
        "ee_vel_ori": small(3),
        "ee_yaw": small(4),
        "ee_yaw_delta": small(4),
        "image": image.transpose(0, 3, 2, 1) if channel_first else image,
        "joint_pos": small(7),
        "joint_vel": small(7),
        "proprio": proprio,
    }
    path = Path(path)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            if key not in skip:
                f.create_dataset(key, data=value)
        for key, channels in (("depth_data", 1), ("optical_flow", 2)):
            if key not in skip:
                f.create_dataset(
                    key,
                    shape=(steps, image_size, image_size, channels),
                    dtype=np.float32,
                    compression="gzip",
                    compression_opts=1,
                    fillvalue=0.0,
                )
    return path


def write_vision_touch_fixture(
    folder: str | Path,
    n_files: int = 6,
    steps: int = 50,
    seed: int = 0,
    image_size: int = 128,
    prefix: str = "triangle",
    channel_first: bool = False,
) -> list[Path]:
    """``n_files`` raw files in ``folder`` (created), file i named :func:`fixture_name`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    return [
        write_file(folder / fixture_name(i, prefix), i, rng, steps, image_size, channel_first)
        for i in range(n_files)
    ]
