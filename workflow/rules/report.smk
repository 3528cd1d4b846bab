# Aggregation, figures and the report notebook: cheap, so they run on the submitting host.


rule table_fig4:
    input:
        fig4_probes(),
    output:
        multiext(f"{RESULTS}/tables/fig4_trifeatures", ".csv", ".md", ".tex"),
    log:
        f"{RESULTS}/logs/report/table_fig4.log",
    localrule: True
    conda:
        "../envs/comm.yaml"
    params:
        prefix=output_prefix,
        unbiased=config["fig4"]["unbiased"],
        biased=config["fig4"]["biased"],
        methods=list(config["methods"]),
    shell:
        "comm-repro table fig4 --probes {input} --unbiased {params.unbiased} "
        "--biased {params.biased} --methods {params.methods} --out {params.prefix} > {log} 2>&1"


rule figure_fig4:
    input:
        f"{RESULTS}/tables/fig4_trifeatures.csv",
    output:
        multiext(f"{RESULTS}/figures/fig4_trifeatures", ".png", ".pdf"),
    log:
        f"{RESULTS}/logs/report/figure_fig4.log",
    localrule: True
    conda:
        "../envs/comm.yaml"
    params:
        prefix=output_prefix,
    shell:
        "comm-repro figure fig4 --table {input} --out {params.prefix} > {log} 2>&1"


rule figure_training_curves:
    input:
        runs(file="train_log.csv"),
    output:
        multiext(f"{RESULTS}/figures/training_curves_trifeatures", ".png", ".pdf"),
    log:
        f"{RESULTS}/logs/report/figure_training_curves.log",
    localrule: True
    conda:
        "../envs/comm.yaml"
    params:
        prefix=output_prefix,
        runs=lambda wildcards, input: [Path(p).parent for p in input],
    shell:
        "comm-repro figure curves --runs {params.runs} --out {params.prefix} > {log} 2>&1"


rule report_trifeatures:
    input:
        notebook="notebooks/trifeatures.ipynb",
        table=multiext(f"{RESULTS}/tables/fig4_trifeatures", ".csv", ".md"),
        figures=[
            f"{RESULTS}/figures/fig4_trifeatures.png",
            f"{RESULTS}/figures/training_curves_trifeatures.png",
        ],
        probes=runs(),
        logs=runs(file="train_log.csv"),
        data=data_files(config["fig4"]["unbiased"]),
    output:
        f"{RESULTS}/reports/trifeatures.ipynb",
    log:
        f"{RESULTS}/logs/report/trifeatures_notebook.log",
    localrule: True
    conda:
        "../envs/comm.yaml"
    params:
        results=Path(RESULTS).resolve(),
        data=Path(data_dir(config["fig4"]["unbiased"])).resolve(),
    shell:
        "papermill {input.notebook} {output} -p results_dir {params.results} "
        "-p data_dir {params.data} --no-progress-bar > {log} 2>&1"


rule report_html:
    input:
        f"{RESULTS}/reports/{{name}}.ipynb",
    output:
        f"{RESULTS}/reports/{{name}}.html",
    log:
        f"{RESULTS}/logs/report/{{name}}_html.log",
    localrule: True
    conda:
        "../envs/comm.yaml"
    shell:
        "jupyter nbconvert --to html {input} --output-dir $(dirname {output}) > {log} 2>&1"


rule report_index:
    input:
        f"{RESULTS}/reports/trifeatures.html",
    output:
        f"{RESULTS}/reports/index.html",
    log:
        f"{RESULTS}/logs/report/index.log",
    localrule: True
    conda:
        "../envs/comm.yaml"
    shell:
        "comm-repro index --reports {input} --out {output} > {log} 2>&1"
