# Paths, wildcard constraints, the runs each experiment declares and the settings each job reads.
# `settings` (comm_repro.config) is imported by configfiles.smk, included before this file.

import re
import shlex
import shutil

RESULTS = "results"
RUN = f"{RESULTS}/runs/{{dataset}}/{{method}}/seed{{seed}}"
GPU_LOCK_DIR = ".snakemake/comm-gpu-locks"


def _alternatives(names):
    return "|".join(sorted(names))


wildcard_constraints:
    dataset=_alternatives(config["datasets"]),
    method=_alternatives(config["methods"]),
    experiment=_alternatives(config.get("experiments") or {"none": None}),
    complexity=_alternatives(config.get("complexity") or {"none": None}),
    seed=r"\d+",
    epoch=r"\d+",


def check_config():
    """Every run the study can make (settings and the schema's cross-key checks), and what the
    experiments name; messages name the key."""
    try:
        settings.check_study(config, "the workflow's config")
    except settings.ConfigError as err:
        raise WorkflowError(str(err)) from None
    for name, exp in (config.get("experiments") or {}).items():
        spec = settings.table_spec_path(exp["table"])
        if not spec.is_file():
            raise WorkflowError(f"experiments.{name}.table: {spec} not found")
        for method in exp["methods"]:
            if method not in config["methods"]:
                raise WorkflowError(
                    f"experiments.{name}.methods: {method!r} is not a key of methods: "
                    f"{sorted(config['methods'])}"
                )
        try:
            datasets = experiment_datasets(name)
        except settings.ConfigError as err:
            raise WorkflowError(f"experiments.{name}: {err}") from None
        for dataset in datasets:
            if dataset not in config["datasets"]:
                raise WorkflowError(
                    f"experiments.{name}: its table {spec} reads dataset {dataset!r}, which "
                    f"is not a key of datasets: {sorted(config['datasets'])}"
                )


def check_complexity():
    """Complexity tables: their specs exist, name no experiment's table, and measure runs of
    the study's datasets and methods."""
    for name, entry in (config.get("complexity") or {}).items():
        if name in (config.get("experiments") or {}):
            raise WorkflowError(
                f"complexity.{name}: an experiment has that name too (both make "
                f"{RESULTS}/tables/{name}.csv); rename one"
            )
        spec = settings.table_spec_path(entry["table"])
        if not spec.is_file():
            raise WorkflowError(f"complexity.{name}.table: {spec} not found")
        for dataset, method in complexity_runs(name):
            for key, value in (("datasets", dataset), ("methods", method)):
                if value not in config[key]:
                    raise WorkflowError(
                        f"complexity.{name}: its table {spec} measures {value!r}, which is "
                        f"not a key of {key}: {sorted(config[key])}"
                    )


def complexity_runs(name):
    """The (dataset, method) pairs the complexity table ``name`` measures."""
    spec = settings.load_yaml(
        settings.table_spec_path(config["complexity"][name]["table"])
    )
    rows = spec.get("rows") or []
    return list(dict.fromkeys((r.get("dataset"), r.get("method")) for r in rows))


def complexity_results(name):
    return [
        f"{RESULTS}/complexity/{name}/{dataset}/{method}.json"
        for dataset, method in complexity_runs(name)
    ]


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


def experiments():
    return list(config.get("experiments") or {})


def experiment_datasets(name):
    runs = settings.experiment_runs(config, name)
    return list(dict.fromkeys(dataset for dataset, _, _ in runs))


def column_arguments(wildcards):
    """`--columns A B` where the experiment shows part of its table, else nothing."""
    columns = config["experiments"][wildcards.experiment].get("columns")
    return "" if not columns else "--columns " + " ".join(map(shlex.quote, columns))


check_config()
check_complexity()
check_cli()


# Prepared data: datasets that differ only in training or probing share one prepared copy.
PREPARED = {}
for _name, _dataset in config["datasets"].items():
    PREPARED.setdefault(settings.data_id(_dataset), _dataset)


def data_dir(dataset):
    return f"{RESULTS}/data/{settings.data_id(config['datasets'][dataset])}"


def data_files(dataset):
    return [f"{data_dir(dataset)}/manifest.json"]


def prepare_arguments(wildcards):
    """`comm-repro prepare` options of a prepared copy: the dataset's prepare: section, and the
    raw file when the study names one (datasets.<name>.source)."""
    dataset = PREPARED[wildcards.data_id]
    items = [
        f"{key}={value}"
        for key, value in sorted((dataset.get("prepare") or {}).items())
    ]
    args = f"--option {' '.join(shlex.quote(i) for i in items)}" if items else ""
    if dataset.get("source"):
        args += f" --source {shlex.quote(str(dataset['source']))}"
    return args


def run_settings(wildcards):
    """The resolved settings of one run, as its pretraining reads them (comm_repro.config):
    Snakemake reruns the job whose settings changed."""
    run = settings.run_config(
        config, wildcards.dataset, wildcards.method, int(wildcards.seed)
    )
    return settings.pretrain_settings(run)


def finetune_settings(wildcards):
    """The fine-tuning section of one run (changing it reruns the fine-tuning and its probe)."""
    run = settings.run_config(
        config, wildcards.dataset, wildcards.method, int(wildcards.seed)
    )
    return settings.finetune_settings(run)


def probe_settings(wildcards):
    """The probe section of one run (changing it reruns the probes only)."""
    run = settings.run_config(
        config, wildcards.dataset, wildcards.method, int(wildcards.seed)
    )
    return {"probe": run["probe"]}


# Frozen encoders' probe features: one folder per prepared copy and encoder, shared by every
# run that probes with them (comm_repro.features); folder -> the settings it is computed with.
def run_features(dataset, method):
    run = settings.run_config(config, dataset, method, 0)
    return {
        settings.feature_dir(run, m["name"]): settings.feature_settings(run, m["name"])
        for m in settings.frozen_modalities(run["dataset"])
    }


FEATURES = {}
for _dataset, _method, _seed in settings.study_runs(config):
    FEATURES.update(run_features(_dataset, _method))


def feature_files(wildcards):
    return [
        f"{RESULTS}/features/{folder}/manifest.json"
        for folder in run_features(wildcards.dataset, wildcards.method)
    ]


def feature_arguments(wildcards, input):
    folders = [str(Path(f).parent) for f in input.features]
    return f"--features {' '.join(map(shlex.quote, folders))}" if folders else ""


def feature_data(wildcards):
    return f"{RESULTS}/data/{settings.data_id(FEATURES[wildcards.features]['dataset'])}"


def job_resources(stage, key):
    return config["resources"][stage][key]


def gpu_lock_args(stage):
    """GPU jobs claim their own device (see comm_repro.gpu); CPU jobs need nothing."""
    return f"--gpu-lock-dir {GPU_LOCK_DIR}" if job_resources(stage, "gpu") > 0 else ""


def output_prefix(wildcards, output):
    """The shared stem of a rule's outputs (multiext): what `comm-repro table|figure --out` takes."""
    return str(Path(output[0]).with_suffix(""))


def experiment_runs(name, file):
    """A file of each run the experiment pretrains."""
    runs = settings.experiment_runs(config, name)
    return [
        f"{RESULTS}/runs/{dataset}/{method}/seed{seed}/{file}"
        for dataset, method, seed in runs
    ]


FINETUNED = {"pretrain": "", "finetune": "finetune/"}  # where a stage's results live


def experiment_probes(name):
    """The probe results of the experiment's cells: a pretrained run's, or its fine-tuned
    copy's (in the run's finetune/ folder)."""
    results = settings.experiment_results(config, name)
    return [
        f"{RESULTS}/runs/{dataset}/{method}/seed{seed}/{FINETUNED[stage]}probe.json"
        for dataset, method, seed, stage in results
    ]


def snapshot_probes(name):
    """The probes of every snapshot of the experiment's pretrained runs (snapshot_every)."""
    probes = []
    for dataset, method, seed, stage in settings.experiment_results(config, name):
        run = settings.run_config(config, dataset, method, seed)
        probes += [
            f"{RESULTS}/runs/{dataset}/{method}/seed{seed}/snapshot_probes/epoch{epoch:04d}.json"
            for epoch in settings.snapshot_epochs(run["train"])
            if stage == "pretrain"
        ]
    return probes


def snapshot_argument(wildcards):
    """`--snapshot EPOCH` for the probe of a snapshot, nothing for a run's final model."""
    return f"--snapshot {int(wildcards.epoch)}" if "epoch" in wildcards.keys() else ""


def experiment_spec(wildcards):
    return str(
        settings.table_spec_path(config["experiments"][wildcards.experiment]["table"])
    )


def reported_experiments():
    return [e for e in experiments() if config["experiments"][e].get("report")]


def experiment_extras(name):
    """The experiment's tables and figures beyond its table: what each modality's features
    know (subsets), its columns during training (snapshot_every)."""
    exp, extras = config["experiments"][name], []
    for key, stem in (("subsets", "subsets"), ("snapshot_every", "snapshots")):
        if exp.get(key):
            extras += multiext(f"{RESULTS}/tables/{name}_{stem}", ".csv", ".md")
            extras += multiext(f"{RESULTS}/figures/{name}_{stem}", ".png", ".pdf")
    return extras


def all_targets():
    targets = []
    for name in experiments():
        targets += experiment_probes(name)
        targets += multiext(f"{RESULTS}/tables/{name}", ".csv", ".md", ".tex")
        targets += multiext(f"{RESULTS}/figures/{name}", ".png", ".pdf")
        targets += multiext(f"{RESULTS}/figures/training_curves_{name}", ".png", ".pdf")
        targets += experiment_extras(name)
    for name in config.get("complexity") or {}:
        targets += multiext(f"{RESULTS}/tables/{name}", ".csv", ".md")
    for name in reported_experiments():
        targets += [f"{RESULTS}/reports/{name}.ipynb", f"{RESULTS}/reports/{name}.html"]
    return targets + [f"{RESULTS}/reports/index.html"]
