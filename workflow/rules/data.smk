rule prepare_trifeatures:
    output:
        multiext(
            f"{RESULTS}/data/trifeatures/seed{{generator_seed}}/",
            "train.npz",
            "test.npz",
            "manifest.json",
        ),
    log:
        f"{RESULTS}/logs/prepare/trifeatures_seed{{generator_seed}}.log",
    conda:
        "../envs/comm.yaml"
    # Fixed cost, whatever the study: 2,600 renders at 224 px (about 25 s and 1.8 GB peak on
    # one core). Stated so that a cluster job does not get Snakemake's 1 GB default.
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        out=lambda wildcards, output: Path(output[0]).parent,
    shell:
        "comm-repro prepare trifeatures --seed {wildcards.generator_seed} --out {params.out} --quiet "
        "> {log} 2>&1"
