# The synthetic demo dataset: real video files (several containers, codecs and frame rates) plus the
# benchmark-style class/video lists, generated with PyAV from config["demo"]. Only runs for dataset: demo.
# It also writes a held-out set for prediction (results/demo/heldout/): new videos of the test-unseen classes
# and of classes in no split, one broken file, and a class list with names never trained on.


rule demo:
    output:
        videos=directory("results/demo/videos"),
        lists=directory("results/demo/official"),
        summary="results/demo/demo.json",
        heldout_videos=directory("results/demo/heldout/videos"),
        heldout_classes="results/demo/heldout/classes.txt",
        heldout_labels="results/demo/heldout/labels.tsv",
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
