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

from snakemake.exceptions import WorkflowError
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
include: "workflow/rules/real_text.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/distill.smk"


localrules:
    all,
    heldout_tasks,
    prompts,
    diversity,
    diversity_data,
    report,
    config_record,
    real_text_samples,


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    dataset="|".join(map(re.escape, config["zero_shot"]["datasets"])) or "NONE",
    setting=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


rule all:
    default_target: True
    input:
        final_targets(),
        stale_check=force_stale,




onstart:
    # The SLURM profile ships with placeholders: refuse to submit anything until the site's values are filled in.
    for job in workflow.dag.needrun_jobs():
        for key in ("slurm_partition", "slurm_account"):
            if str(job.resources.get(key, "")) == "SET-ME":
                raise WorkflowError(f"resource '{key}' is still SET-ME (rule {job.rule.name}): set {key} under "
                                    "default-resources in workflow/profiles/slurm/config.yaml (see workflow/README.md)")
