# A run's settings are resolved once, here, into files its jobs read (comm_repro.config).


rule run_settings:
    output:
        f"{RUN}/settings.yaml",
    log:
        f"{RESULTS}/logs/settings/{{dataset}}/{{method}}/seed{{seed}}.log",
    localrule: True
    params:
        settings=run_settings,
    run:
        with open(output[0], "w") as f:
            yaml.safe_dump(params.settings, f, sort_keys=False)


rule finetune_settings:
    output:
        f"{RUN}/finetune_settings.yaml",
    log:
        f"{RESULTS}/logs/settings/{{dataset}}/{{method}}/seed{{seed}}_finetune.log",
    localrule: True
    params:
        settings=finetune_settings,
    run:
        with open(output[0], "w") as f:
            yaml.safe_dump(params.settings, f, sort_keys=False)


rule probe_settings:
    output:
        f"{RUN}/probe_settings.yaml",
    log:
        f"{RESULTS}/logs/settings/{{dataset}}/{{method}}/seed{{seed}}_probe.log",
    localrule: True
    params:
        settings=probe_settings,
    run:
        with open(output[0], "w") as f:
            yaml.safe_dump(params.settings, f, sort_keys=False)


# Declared outputs are the finished run's files only: checkpoint.pt is left in place when a job
# fails or is killed, and the rerun (--rerun-incomplete) resumes from it.
rule pretrain:
    input:
        settings=f"{RUN}/settings.yaml",
        data=lambda wildcards: data_files(wildcards.dataset),
    output:
        record=f"{RUN}/run.json",
        model=f"{RUN}/model.pt",
        log_csv=f"{RUN}/train_log.csv",
        summary=f"{RUN}/pretrain.json",
    log:
        f"{RESULTS}/logs/pretrain/{{dataset}}/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain/{{dataset}}/{{method}}/seed{{seed}}.tsv"
    conda:
        "../envs/comm.yaml"
    threads: job_resources("pretrain", "threads")
    resources:
        gpu=job_resources("pretrain", "gpu"),
        mem_mb=job_resources("pretrain", "mem_mb"),
        runtime=job_resources("pretrain", "runtime"),
    params:
        data=lambda wildcards: data_dir(wildcards.dataset),
        run=lambda wildcards, output: Path(output.model).parent,
        gpu=gpu_lock_args("pretrain"),
    shell:
        "comm-repro pretrain --settings {input.settings} --data {params.data} "
        "--out {params.run} --threads {threads} {params.gpu} --exit-with-parent > {log} 2>&1"


# Supervised fine-tuning of a pretrained run, in its own folder beside the run's files: it
# reads the pretrained model and writes its own checkpoint, so rerunning it (a changed
# finetune: setting, --forcerun finetune) never reruns the pretraining.
rule finetune:
    input:
        record=f"{RUN}/run.json",
        model=f"{RUN}/model.pt",
        settings=f"{RUN}/finetune_settings.yaml",
        data=lambda wildcards: data_files(wildcards.dataset),
    output:
        record=f"{RUN}/finetune/run.json",
        model=f"{RUN}/finetune/model.pt",
        log_csv=f"{RUN}/finetune/train_log.csv",
        summary=f"{RUN}/finetune/finetune.json",
    log:
        f"{RESULTS}/logs/finetune/{{dataset}}/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/finetune/{{dataset}}/{{method}}/seed{{seed}}.tsv"
    conda:
        "../envs/comm.yaml"
    threads: job_resources("pretrain", "threads")
    resources:
        gpu=job_resources("pretrain", "gpu"),
        mem_mb=job_resources("pretrain", "mem_mb"),
        runtime=job_resources("pretrain", "runtime"),
    params:
        data=lambda wildcards: data_dir(wildcards.dataset),
        run=lambda wildcards, input: Path(input.model).parent,
        out=lambda wildcards, output: Path(output.model).parent,
        gpu=gpu_lock_args("pretrain"),
    shell:
        "comm-repro finetune --run {params.run} --settings {input.settings} "
        "--data {params.data} --out {params.out} --threads {threads} {params.gpu} "
        "--exit-with-parent > {log} 2>&1"
