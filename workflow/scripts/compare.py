"""Rule compare: every method's test metrics beside the published ones (TSV, Markdown, chart)."""


from extractors.jobs import start_job
from model.compare import write_comparison


def main(smk) -> None:
    start_job(smk.log[0])
    write_comparison(smk.input.metrics, smk.output.table, smk.output.markdown, smk.output.chart)


main(snakemake)  # noqa: F821 (the script directive injects `snakemake`)
