"""What the benchmarks share: the machine they ran on, and the authors' code for side by side.

The authors' code (github.com/Duplums/CoMM) is imported from a checkout the user gives; nothing of
theirs is copied here: the checkout's root goes on sys.path. Their modules import
pytorch-lightning, omegaconf, einops, tensorboard and pandas (their model and their Trifeature
generator; hydra only for their command line, which the benchmarks do not run).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

from comm_repro.provenance import cpu_info

# module -> pip package, for the modules that their model and generator import
NEEDED = {
    "pytorch_lightning": "pytorch-lightning",
    "omegaconf": "omegaconf",
    "einops": "einops",
    "tensorboard": "tensorboard",
    "pandas": "pandas",
}
PIP_NAMES = {**NEEDED, "hydra": "hydra-core", "PIL": "pillow", "sklearn": "scikit-learn"}
# top-level packages of their repository
THEIR_PACKAGES = ("models", "pl_modules", "losses", "dataset", "evaluation", "utils")


def machine_line(device: torch.device | str = "cpu") -> str:
    """CPU model, its ISA features that decide the kernels, logical cores, torch threads, device."""
    device = torch.device(device)
    cpu = cpu_info()
    features = " ".join(cpu["features"]) or "none of avx2/avx512/amx"
    where = f"device {device}"
    if device.type == "cuda":
        where += f" ({torch.cuda.get_device_name(device)})"
    return (
        f"machine: CPU {cpu['model']}, ISA features {features}, {cpu['logical_cores']} logical "
        f"cores; torch {torch.__version__}, torch threads {torch.get_num_threads()}, {where}"
    )


def _missing_packages_message(path: Path, modules: list[str]) -> str:
    packages = [PIP_NAMES.get(m, m.replace("_", "-")) for m in modules]
    return (
        f"error: the authors' code at {path} needs {', '.join(packages)}, missing here: "
        f"pip install {' '.join(packages)}"
    )


def _under(root: Path, module: ModuleType) -> bool:
    """Whether ``module`` (a plain or a namespace package) was imported from ``root``."""
    places = [module.__file__] if getattr(module, "__file__", None) else []
    places += list(getattr(module, "__path__", []))
    return bool(places) and all(Path(p).resolve().is_relative_to(root) for p in places)


def import_authors_modules(path: str | Path, names: list[str]) -> list[ModuleType]:
    """Import ``names`` (e.g. 'pl_modules.comm') from the checkout at ``path``.

    Exits with a one-line message, not a traceback, when ``path`` is not a checkout or a package
    their code imports is missing.
    """
    root = Path(path).expanduser().resolve()
    for name in names:
        if not (root / (name.replace(".", "/") + ".py")).is_file():
            sys.exit(
                f"error: --authors-code {path} is not a checkout of github.com/Duplums/CoMM "
                f"(no {name.replace('.', '/')}.py)"
            )
    clash = [m for m in THEIR_PACKAGES if m in sys.modules and not _under(root, sys.modules[m])]
    if clash:
        sys.exit(f"error: modules named {', '.join(clash)} are already imported from elsewhere")
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(_missing_packages_message(root, missing))
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        return [importlib.import_module(name) for name in names]
    except ModuleNotFoundError as err:
        top = (err.name or "").split(".")[0]
        if not top or top in THEIR_PACKAGES:
            raise
        sys.exit(_missing_packages_message(root, [top]))
