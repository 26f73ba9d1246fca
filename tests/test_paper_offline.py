"""config/paper.yaml end to end without the hub: tiny SEDD and GPT-2 models saved under the paper's hub ids in a
Hugging Face cache built here (models--org--name/snapshots/<commit>/, refs/main), the corpora as local files, and an
override config that cuts every size down to seconds. Every stage of the paper's DAG runs through its hub-id code
path (`--model louaaron/sedd-small`, `--judge gpt2-large`, ...), and the report lays the results out as the paper."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("snakemake")

REPO = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SEDD_IDS = ("louaaron/sedd-small", "louaaron/sedd-medium")
GPT2_IDS = ("gpt2", "gpt2-medium", "gpt2-large")


def snapshot_dir(cache: Path, repo_id: str) -> Path:
    """Where huggingface_hub keeps a repo's files at COMMIT, with refs/main pointing there."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def build_hub_cache(cache: Path) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from pysedd.config import SEDDConfig
    from pysedd.model import SEDD
    from pysedd.tokenizer import get_tokenizer

    torch.manual_seed(0)
    for repo_id in SEDD_IDS:  # a 1024-token canvas, as the released models (gen-1024 needs it)
        SEDD(SEDDConfig.preset("tiny", length=1024)).save_pretrained(snapshot_dir(cache, repo_id))
    for repo_id in GPT2_IDS:
        config = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=32, n_layer=1, n_head=2)
        GPT2LMHeadModel(config).save_pretrained(snapshot_dir(cache, repo_id))
        # the real repos ship GPT-2's tokenizer, which mauve-text's featurisation loads by the same id
        get_tokenizer().as_transformers_tokenizer().save_pretrained(snapshot_dir(cache, repo_id))


def head(src: Path, dst: Path, lines: int) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, encoding="utf-8") as f:
        dst.write_text("".join(f.readline() for _ in range(lines)))
    return str(dst)


@pytest.mark.slow
def test_paper_config_end_to_end_on_an_offline_hub_cache(tmp_path, shared_data):
    hf_home = tmp_path / "hf"
    build_hub_cache(hf_home / "hub")
    work = tmp_path / "work"
    res = work / "resources"
    # What a user downloads first (config/paper.yaml's header), cut to a few lines; the hub corpora as local files.
    head(shared_data / "webtext/webtext.test.jsonl", res / "webtext.test.jsonl", 40)
    head(shared_data / "openwebtext/openwebtext_sample.txt", res / "openwebtext.txt", 60)
    head(shared_data / "openwebtext/openwebtext_sample.txt", res / "openwebtext-train.txt", 120)
    head(shared_data / "ptb/ptb.test.txt", res / "ptb.test.txt", 60)
    head(shared_data / "lm1b/1b_benchmark.test.tokens", res / "lm1b.test.txt", 60)
    lambada = head(shared_data / "lambada/lambada_test.jsonl", res / "lambada.jsonl", 20)
    wiki = head(shared_data / "wikitext-2-raw/wiki.test.raw", res / "wiki.test.raw", 60)
    override = {
        "pysedd": f"{sys.executable} -m pysedd",
        "seq_len": 64,
        "gpus_per_job": 0,
        "zero_shot": {"datasets": {"LAMBADA": {"path": [lambada]}, "WikiText2": {"path": [wiki]},
                                   "WikiText103": {"path": [wiki]}},
                      "options": {"mc_samples": 1, "batch_size": 2, "limit": 1}},
        "lm_eval": {"local_data": "heldout", "heldout_docs": 4, "options": {"mc_samples": 1, "batch_size": 4, "limit": 1}},
        "unconditional": {"num_samples": 2, "length": 32, "batch_size": 2, "sedd": {"steps": [100]}},
        "real_text": {"num_sequences": 2},
        "gen_ppl": {"batch_size": 2},
        "mauve": {"prompts": {"num_prompts": 4}, "prompt_len": 8, "gen_len": 8, "steps": [128], "batch_size": 4,
                  "seeds": [1], "num_buckets": 2},
        "latency": {"sedd": "tiny", "gpt2": "tiny", "steps": [64], "length": 32, "repeats": 1, "warmup": 0},
        "distill": {"rounds": 1, "steps": 4, "nproc": 1, "options": {"train_steps": 2, "batch_size": 2,
                                                                      "warmup_steps": 0, "log_every": 1, "ckpt_every": 2}},
        "frontier": {"steps": [2, 4], "fhs_k": [1], "num_samples": 2, "length": 32, "batch_size": 2},
    }
    (work / "small.yaml").write_text(yaml.safe_dump(override))
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    configs = ["--configfile", str(REPO / "config/paper.yaml"), str(work / "small.yaml")]
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work),
                           "--cores", "2", *configs], capture_output=True, text=True, env=env)
    if proc.returncode:
        logs = "\n".join(f"== {p}\n{p.read_text()[-1500:]}" for p in sorted((work / "results/paper/logs").rglob("*.log")))
        pytest.fail(proc.stderr[-4000:] + logs[-8000:])
    results = work / "results/paper"
    # every stage ran on the hub ids: the records name them as the model source
    zs = json.loads((results / "eval/zero-shot/sedd-medium/1BW.json").read_text())
    assert zs["model"]["source"] == "louaaron/sedd-medium"
    assert json.loads((results / "eval/gen-ppl/gpt2/nucleus-0.95.json").read_text())["judge"]["source"] == "gpt2-large"
    assert (results / "eval/mauve/sedd-small/gen-1024-T128.json").is_file()
    assert (results / "eval/mauve/gpt2-medium/top-k-50.json").is_file()
    text = (results / "report.md").read_text()
    for n in range(1, 8):
        assert f"### Table {n}" in text
    assert "| GPT-2 large | 774M |" in text and "| OpenWebText |" in text and "Within tolerance" in text
    assert "![Figure 1: latency]" in text
    # the frontier (frontier.in_report): the teacher and GPT-2 by hub id, the round-0 student at 2 steps
    frontier = text[text.index("### Quality-latency frontier"):]
    assert "| SEDD distilled | T=2 |" in frontier and "| GPT-2 | top-p 0.95 |" in frontier
    assert (results / "report/frontier.png").is_file()
    # the plan of the cut-down config: the latency presets and the 256/512/1024-step rows are what it leaves out
    plan = subprocess.run([sys.executable, "-m", "pysedd", "report", "--plan", *configs], capture_output=True,
                          text=True, env=env, cwd=work)
    assert plan.stdout.splitlines()[-1] == "paper cells planned: 95/137", plan.stdout[-3000:]
    shutil.rmtree(hf_home)
