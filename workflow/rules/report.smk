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
