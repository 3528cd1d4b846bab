"""Time the Vision&Touch preparation and measure its peak memory on fixture files.

Writes N raw files in the real format and shapes (tests/vt_fixture.py: 50 steps, 128 x 128
images; the keys never read are compressed zeros) into a temporary folder, runs
``vision_touch.prepare`` in a subprocess and prints its wall time, its peak resident memory
(the child's own high-water mark, VmHWM, where Linux has it: ru_maxrss, of RUSAGE_CHILDREN as
well, also counts the parent's memory before the child's exec, here torch's), the prepared size,
and the time
of one verified load (the chunked sha256 of every array). Run at two sizes (default 100 and 300
files) to show whether peak memory grows with the number of files; the time is extrapolated
linearly to the real set's ~3,000 files. The raw files were just written, so they are read from
the page cache: reading the real set from disk adds its transfer time.

    python benchmarks/bench_vt_prepare.py [--files 100 300]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import machine_line

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from vt_fixture import write_vision_touch_fixture  # noqa: E402

REAL_FILES = 3000
CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
import h5py  # noqa: F401  (imported on use by prepare; here in every mode, for the baseline)
from comm_repro.data import vision_touch as vt
mode, raw, out = sys.argv[1:4]
if mode == "prepare":
    vt.prepare(raw, out, progress=False)
elif mode == "load":
    for split in vt.SPLITS:
        vt.load_split(out, split, verify=True)
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:  # this process's own peak; ru_maxrss also counts the parent's before exec (Linux)
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    rss = int(status.split()[0])
except (OSError, IndexError, ValueError):
    pass
print(json.dumps({"wall_s": wall, "maxrss_kib": rss}))
"""


def child(mode: str, raw: Path, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(raw), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--files", type=int, nargs="+", default=[100, 300], help="raw files per measurement"
    )
    args = parser.parse_args()
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        base = child("import", Path(tmp), Path(tmp))
        print(
            f"baseline (python + numpy + h5py + comm_repro imported, nothing read): peak RSS "
            f"{base['maxrss_kib'] / 1024:.0f} MiB"
        )
    results = []
    for n in sorted(args.files):
        with tempfile.TemporaryDirectory() as tmp:
            raw, out = Path(tmp) / "raw", Path(tmp) / "out"
            t0 = time.perf_counter()
            write_vision_touch_fixture(raw, n_files=n)
            written = time.perf_counter() - t0
            ours = child("prepare", raw, out)
            children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            loaded = child("load", raw, out)
            size, raw_size = size_of(out), size_of(raw)
            results.append((n, ours, size))
            print(
                f"{n} files ({n * 49} samples, raw {raw_size / 2**20:.0f} MiB written in "
                f"{written:.1f} s): prepare {ours['wall_s']:.1f} s "
                f"({ours['wall_s'] / n * 1000:.1f} ms/file), peak RSS "
                f"{ours['maxrss_kib'] / 1024:.0f} MiB (RUSAGE_CHILDREN so far "
                f"{children / 1024:.0f} MiB), output {size / 2**20:.0f} MiB; verified load of "
                f"both splits {loaded['wall_s']:.1f} s, peak RSS "
                f"{loaded['maxrss_kib'] / 1024:.0f} MiB"
            )
    n, ours, size = results[-1]
    scale = REAL_FILES / n
    print(
        f"extrapolated to {REAL_FILES} files ({REAL_FILES * 49:,} samples): prepare "
        f"~{ours['wall_s'] * scale / 60:.1f} min from the page cache, output "
        f"~{size * scale / 2**30:.1f} GiB"
    )
    if len(results) > 1:
        (n0, first, _), (n1, last, _) = results[0], results[-1]
        growth = (last["maxrss_kib"] - first["maxrss_kib"]) / 1024
        print(
            f"peak RSS {first['maxrss_kib'] / 1024:.0f} MiB at {n0} files, "
            f"{last['maxrss_kib'] / 1024:.0f} MiB at {n1} files ({growth:+.0f} MiB for "
            f"{n1 - n0} more files)"
        )


if __name__ == "__main__":
    main()
