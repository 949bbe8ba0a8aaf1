# The synthetic demo dataset: real video files (several containers, codecs and frame rates) plus the
# benchmark-style class/video lists, generated with PyAV from config["demo"]. Only runs for dataset: demo.


rule demo:
    output:
        videos=directory("results/demo/videos"),
        lists=directory("results/demo/official"),
        summary="results/demo/demo.json",
    params:
        demo=config["demo"],
    log:
        "logs/demo/demo.log",
    benchmark:
        "benchmarks/demo/demo.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=15,
    script:
        "../scripts/demo.py"
