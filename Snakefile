# avgzsl: raw videos -> VGGish/C3D features (Zarr) -> benchmark splits -> TCAF -> results table and report.
#
# Stages live in workflow/rules/*.smk, one module each; Python logic lives in the extractors/, data_splits/
# and model/ packages, called by the thin adapters in workflow/scripts/. Outputs go to results/<stage>/,
# logs to logs/<stage>/, per-job benchmarks to benchmarks/<stage>/ (relocate all with --directory).
#
#   snakemake --cores 2                                   # the synthetic demo (config/config.yaml)
#   snakemake --cores 8 --configfile config/ucf.yaml      # a benchmark dataset (see config/README.md)
#   snakemake --report results/report.html                # HTML report of the last run

import os

from snakemake.utils import min_version

min_version("9.21")


# The demo's config (config/config.yaml), found beside this Snakefile whatever the working directory
# (--directory). Config files given with --configfile replace it instead of being merged over it, so
# that a benchmark run never inherits the demo's values: keys they leave out take the schema's defaults.
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


# Jobs run in the current environment unless --sdm conda/apptainer is given; the directives document
# (and, with --sdm, provide) the software stack of every rule.
container: "docker://condaforge/miniforge3:24.11.3-0"
conda: "workflow/envs/avgzsl.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


# Feature extraction is split into this many shards (one job and one Zarr store each); retune per site
# with --set-scatter extract=N without editing the config.
scattergather:
    extract=get_n_shards(),


include: "workflow/rules/demo.smk"
include: "workflow/rules/manifest.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/released.smk"
include: "workflow/rules/class_embeddings.smk"
include: "workflow/rules/splits.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/predict.smk"


rule all:
    default_target: True
    localrule: True
    input:
        get_final_outputs(),
