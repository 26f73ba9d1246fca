"""pysedd workflow: tokenise -> train SEDD, GPT-2 and an AR judge -> export -> sample -> every evaluation of
"Promises, Outlooks and Challenges of Diffusion Language Modeling" -> report.

    snakemake --cores all                                   # the embedded demo (config.yaml), offline
    snakemake --cores all --configfile config/paper.yaml     # the paper at full scale (pretrained, by hub id)
    snakemake --workflow-profile workflow/profiles/slurm --configfile config/paper.yaml   # on a SLURM cluster
    snakemake --report report.html                          # HTML report with the tables and the latency figure

See workflow/README.md.
"""
import os
import re

from snakemake.utils import min_version

min_version("9.0")


# config.yaml (the demo) is the default; a --configfile replaces it instead of being merged into it, so a full-scale
# config never inherits the demo's models or datasets.
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/eval.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/distill.smk"


localrules:
    all,
    export,
    heldout_tasks,
    prompts,
    diversity,
    diversity_data,
    report,
    models_record,


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    dataset="|".join(map(re.escape, config["zero_shot"]["datasets"])) or "NONE",
    setting=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


rule all:
    default_target: True
    input:
        final_targets(),
