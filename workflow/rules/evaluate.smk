# A frozen encoder's probe-time outputs, once per prepared copy and encoder (comm_repro.features):
# every probe of a run with that modality reads them instead of running the encoder.
rule feature_settings:
    output:
        f"{RESULTS}/features/{{features}}/settings.yaml",
    log:
        f"{RESULTS}/logs/features/{{features}}_settings.log",
    wildcard_constraints:
        features=_alternatives(re.escape(f) for f in FEATURES) or "none",
    localrule: True
    params:
        settings=lambda wildcards: FEATURES[wildcards.features],
    run:
        with open(output[0], "w") as f:
            yaml.safe_dump(params.settings, f, sort_keys=False)


rule features:
    input:
        settings=f"{RESULTS}/features/{{features}}/settings.yaml",
        data=lambda wildcards: f"{feature_data(wildcards)}/manifest.json",
    output:
        f"{RESULTS}/features/{{features}}/manifest.json",
    log:
        f"{RESULTS}/logs/features/{{features}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/features/{{features}}.tsv"
    conda:
        "../envs/comm.yaml"
    threads: job_resources("probe", "threads")
    resources:
        gpu=job_resources("probe", "gpu"),
        mem_mb=job_resources("probe", "mem_mb"),
        runtime=job_resources("probe", "runtime"),
    params:
        data=feature_data,
        out=lambda wildcards, output: Path(output[0]).parent,
        gpu=gpu_lock_args("probe"),
    shell:
        "comm-repro features --settings {input.settings} --data {params.data} --out {params.out} "
        "--threads {threads} {params.gpu} --quiet --exit-with-parent > {log} 2>&1"


rule probe:
    input:
        record=f"{RUN}/run.json",
        model=f"{RUN}/model.pt",
        settings=f"{RUN}/probe_settings.yaml",
        data=lambda wildcards: data_files(wildcards.dataset),
        features=feature_files,
    output:
        f"{RUN}/probe.json",
    log:
        f"{RESULTS}/logs/probe/{{dataset}}/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/probe/{{dataset}}/{{method}}/seed{{seed}}.tsv"
    conda:
        "../envs/comm.yaml"
    threads: job_resources("probe", "threads")
    resources:
        gpu=job_resources("probe", "gpu"),
        mem_mb=job_resources("probe", "mem_mb"),
        runtime=job_resources("probe", "runtime"),
    params:
        data=lambda wildcards: data_dir(wildcards.dataset),
        run=lambda wildcards, input: Path(input.model).parent,
        features=feature_arguments,
        snapshot=snapshot_argument,
        gpu=gpu_lock_args("probe"),
    shell:
        "comm-repro probe --run {params.run} --settings {input.settings} --data {params.data} "
        "{params.features} {params.snapshot} --out {output} --threads {threads} {params.gpu} "
        "--quiet --exit-with-parent > {log} 2>&1"


# The same probe on a fine-tuned copy (the probe settings are the run's).
use rule probe as probe_finetuned with:
    input:
        record=f"{RUN}/finetune/run.json",
        model=f"{RUN}/finetune/model.pt",
        settings=f"{RUN}/probe_settings.yaml",
        data=lambda wildcards: data_files(wildcards.dataset),
        features=feature_files,
    output:
        f"{RUN}/finetune/probe.json",
    log:
        f"{RESULTS}/logs/probe/{{dataset}}/{{method}}/seed{{seed}}_finetune.log",
    benchmark:
        f"{RESULTS}/benchmarks/probe/{{dataset}}/{{method}}/seed{{seed}}_finetune.tsv"


# The same probe on a snapshot the run kept during training (train.snapshot_every): the
# trainer writes snapshots/epochNNNN.pt before model.pt, so a finished run has them all.
use rule probe as probe_snapshot with:
    output:
        f"{RUN}/snapshot_probes/epoch{{epoch}}.json",
    log:
        f"{RESULTS}/logs/probe/{{dataset}}/{{method}}/seed{{seed}}_epoch{{epoch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/probe/{{dataset}}/{{method}}/seed{{seed}}_epoch{{epoch}}.tsv"
