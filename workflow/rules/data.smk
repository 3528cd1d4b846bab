# One rule prepares every dataset: generated (Trifeature) or converted from the raw file, which
# is downloaded when the study names none (datasets.<name>.source) and it is not found at the
# default place. A missing raw file stops the workflow here, with what to fetch and where.


rule prepare:
    output:
        f"{RESULTS}/data/{{data_id}}/manifest.json",
    log:
        f"{RESULTS}/logs/prepare/{{data_id}}.log",
    conda:
        "../envs/comm.yaml"
    threads: job_resources("prepare", "threads")
    resources:
        mem_mb=job_resources("prepare", "mem_mb"),
        runtime=job_resources("prepare", "runtime"),
    params:
        family=lambda wildcards: PREPARED[wildcards.data_id]["family"],
        out=lambda wildcards, output: Path(output[0]).parent,
        options=prepare_arguments,
    shell:
        "comm-repro prepare {params.family} {params.options} --out {params.out} --quiet "
        "> {log} 2>&1"
