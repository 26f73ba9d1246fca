"""`pysedd sample` and `pysedd bench latency` end to end on tiny saved models (small vocabularies, no downloads)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pysedd.cli import main
from pysedd.config import SEDDConfig
from pysedd.model import SEDD

TOKENS = 20


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    SEDD(SEDDConfig.preset("tiny", tokens=TOKENS, hidden_size=32, cond_dim=16, n_blocks=1, n_heads=4)).save_pretrained(root / "sedd")
    GPT2LMHeadModel(GPT2Config(vocab_size=TOKENS, n_positions=64, n_embd=32, n_layer=1, n_head=2, bos_token_id=TOKENS - 1,
                               eos_token_id=TOKENS - 1)).save_pretrained(root / "gpt2")
    return root


def load(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("sampler", ["analytic", "fhs"])
def test_sample_sedd_unconditional(models, tmp_path, sampler):
    out = tmp_path / "s.npz"
    assert main(["sample", "--model", str(models / "sedd"), "--num-samples", "5", "--length", "12", "--batch-size", "2",
                 "--sampler", sampler, "--steps", "4", "--seed", "1", "--out", str(out)]) == 0
    z = load(out)
    meta = json.loads(str(z["meta"]))
    assert z["samples"].shape == (5, 12) and z["samples"].dtype == np.int64 and (z["samples"] < TOKENS).all()
    assert meta["kind"] == "sedd" and meta["sampler"] == sampler and meta["seed"] == 1 and meta["nfe"] > 0
    assert meta["wall_time"] > 0 and meta["categorical"] == "float64"
    again = tmp_path / "t.npz"
    main(["sample", "--model", str(models / "sedd"), "--num-samples", "5", "--length", "12", "--batch-size", "2",
          "--sampler", sampler, "--steps", "4", "--seed", "1", "--out", str(again)])
    assert np.array_equal(load(again)["samples"], z["samples"])


def test_sample_reference_categorical_is_the_official_loop_and_recorded(models, tmp_path):
    """--categorical reference: batch i is the official sampler's run from torch.manual_seed(seed + i) (pc_sample's
    reference loop, itself checked id for id against a transcription in test_categorical.py; one seed per batch is
    what lets an interrupted run resume from its finished batches)."""
    from pysedd.graph import Absorbing
    from pysedd.noise import LogLinear
    from pysedd.sampling import pc_sample

    out = tmp_path / "r.npz"
    assert main(["sample", "--model", str(models / "sedd"), "--num-samples", "3", "--length", "8", "--batch-size", "2",
                 "--steps", "4", "--seed", "5", "--categorical", "reference", "--device", "cpu", "--out", str(out)]) == 0
    z = load(out)
    assert json.loads(str(z["meta"]))["categorical"] == "reference"
    model = SEDD.from_pretrained(str(models / "sedd")).eval()
    want = []
    for i, b in enumerate((2, 1)):
        torch.manual_seed(5 + i)
        want.append(pc_sample(model, Absorbing(TOKENS), LogLinear(), b, 8, 4, categorical="reference").samples)
    assert np.array_equal(z["samples"], torch.cat(want).numpy())


@pytest.mark.parametrize("kind", ["sedd", "gpt2"])
def test_sample_prompt_continuation(models, tmp_path, kind):
    prompts = np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [3, 3, 3, 3, 3]])
    np.save(tmp_path / "p.npy", prompts)
    out = tmp_path / "c.npz"
    assert main(["sample", "--model", str(models / kind), "--num-samples", "4", "--batch-size", "3", "--prompts",
                 str(tmp_path / "p.npy"), "--prompt-len", "3", "--gen-len", "6", "--canvas", "16", "--steps", "3",
                 "--out", str(out)]) == 0
    z = load(out)
    assert z["samples"].shape == (4, 9)
    assert np.array_equal(z["samples"][:, :3], prompts[[0, 1, 2, 0], :3])
    assert z["prompt_index"].tolist() == [0, 1, 2, 0]
    assert json.loads(str(z["meta"]))["prompts"]["gen_len"] == 6


def test_sample_errors_are_one_line(models, tmp_path, capsys):
    base = ["sample", "--model", str(models / "sedd"), "--out", str(tmp_path / "x.npz")]
    assert main(base + ["--steps", "0"]) == 2
    assert capsys.readouterr().err.strip() == "pysedd: error: --steps must be >= 1, got 0"
    np.save(tmp_path / "p.npy", np.array([[1, 2]]))
    assert main(base + ["--prompts", str(tmp_path / "p.npy"), "--prompt-len", "3"]) == 2
    assert "shorter than --prompt-len 3" in capsys.readouterr().err
    assert main(base + ["--prompts", str(tmp_path / "p.npy"), "--prompt-len", "2", "--gen-len", "5", "--canvas", "4"]) == 2
    assert "--canvas 4 is shorter" in capsys.readouterr().err
    assert main(["sample", "--model", "tiny", "--out", str(tmp_path / "x.npz")]) == 2
    assert "pass --kind" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_bench_latency_writes_json_table_and_plot(models, tmp_path):
    out = tmp_path / "lat.json"
    assert main(["bench", "latency", "--sedd", str(models / "sedd"), "--gpt2", str(models / "gpt2"), "--steps", "2", "4",
                 "--length", "8", "--batch-size", "2", "--repeats", "2", "--warmup", "1", "--fhs", "--out", str(out),
                 "--table", str(tmp_path / "lat.md"), "--plot", str(tmp_path / "lat.png")]) == 0
    res = json.loads(out.read_text())
    rows = {(r["model"], r["sampler"], r["steps"]): r for r in res["results"]}
    assert set(rows) == {("sedd", "analytic", 2), ("sedd", "analytic", 4), ("sedd", "fhs", None), ("gpt2", "ancestral+kv", None)}
    assert rows[("sedd", "fhs", None)]["nfe"] == 8 and rows[("gpt2", "ancestral+kv", None)]["nfe"] == 8
    assert rows[("sedd", "analytic", 4)]["nfe"] <= 5
    for r in rows.values():
        assert len(r["latencies"]) == 2 and r["mean_latency"] > 0
        assert r["mean_throughput"] == pytest.approx(np.mean([16 / t for t in r["latencies"]]))
    assert "speedup_vs_gpt2" in rows[("sedd", "analytic", 2)]
    assert (tmp_path / "lat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| sedd" in (tmp_path / "lat.md").read_text()


def test_text_prompts_are_gpt2_tokenised(tmp_path):
    from pysedd.commands.sample import read_prompts

    (tmp_path / "p.jsonl").write_text(json.dumps({"text": " The quick brown fox jumps over the lazy dog."}) + "\n")
    assert read_prompts(str(tmp_path / "p.jsonl"), 4).tolist() == [[383, 2068, 7586, 21831]]
    (tmp_path / "p.txt").write_text("Hello world\n")
    assert read_prompts(str(tmp_path / "p.txt"), 2).tolist() == [[15496, 995]]


def test_killed_sampling_resumes_from_its_finished_batches(models, tmp_path):
    """kill -9 in the middle of a run leaves the finished batches in <out>.shards/ and no .npz; the rerun reuses
    them and ends with exactly the samples of an uninterrupted run (one seed per batch), then drops the shards."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["sample", "--model", str(models / "sedd"), "--num-samples", "40", "--length", "12", "--batch-size", "1",
            "--steps", "64", "--seed", "3", "--device", "cpu"]
    whole = tmp_path / "whole.npz"
    assert main([*args, "--out", str(whole)]) == 0
    out = tmp_path / "killed.npz"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pysedd", *args, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = Path(str(out) + ".shards")
    deadline = time.time() + 120
    while len(list(shards.rglob("batch-*.json"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(shards.rglob("batch-*.json")))
    assert 3 <= finished < 40 and not out.exists()
    assert main([*args, "--out", str(out)]) == 0
    assert np.array_equal(load(out)["samples"], load(whole)["samples"]) and not shards.exists()
