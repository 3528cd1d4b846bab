rule probe:
    input:
        record=f"{RUN}/run.json",
        model=f"{RUN}/model.pt",
        settings=f"{RUN}/probe_settings.yaml",
        data=lambda wildcards: data_files(wildcards.dataset),
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
        gpu=gpu_lock_args("probe"),
    shell:
        "comm-repro probe --run {params.run} --settings {input.settings} --data {params.data} "
        "--out {output} --threads {threads} {params.gpu} --quiet --exit-with-parent > {log} 2>&1"


# The same probe on a fine-tuned copy (the probe settings are the run's).
use rule probe as probe_finetuned with:
    input:
        record=f"{RUN}/finetune/run.json",
        model=f"{RUN}/finetune/model.pt",
        settings=f"{RUN}/probe_settings.yaml",
        data=lambda wildcards: data_files(wildcards.dataset),
    output:
        f"{RUN}/finetune/probe.json",
    log:
        f"{RESULTS}/logs/probe/{{dataset}}/{{method}}/seed{{seed}}_finetune.log",
    benchmark:
        f"{RESULTS}/benchmarks/probe/{{dataset}}/{{method}}/seed{{seed}}_finetune.tsv"
