# Paths, wildcard constraints and the config slices each job sees.

import shlex
import shutil

import yaml

RESULTS = "results"
RUN = f"{RESULTS}/runs/{{dataset}}/{{method}}/seed{{seed}}"
GPU_LOCK_DIR = ".snakemake/comm-gpu-locks"


def _alternatives(names):
    return "|".join(sorted(names))


wildcard_constraints:
    dataset=_alternatives(config["datasets"]),
    method=_alternatives(config["methods"]),
    seed=r"\d+",
    generator_seed=r"\d+",


def check_config():
    """Cross-key checks the schema cannot express; messages name the key."""
    for role in ("unbiased", "biased"):
        name = config["fig4"][role]
        if name not in config["datasets"]:
            raise ValueError(
                f"fig4.{role} is {name!r}, not a key of datasets: {sorted(config['datasets'])}"
            )
        pairing = config["datasets"][name]["pairing"]
        if pairing != role:
            raise ValueError(
                f"fig4.{role} names dataset {name!r}, whose pairing is {pairing!r}"
            )
    batch = config["train"]["batch_size"]
    for name, dataset in config["datasets"].items():
        if dataset["max_train_pairs"] < batch:
            raise ValueError(
                f"datasets.{name}.max_train_pairs is {dataset['max_train_pairs']}, below "
                f"train.batch_size {batch}: a run needs at least one full batch"
            )


def check_cli():
    """Rules call the `comm-repro` command. Unless conda provides each rule's environment,
    it must be on PATH: say how to get it rather than fail in every job."""
    deployment = getattr(workflow, "deployment_settings", None)
    methods = {m.name for m in getattr(deployment, "deployment_method", None) or ()}
    if "CONDA" not in methods and shutil.which("comm-repro") is None:
        raise WorkflowError(
            "the `comm-repro` command is not on PATH: activate the project's environment "
            "(. .venv/bin/activate) or install it (pip install -e .), or run with "
            "--software-deployment-method conda"
        )


check_config()
check_cli()


def data_dir(dataset):
    cfg = config["datasets"][dataset]
    return f"{RESULTS}/data/{cfg['family']}/seed{cfg['generator_seed']}"


def data_files(dataset):
    folder = data_dir(dataset)
    return [f"{folder}/train.npz", f"{folder}/test.npz", f"{folder}/manifest.json"]


# Dataset keys that only the probes read; like the probe section, they reach the probe job as
# overrides, so that changing them reruns the probes and not the pretraining.
DATASET_PROBE_KEYS = ("probe_train_pairs", "probe_tasks")


def run_settings(wildcards):
    """The study slice one pretraining run depends on (probe settings excluded: changing them
    reruns the probes only). Snakemake reruns a job whose params changed."""
    dataset = {
        key: value
        for key, value in config["datasets"][wildcards.dataset].items()
        if key not in DATASET_PROBE_KEYS
    }
    return {
        "seeds": [int(wildcards.seed)],
        "datasets": {wildcards.dataset: dataset},
        "methods": {wildcards.method: config["methods"][wildcards.method]},
        **{key: config[key] for key in ("model", "train", "augment")},
        "probe": {},
    }


def probe_overrides(wildcards):
    """`--set KEY=VALUE ...` arguments carrying the probe settings: the probe section and the
    dataset's probe keys."""
    dataset = config["datasets"][wildcards.dataset]
    settings = {f"probe.{key}": value for key, value in config["probe"].items()}
    settings |= {
        f"dataset.{key}": dataset[key] for key in DATASET_PROBE_KEYS if key in dataset
    }
    items = [
        f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"
        for key, value in sorted(settings.items())
    ]
    return " ".join(shlex.quote(item) for item in items)


def job_resources(stage, key):
    return config["resources"][stage][key]


def gpu_lock_args(stage):
    """GPU jobs claim their own device (see comm_repro.gpu); CPU jobs need nothing."""
    return f"--gpu-lock-dir {GPU_LOCK_DIR}" if job_resources(stage, "gpu") > 0 else ""


def output_prefix(wildcards, output):
    """The shared stem of a rule's outputs (multiext): what `comm-repro table|figure --out` takes."""
    return str(Path(output[0]).with_suffix(""))


def runs(datasets=None, methods=None, file="probe.json"):
    return expand(
        f"{RUN}/{file}",
        dataset=datasets or list(config["datasets"]),
        method=methods or list(config["methods"]),
        seed=config["seeds"],
    )


def fig4_probes():
    fig4 = config["fig4"]
    return runs(datasets=[fig4["unbiased"], fig4["biased"]])


def all_targets():
    return [
        *runs(),
        *multiext(f"{RESULTS}/tables/fig4_trifeatures", ".csv", ".md", ".tex"),
        *multiext(f"{RESULTS}/figures/fig4_trifeatures", ".png", ".pdf"),
        *multiext(f"{RESULTS}/figures/training_curves_trifeatures", ".png", ".pdf"),
        f"{RESULTS}/reports/trifeatures.ipynb",
        f"{RESULTS}/reports/trifeatures.html",
        f"{RESULTS}/reports/index.html",
    ]
