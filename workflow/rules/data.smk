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
    params:
        out=lambda wildcards, output: Path(output[0]).parent,
    shell:
        "comm prepare trifeatures --seed {wildcards.generator_seed} --out {params.out} --quiet "
        "> {log} 2>&1"
