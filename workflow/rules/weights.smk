# Extractor weights as explicit inputs (docs/extractors.md "Weights"). Every weight file named in the config
# (extract.audio.weights, extract.audio.pca_params, extract.video.weights, and with those streams
# extract.clip.weights and extract.clap.weights, docs/clip_clap.md) gets:
#
#   fetch_weights_<name>  only while the file is missing: downloads it (a configured or the published URL; the
#                         VGGish SavedModel through tensorflow_hub) and, for the torch VGGish backend, converts the
#                         SavedModel into the state dict; without network or URL it fails with what is missing,
#                         where to get it and which config key to set.
#   weights               checks the file against its configured sha256 and records it in
#                         results/weights/<dataset>/<name>.json, which the extraction jobs take as input.
#
# So the shards never download concurrently and a missing or wrong file fails once, before any extraction.
# Random weights (the demo) and remote TF-Hub handles are not files: no weights job for them.
#
# The fetch rules exist only for files missing when the workflow is parsed: a rule whose output is a user's
# file that already exists would let Snakemake delete it (--forceall) before trying to download it again.


rule weights:
    input:
        get_weight_file,
    output:
        "results/weights/{dataset}/{name}.json",
    params:
        spec=lambda wildcards: WEIGHT_FILES.get(wildcards.name),
    log:
        "logs/weights/{dataset}/{name}.log",
    wildcard_constraints:
        name="vggish|vggish_pca|c3d|clip_vit_b32|wavcaps_htsat_bert",
    localrule: True
    threads: 1
    resources:
        mem_mb=1000,
        runtime=15,
    script:
        "../scripts/weights.py"


# One fetch rule per missing file (their outputs are the configured paths, which share no pattern).
for _name, _spec in WEIGHT_FILES.items():
    if os.path.exists(_spec["path"]):
        continue

    rule:
        name:
            f"fetch_weights_{_name}"
        output:
            directory(_spec["path"]) if _spec["is_dir"] else _spec["path"],
        params:
            spec=get_fetch_params(_name),
        log:
            f"logs/weights/fetch_{_name}.log",
        # Local: compute nodes of a cluster often have no network.
        localrule: True
        threads: 1
        resources:
            mem_mb=4000,
            runtime=60,
        script:
            "../scripts/weights.py"
