# Aggregation, figures and the report notebooks: cheap, so they run on the submitting host.
# One rule of each kind serves every experiment: its table spec (config/tables/) says what the
# table holds, the experiment which runs fill it.


rule table:
    input:
        spec=experiment_spec,
        probes=lambda wildcards: experiment_probes(wildcards.experiment),
    output:
        multiext(f"{RESULTS}/tables/{{experiment}}", ".csv", ".md", ".tex"),
    log:
        f"{RESULTS}/logs/report/table_{{experiment}}.log",
    localrule: True
    conda:
        "../envs/comm.yaml"
    params:
        prefix=output_prefix,
        methods=lambda wildcards: config["experiments"][wildcards.experiment]["methods"],
        columns=column_arguments,
    shell:
        "comm-repro table --spec {input.spec} --probes {input.probes} "
        "--methods {params.methods} {params.columns} --out {params.prefix} > {log} 2>&1"


# What each modality's features know (experiments.<name>.subsets; its runs' probe.subsets)
rule subsets:
    input:
        lambda wildcards: experiment_probes(wildcards.experiment),
    output:
        multiext(f"{RESULTS}/tables/{{experiment}}_subsets", ".csv", ".md"),
        multiext(f"{RESULTS}/figures/{{experiment}}_subsets", ".png", ".pdf"),
    log:
        f"{RESULTS}/logs/report/subsets_{{experiment}}.log",
    localrule: True
    conda:
        "../envs/comm.yaml"
    params:
        prefix=lambda wildcards: f"{RESULTS}/tables/{wildcards.experiment}_subsets",
        figure=lambda wildcards: f"{RESULTS}/figures/{wildcards.experiment}_subsets",
    shell:
        "comm-repro subsets --probes {input} --out {params.prefix} --figure {params.figure} "
        "> {log} 2>&1"


# The table's columns during training (experiments.<name>.snapshot_every): paper Fig. 5
rule snapshots:
    input:
        spec=experiment_spec,
        probes=lambda wildcards: snapshot_probes(wildcards.experiment),
    output:
        multiext(f"{RESULTS}/tables/{{experiment}}_snapshots", ".csv", ".md"),
        multiext(f"{RESULTS}/figures/{{experiment}}_snapshots", ".png", ".pdf"),
    log:
        f"{RESULTS}/logs/report/snapshots_{{experiment}}.log",
    localrule: True
    conda:
        "../envs/comm.yaml"
    params:
        methods=lambda wildcards: config["experiments"][wildcards.experiment]["methods"],
        columns=column_arguments,
        prefix=lambda wildcards: f"{RESULTS}/tables/{wildcards.experiment}_snapshots",
        figure=lambda wildcards: f"{RESULTS}/figures/{wildcards.experiment}_snapshots",
    shell:
        "comm-repro snapshots --spec {input.spec} --probes {input.probes} "
        "--methods {params.methods} {params.columns} --out {params.prefix} "
        "--figure {params.figure} > {log} 2>&1"


rule figure_table:
    input:
        spec=experiment_spec,
        table=f"{RESULTS}/tables/{{experiment}}.csv",
    output:
        multiext(f"{RESULTS}/figures/{{experiment}}", ".png", ".pdf"),
    log:
        f"{RESULTS}/logs/report/figure_{{experiment}}.log",
    localrule: True
    conda:
        "../envs/comm.yaml"
    params:
        prefix=output_prefix,
        columns=column_arguments,
    shell:
        "comm-repro figure table --spec {input.spec} --table {input.table} {params.columns} "
        "--out {params.prefix} > {log} 2>&1"


rule figure_training_curves:
    input:
        lambda wildcards: experiment_runs(wildcards.experiment, "train_log.csv"),
    output:
        multiext(f"{RESULTS}/figures/training_curves_{{experiment}}", ".png", ".pdf"),
    log:
        f"{RESULTS}/logs/report/figure_training_curves_{{experiment}}.log",
    localrule: True
    conda:
        "../envs/comm.yaml"
    params:
        prefix=output_prefix,
        runs=lambda wildcards, input: [Path(p).parent for p in input],
    shell:
        "comm-repro figure curves --runs {params.runs} --out {params.prefix} > {log} 2>&1"


rule report_notebook:
    input:
        notebook=lambda wildcards: f"notebooks/{config['experiments'][wildcards.experiment]['report']}.ipynb",
        table=multiext(f"{RESULTS}/tables/{{experiment}}", ".csv", ".md"),
        figures=[
            f"{RESULTS}/figures/{{experiment}}.png",
            f"{RESULTS}/figures/training_curves_{{experiment}}.png",
        ],
        probes=lambda wildcards: experiment_probes(wildcards.experiment),
        extras=lambda wildcards: experiment_extras(wildcards.experiment),
        data=lambda wildcards: data_files(experiment_datasets(wildcards.experiment)[0]),
    output:
        f"{RESULTS}/reports/{{experiment}}.ipynb",
    log:
        f"{RESULTS}/logs/report/{{experiment}}_notebook.log",
    localrule: True
    conda:
        "../envs/comm.yaml"
    params:
        results=Path(RESULTS).resolve(),
        data=lambda wildcards, input: Path(input.data[0]).parent.resolve(),
    shell:
        "papermill {input.notebook} {output} -p results_dir {params.results} "
        "-p experiment {wildcards.experiment} -p data_dir {params.data} --no-progress-bar "
        "> {log} 2>&1"


rule report_html:
    input:
        f"{RESULTS}/reports/{{experiment}}.ipynb",
    output:
        f"{RESULTS}/reports/{{experiment}}.html",
    log:
        f"{RESULTS}/logs/report/{{experiment}}_html.log",
    localrule: True
    conda:
        "../envs/comm.yaml"
    shell:
        "jupyter nbconvert --to html {input} --output-dir $(dirname {output}) > {log} 2>&1"


# The index opens with the scorecard: every paper cell the study reached, beside ours.
rule report_index:
    input:
        reports=[f"{RESULTS}/reports/{e}.html" for e in reported_experiments()],
        tables=[f"{RESULTS}/tables/{e}.csv" for e in experiments()],
    output:
        f"{RESULTS}/reports/index.html",
    log:
        f"{RESULTS}/logs/report/index.log",
    localrule: True
    conda:
        "../envs/comm.yaml"
    params:
        tables=[f"{e}={RESULTS}/tables/{e}.csv" for e in experiments()],
    shell:
        "comm-repro index --reports {input.reports} --tables {params.tables} --out {output} "
        "> {log} 2>&1"


# Complexity tables (Table 8): each row's model built from its run's settings and measured in a
# job of its own (a GPU job where the study has GPUs: the latency is the device's), then gathered.
rule complexity:
    input:
        settings=f"{RESULTS}/runs/{{dataset}}/{{method}}/seed0/settings.yaml",
        data=lambda wildcards: data_files(wildcards.dataset),
    output:
        f"{RESULTS}/complexity/{{complexity}}/{{dataset}}/{{method}}.json",
    log:
        f"{RESULTS}/logs/complexity/{{complexity}}/{{dataset}}/{{method}}.log",
    conda:
        "../envs/comm.yaml"
    threads: job_resources("pretrain", "threads")
    resources:
        gpu=job_resources("pretrain", "gpu"),
        mem_mb=job_resources("pretrain", "mem_mb"),
        runtime=job_resources("probe", "runtime"),
    params:
        data=lambda wildcards: data_dir(wildcards.dataset),
        batch=lambda wildcards: config["complexity"][wildcards.complexity].get(
            "batch_size", 64
        ),
        repeats=lambda wildcards: config["complexity"][wildcards.complexity].get(
            "repeats", 5
        ),
        gpu=gpu_lock_args("pretrain"),
    shell:
        "comm-repro complexity --settings {input.settings} --data {params.data} --out {output} "
        "--batch-size {params.batch} --repeats {params.repeats} --threads {threads} "
        "{params.gpu} --quiet --exit-with-parent > {log} 2>&1"


rule complexity_table:
    input:
        spec=lambda wildcards: str(
            settings.table_spec_path(
                config["complexity"][wildcards.complexity]["table"]
            )
        ),
        results=lambda wildcards: complexity_results(wildcards.complexity),
    output:
        multiext(f"{RESULTS}/tables/{{complexity}}", ".csv", ".md"),
    log:
        f"{RESULTS}/logs/report/complexity_{{complexity}}.log",
    localrule: True
    conda:
        "../envs/comm.yaml"
    params:
        prefix=output_prefix,
    shell:
        "comm-repro complexity-table --spec {input.spec} --results {input.results} "
        "--out {params.prefix} > {log} 2>&1"
