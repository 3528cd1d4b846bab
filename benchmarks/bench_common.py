"""What the benchmarks share: the machine they ran on, and the authors' code for side by side.

The authors' code (github.com/Duplums/CoMM) is imported from a checkout the user gives; nothing of
theirs is copied here: the checkout's root goes on sys.path. Their modules import
pytorch-lightning, omegaconf, einops, tensorboard and pandas (their model and their Trifeature
generator; hydra only for their command line, which the benchmarks do not run).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

from comm_repro.methods import build_method
from comm_repro.provenance import cpu_info
from comm_repro.train import autocast_context

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


def authors_comm(mmfusion: ModuleType, comm: ModuleType, cfg: dict, encoders, adapters):
    """Their CoMM module around ``encoders`` and ``adapters`` (their classes), with their MMFusion,
    projection head, CoMMLoss and optimiser settings at the run's widths, as their
    configs/model/comm.yaml builds it."""
    model, train = cfg["model"], cfg["train"]
    dim = int(model["embed_dim"])
    encoder = mmfusion.MMFusion(
        encoders=encoders,
        input_adapters=adapters,
        embed_dim=dim,
        fusion="concat",
        pool="cls",
        n_heads=int(model["heads"]),
        n_layers=int(model["layers"]),
        add_bias_kv=False,
        dropout=0.0,
    )
    head = comm.CoMM._build_mlp(dim, int(model["head_hidden"]), int(model["head_out"]))
    return comm.CoMM(
        encoder=encoder,
        projection=head,
        optim_kwargs={"lr": float(train["lr"]), "weight_decay": float(train["weight_decay"])},
        loss_kwargs={"temperature": float(cfg["method"]["temperature"])},
    )


class OurStep:
    """One training step of our method as ``pretrain`` runs it, end to end: gather a batch from
    the bank, the method's own step (its views, forward, backward, its optimisers)."""

    def __init__(self, cfg, data, device, precision, batch_size, memory_format=None):
        label_shapes = {k: tuple(v.shape[1:]) for k, v in data.labels.items()}
        method = build_method(cfg, data.sample_shapes(), label_shapes)
        self.method = method.to(device, memory_format=memory_format or torch.preserve_format)
        self.method.train()
        self.optimizers = self.method.optimizers(cfg["train"])
        self.data, self.device = data, device
        self.precision, self.batch_size = precision, batch_size

    def __call__(self) -> None:
        batch = self.data.gather(torch.randint(len(self.data), (self.batch_size,)))
        autocast = functools.partial(autocast_context, self.device, self.precision)
        self.method.train_step(batch, self.optimizers, autocast)


class AuthorsStep:
    """Their model step as their Lightning loop runs it: forward(x1, x2), their loss, backward,
    AdamW from their configure_optimizers(). The two augmented views of one batch are made
    once, with our augmentation, outside the timing (theirs runs per sample in DataLoader
    worker processes, which one process cannot time fairly)."""

    def __init__(self, model, ours: OurStep, device, precision, batch_size, views=None):
        self.model = model.to(device)
        self.model.train()
        self.optimizer = self.model.configure_optimizers()
        if views is None:
            batch = ours.data.gather(torch.randint(len(ours.data), (batch_size,)))
            with torch.no_grad():
                views = [ours.method.views("strong", batch.inputs, batch.masks) for _ in "12"]
        self.x1, self.x2 = views
        self.device, self.precision = device, precision

    def __call__(self) -> None:
        with autocast_context(self.device, self.precision):
            loss = self.model.loss(self.model(self.x1, self.x2))["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def time_alternately(steps: dict, device: torch.device, n: int) -> dict[str, list[float]]:
    """Seconds per step of each callable, run in turn so that a change in load hits all; the
    first round warms up allocators and kernels and is not counted."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(n + 1):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:
                times[name].append(time.perf_counter() - t0)
    return times
