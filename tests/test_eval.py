"""Evaluations: metrics against hand-computed values, GPT-2 perplexities against transformers' own loss, MAUVE on
identical and shifted features, resumable shards, and clear errors on bad input. Tiny random models, no downloads."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from pysedd.cli import main
from pysedd.errors import UserError
from pysedd.eval import diversity, gen_ppl, mauve_eval, zero_shot
from pysedd.eval.common import ShardCache, ar_token_nll, derived_seed, load_model, load_samples
from pysedd.tokenizer import get_tokenizer

TEXT = ("The quick brown fox jumps over the lazy dog. A stitch in time saves nine. "
        "All that glitters is not gold, and not all those who wander are lost.\n") * 3


@pytest.fixture(scope="module")
def tokenizer():
    from pysedd.tokenizer import get_tokenizer

    return get_tokenizer()


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory):
    """A random 2-layer GPT-2 with the real vocabulary, saved the way transformers (and pysedd train) save it."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=2))
    path = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(path)
    get_tokenizer().as_transformers_tokenizer().save_pretrained(path)  # mauve-text loads the featurizer's tokenizer
    return path


@pytest.fixture(scope="module")
def judge(tiny_gpt2_dir):
    return load_model(str(tiny_gpt2_dir))


def hf_loss(model, ids: torch.Tensor) -> torch.Tensor:
    """transformers' own mean next-token loss of each row (float64 on the logits, as ours)."""
    with torch.no_grad():
        return torch.stack([model(input_ids=row[None], labels=row[None]).loss.double() for row in ids])


# -- diversity ------------------------------------------------------------------------------------------------------

def test_ngram_repetition_by_hand_and_brute_force():
    x = [1, 2, 3, 1, 2, 3, 9]  # 3-grams: 123 231 312 123 239; only the second 123 repeats, 3 positions after the first
    assert diversity.repetition_rate(x, 100, 3) == pytest.approx(1 / 4)
    assert diversity.repetition_rate(x, 2, 3) == 0.0
    assert diversity.repetition_rate(x, 3, 3) == pytest.approx(1 / 4)
    rng = np.random.default_rng(0)
    for n, window in ((1, 100), (2, 5), (3, 100), (3, 7)):  # the caption's sentence, transcribed for n-grams
        seq = rng.integers(0, 4, size=60).tolist()
        grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
        brute = sum(grams[i] in grams[max(0, i - window):i] for i in range(1, len(grams))) / (len(grams) - 1)
        assert diversity.repetition_rate(seq, window, n) == pytest.approx(brute)
    m = diversity.diversity([x, x[::-1]], window=100)
    assert m["repetition_rate_100_3gram"]["mean"] == pytest.approx(1 / 4)  # reversed: 932 321 213 132 321
    assert m["repetition_rate_100"]["mean"] == pytest.approx(np.mean([diversity.repetition_rate(x), 1 / 2]))


def test_diversity_metrics_by_hand():
    x = [1, 2, 1, 3]
    assert diversity.unique_unigram_fraction(x) == 0.75
    assert diversity.unigram_entropy(x) == pytest.approx(1.5 * math.log(2))
    assert diversity.repetition_rate(x) == pytest.approx(1 / 3)  # only x_2 = 1 repeats (x_0)
    assert diversity.repetition_rate(x, window=1) == 0.0  # x_0 is 2 positions back from x_2
    assert diversity.repetition_rate([5, 5, 5, 5, 5]) == 1.0
    assert diversity.distinct_n([[1, 2, 1, 2]], 2) == pytest.approx(2 / 3)
    m = diversity.diversity([[1, 2, 1, 3], [4, 4, 4, 4]], distinct=[1])
    assert m["unique_unigram_fraction"]["mean"] == pytest.approx((0.75 + 0.25) / 2)
    assert m["unique_unigram_fraction"]["std"] == pytest.approx(math.sqrt(2 * 0.25 ** 2))  # ddof=1
    assert m["unigram_entropy"]["mean"] == pytest.approx(0.75 * math.log(2))
    assert m["distinct_1"] == pytest.approx(4 / 8)


def test_diversity_rejects_short_samples():
    with pytest.raises(UserError, match="at least 4 tokens"):
        diversity.diversity([[1]])


# -- autoregressive scoring -----------------------------------------------------------------------------------------

def test_ar_nll_matches_transformers_loss(judge):
    ids = torch.randint(0, 50257, (3, 40), generator=torch.Generator().manual_seed(1))
    ours = ar_token_nll(judge.model, ids)
    assert ours.dtype == torch.float64 and ours.shape == (3, 39)
    torch.testing.assert_close(ours.mean(1), hf_loss(judge.model, ids), rtol=1e-5, atol=1e-5)


def test_ar_nll_sliding_window_for_long_rows(judge):
    ids = torch.randint(0, 50257, (2, 150), generator=torch.Generator().manual_seed(2))  # > 64 positions
    nll = ar_token_nll(judge.model, ids)
    assert nll.shape == (2, 149) and torch.isfinite(nll).all()
    torch.testing.assert_close(nll[:, :63], ar_token_nll(judge.model, ids[:, :64]))  # first window: full context
    # windows advance by a stride of 32: token 96 opens the third window, ids[64:128], so its context is ids[64:96]
    torch.testing.assert_close(nll[:, 95], ar_token_nll(judge.model, ids[:, 64:97])[:, -1])
    # token 95 closes the second window, ids[32:96]
    torch.testing.assert_close(nll[:, 94], ar_token_nll(judge.model, ids[:, 32:96])[:, -1])


# -- zero-shot perplexity -------------------------------------------------------------------------------------------

def test_zero_shot_gpt2_matches_transformers(judge, tokenizer, tmp_path):
    from pysedd.data.detokenize import ptb_detokenizer

    lines = ["the company said it expects N sales to rise", "mr. smith 's shares fell <unk> N %", "", "it was n't clear"] * 6
    path = tmp_path / "ptb.test.txt"
    path.write_text("\n".join(" " + line + " " for line in lines) + "\n")
    settings = zero_shot.ZeroShotSettings(seq_len=16, batch_size=4, shard_size=2)
    res = zero_shot.evaluate_dataset(judge, "ptb", [str(path)], settings, tokenizer, str(tmp_path / "zs.json"), progress=False)
    # the same chunks built by hand: detokenise, tokenise, EOS after every row, 16-token blocks, remainder dropped
    stream = [t for line in lines for t in tokenizer.encode(ptb_detokenizer(line.strip())) + [50256]]
    n = len(stream) // 16
    chunks = torch.tensor(stream[: n * 16]).view(n, 16)
    assert res["metrics"]["n_sequences"] == n and res["metrics"]["n_tokens"] == n * 15
    losses = hf_loss(judge.model, chunks)
    assert res["metrics"]["mean_then_exp"] == pytest.approx(math.exp(losses.mean().item()), rel=1e-6)
    assert res["metrics"]["exp_then_mean"] == pytest.approx(losses.exp().mean().item(), rel=1e-6)
    assert res["metrics"]["exp_then_mean"] >= res["metrics"]["mean_then_exp"]
    assert not res["metrics"]["bound"]
    # resuming reads the finished shards instead of scoring again
    shards = list((tmp_path / "zs.json.shards").glob("*/chunks_*.json"))
    assert len(shards) == math.ceil(n / 2)
    again = zero_shot.evaluate_dataset(judge, "ptb", [str(path)], settings, tokenizer, str(tmp_path / "zs.json"), progress=False)
    assert again["metrics"] == res["metrics"]


def test_zero_shot_eos_convention_scores_every_token(judge, tokenizer, tmp_path):
    path = tmp_path / "wiki.test.raw"
    path.write_text(" = Title = \n \n" + " The cat sat on the mat @-@ like thing , it said . \n" * 8)
    settings = zero_shot.ZeroShotSettings(seq_len=16, batch_size=4, ar_first_token="eos")
    res = zero_shot.evaluate_dataset(judge, "wikitext2", [str(path)], settings, tokenizer, str(tmp_path / "z.json"),
                                     resume=False, progress=False)
    assert res["data"]["chunk_len"] == 15
    assert res["metrics"]["n_tokens"] == 15 * res["metrics"]["n_sequences"]


def test_zero_shot_bad_inputs(judge, tokenizer, tmp_path):
    settings = zero_shot.ZeroShotSettings(seq_len=16)
    with pytest.raises(UserError, match="unknown corpus"):
        zero_shot.evaluate_dataset(judge, "wikitext5", [], settings, tokenizer, str(tmp_path / "z.json"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(UserError, match="no complete 16-token chunk"):
        zero_shot.evaluate_dataset(judge, "ptb", [str(empty)], settings, tokenizer, str(tmp_path / "z.json"))
    with pytest.raises(UserError, match="longer than the model's context"):
        zero_shot.evaluate_dataset(judge, "ptb", [str(empty)], zero_shot.ZeroShotSettings(seq_len=1024), tokenizer,
                                   str(tmp_path / "z.json"))


# -- generative perplexity ------------------------------------------------------------------------------------------

def test_gen_ppl_modes_by_hand(judge, tokenizer, tmp_path):
    ids = tokenizer.encode(TEXT)
    samples = np.array([ids[:20], ids[10:30], ids[20:40], ids[30:50]], dtype=np.int64)
    samples[1, 8] = 50256  # an EOS inside sample 1
    settings = gen_ppl.GenPPLSettings(modes=("b", "a", "c", "d"), batch_size=2, shard_size=3)
    res = gen_ppl.evaluate_samples(judge, samples, {}, {"path": "x.npz", "sha256": "0"}, settings, tokenizer,
                                   str(tmp_path / "g.json"), progress=False)
    x = torch.from_numpy(samples)
    loss = hf_loss(judge.model, x)  # per-sample mean NLL of tokens 2..L
    assert res["gen_ppl"] == res["modes"]["b"] == pytest.approx(math.exp(loss.mean().item()), rel=1e-6)
    assert res["modes"]["a"] == pytest.approx(loss.exp().mean().item(), rel=1e-6)
    # (d): EOS targets excluded, exp of each batch's token mean, averaged over the two batches of 2
    nll = ar_token_nll(judge.model, x)
    keep = x[:, 1:] != 50256
    batch = [math.exp(nll[i:i + 2][keep[i:i + 2]].mean().item()) for i in (0, 2)]
    assert res["modes"]["d"] == pytest.approx(np.mean(batch), rel=1e-6)
    # (c): retokenised text scored up to and including the first EOS (sample 1 stops at its EOS)
    tot, cnt = 0.0, 0
    for row in samples:
        toks = tokenizer.encode(tokenizer.decode(row.tolist()))
        n = ar_token_nll(judge.model, torch.tensor([toks]))[0]
        targets = torch.tensor(toks[1:])
        end = int((targets == 50256).nonzero()[0]) + 1 if (targets == 50256).any() else len(targets)
        tot, cnt = tot + n[:end].sum().item(), cnt + end
    assert res["modes"]["c"] == pytest.approx(math.exp(tot / cnt), rel=1e-6)
    assert res["unigram_entropy"]["mean"] == pytest.approx(np.mean([diversity.unigram_entropy(r.tolist()) for r in samples]))


def test_gen_ppl_and_diversity_cli(tiny_gpt2_dir, tokenizer, tmp_path, capsys):
    ids = tokenizer.encode(TEXT)
    path = tmp_path / "samples.npz"
    np.savez(path, samples=np.array([ids[:24], ids[24:48]], dtype=np.int64), meta=json.dumps({"model": "m", "steps": 8, "categorical": "reference"}))
    out = tmp_path / "genppl.json"
    assert main(["eval", "gen-ppl", "--samples", str(path), "--judge", str(tiny_gpt2_dir), "--out", str(out),
                 "--table", str(tmp_path / "g.md"), "--quiet", "--device", "cpu"]) == 0
    result = json.loads(out.read_text())
    assert result["evaluation"] == "gen-ppl" and result["results"][str(path)]["primary_mode"] == "b"
    assert result["protocol"]["primary_mode"] == "b"
    assert result["protocol"]["categorical"] == {str(path): "reference"}  # the draw that made the samples
    assert result["judge"]["fingerprint"]["sha256"]["config.json"]
    assert "Gen PPL (b)" in (tmp_path / "g.md").read_text()
    text = tmp_path / "train.txt"
    text.write_text(TEXT * 4)
    out = tmp_path / "div.json"
    assert main(["eval", "diversity", "--samples", str(path), "--reference", str(text), "--distinct-n", "1", "2",
                 "--out", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert [r["kind"] for r in result["results"].values()] == ["samples", "reference"]
    assert result["protocol"]["paper_column"] == "repetition_rate_100_3gram"
    assert result["protocol"]["categorical"] == {str(path): "reference"}
    assert result["results"][str(text)]["metrics"]["lengths"] == [24]
    capsys.readouterr()


def test_bad_samples_give_one_line_errors(tiny_gpt2_dir, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, other=np.zeros(3))
    assert main(["eval", "diversity", "--samples", str(bad), "--out", str(tmp_path / "d.json")]) == 2
    assert "has no 'samples' array" in capsys.readouterr().err
    masked = tmp_path / "masked.npz"
    np.savez(masked, samples=np.full((2, 8), 50257, dtype=np.int64))
    assert main(["eval", "gen-ppl", "--samples", str(masked), "--judge", str(tiny_gpt2_dir), "--out",
                 str(tmp_path / "g.json"), "--quiet"]) == 2
    assert "MASK" in capsys.readouterr().err
    assert main(["eval", "gen-ppl", "--samples", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "g.json")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["gen-ppl", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["gen-ppl", "--limit", "0"], "--limit must be >= 1, got 0"),
    (["diversity", "--window", "0"], "--window must be >= 1, got 0"),
    (["diversity", "--distinct-n", "2", "0"], "--distinct-n must be >= 1"),
    (["zero-shot", "--datasets", "nosuchds"], "unknown corpus 'nosuchds'"),
])
def test_eval_bad_numbers_and_names_give_one_line(args, message, tiny_gpt2_dir, tokenizer, tmp_path, capsys):
    """Each is refused before any model is loaded or work is done: one line, exit 2, naming the problem."""
    path = tmp_path / "samples.npz"
    np.savez(path, samples=np.array([tokenizer.encode(TEXT)[:16]], dtype=np.int64))
    where = {"gen-ppl": ["--samples", str(path), "--judge", str(tiny_gpt2_dir)], "diversity": ["--samples", str(path)],
             "zero-shot": ["--model", str(tiny_gpt2_dir), "--length", "100000"]}[args[0]]
    out = tmp_path / "out.json"
    assert main(["eval", *args, *where, "--out", str(out), "--quiet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pysedd: error:") and message in err[0]
    assert not out.exists()


def test_load_samples_reads_meta(tmp_path):
    path = tmp_path / "s.npz"
    np.savez(path, samples=np.arange(8).reshape(2, 4), meta=json.dumps({"sampler": "analytic"}))
    samples, meta, fp = load_samples(path)
    assert samples.dtype == np.int64 and meta == {"sampler": "analytic"} and len(fp["sha256"]) == 64


# -- MAUVE ----------------------------------------------------------------------------------------------------------

def test_mauve_identical_vs_shifted_features():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(300, 16)).astype(np.float32)
    same = mauve_eval.mauve_scores(p, p.copy(), seeds=[1, 2], num_buckets=10, scaling_factor=5)
    shifted = mauve_eval.mauve_scores(p, p + 3.0, seeds=[1, 2], num_buckets=10, scaling_factor=5)
    assert min(same) > 0.99
    assert max(shifted) < 0.1
    assert mauve_eval.default_buckets(300, 1500) == 30


def test_mauve_end_to_end_with_gpt2(judge, tokenizer, tmp_path):
    prompts = tmp_path / "webtext.jsonl"
    docs = [{"text": f"Document {i}: " + TEXT[i:]} for i in range(30)] + [{"text": "too short"}]
    prompts.write_text("".join(json.dumps(d) + "\n" for d in docs))
    settings = mauve_eval.MauveSettings(prompt_len=6, gen_len=6, n_prompts=25, mauve_seeds=(1, 2), batch_size=8,
                                        shard_size=10, features="ids")
    refs, info = mauve_eval.load_prompts(str(prompts), settings, tokenizer)
    assert refs.shape == (25, 12) and info["n_prompts"] == 25
    res = mauve_eval.evaluate(judge, judge, refs, settings, str(tmp_path / "m.json"), progress=False)
    gens = np.asarray(res["generations"])
    assert gens.shape == (25, 6)
    assert res["mauve"]["num_buckets"] == 2 and 0.0 <= res["mauve"]["mean"] <= 1.0
    full = torch.from_numpy(np.concatenate([refs[:, :6], gens], axis=1))
    expected = ar_token_nll(judge.model, full)[:, 5:]
    assert res["continuation_ppl"]["mean_then_exp"] == pytest.approx(math.exp(expected.mean().item()), rel=1e-6)
    # the same continuations given as pre-generated samples give the same numbers
    again = mauve_eval.evaluate(None, judge, refs, settings, str(tmp_path / "m2.json"), samples=full.numpy(), progress=False)
    assert again["mauve"]["mean"] == pytest.approx(res["mauve"]["mean"])
    assert res["protocol"]["features"] == "ids"
    # the default text path: mauve-text's own call on the decoded texts, recorded as such
    text = mauve_eval.evaluate(None, judge, refs, dataclasses.replace(settings, features="text"), str(tmp_path / "m3.json"),
                               samples=full.numpy(), progress=False, tokenizer=tokenizer)
    expected, _ = mauve_eval.text_mauve_scores([tokenizer.decode(r) for r in refs.tolist()],
                                               [tokenizer.decode(r) for r in full.tolist()], str(judge.source), [1, 2], 100)
    assert [text["mauve"]["per_seed"][s] for s in ("1", "2")] == expected
    assert text["protocol"]["features"] == "text" and text["protocol"]["max_text_length"] == 100


TEXTS_P = [f"Report {i}: the river rose {i} feet overnight and the town council met at dawn." for i in range(24)]
TEXTS_Q = [f"Item {i}: hel" + "lo " * (i % 5 + 1) + "world, said the parrot to nobody in particular." for i in range(24)]


def test_mauve_text_path_is_mauve_texts_own_call(tiny_gpt2_dir):
    """The text path equals `mauve.compute_mauve(p_text, q_text, featurize_model_name, max_text_length, seed)`, and its
    features are an independent transcription: the featurizer's own tokenisation truncated to max_text_length, the
    last-layer hidden state of the last token."""
    import mauve
    from transformers import AutoModel, AutoTokenizer

    scores, buckets = mauve_eval.text_mauve_scores(TEXTS_P, TEXTS_Q, str(tiny_gpt2_dir), [1, 3], max_text_length=12)
    for seed, score in zip([1, 3], scores):
        direct = mauve.compute_mauve(p_text=TEXTS_P, q_text=TEXTS_Q, featurize_model_name=str(tiny_gpt2_dir),
                                     max_text_length=12, seed=seed, verbose=False)
        assert score == direct.mauve and buckets == direct.num_buckets == 2
    feats = mauve_eval.text_features(TEXTS_Q[:3], str(tiny_gpt2_dir), 12, -1)
    tok, model = AutoTokenizer.from_pretrained(tiny_gpt2_dir), AutoModel.from_pretrained(tiny_gpt2_dir).eval()
    for text, f in zip(TEXTS_Q[:3], feats):
        ids = torch.tensor([tok(text)["input_ids"][:12]])
        with torch.no_grad():
            expected = model(input_ids=ids).last_hidden_state[0, -1]
        assert np.allclose(f, expected.numpy(), atol=1e-5)


def test_mauve_text_path_offline_hub_cache_and_any_directory(tiny_gpt2_dir, tmp_path, monkeypatch):
    """A hub id read from an offline HF cache, and a directory whose name mauve-text would refuse, both featurise."""
    import shutil

    import huggingface_hub.constants

    snapshot = tmp_path / "hub" / "models--gpt2" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_gpt2_dir, snapshot)
    (tmp_path / "hub" / "models--gpt2" / "refs").mkdir()
    (tmp_path / "hub" / "models--gpt2" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    judge = load_model("gpt2", "gpt2")
    assert mauve_eval.featurizer_name(judge) == "gpt2"
    reference = mauve_eval.text_features(TEXTS_P[:4], str(tiny_gpt2_dir), 100, -1)
    assert np.array_equal(mauve_eval.text_features(TEXTS_P[:4], "gpt2", 100, -1), reference)
    plain = tmp_path / "judge-model"
    shutil.copytree(tiny_gpt2_dir, plain)
    assert np.array_equal(mauve_eval.text_features(TEXTS_P[:4], str(plain), 100, -1), reference)
    with pytest.raises(UserError, match="contains 'gpt2' or 'bert'"):
        mauve_eval.text_features(TEXTS_P[:4], "EleutherAI/pythia-70m", 100, -1)


def test_mauve_bad_inputs(judge, tokenizer, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"text": "short text"}) + "\n")
    settings = mauve_eval.MauveSettings(prompt_len=6, gen_len=6)
    with pytest.raises(UserError, match="no document"):
        mauve_eval.load_prompts(str(prompts), settings, tokenizer)
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="empty"):
        mauve_eval.load_prompts(str(empty), settings, tokenizer)
    refs = np.zeros((2, 100), dtype=np.int64)
    with pytest.raises(UserError, match="longer than the judge's context"):
        mauve_eval.evaluate(judge, judge, refs, mauve_eval.MauveSettings(), str(tmp_path / "m.json"))
    with pytest.raises(UserError, match="do not start with the prompts"):
        mauve_eval.evaluate(None, judge, refs[:, :12], settings, str(tmp_path / "m.json"),
                            samples=np.ones((2, 12), dtype=np.int64))


def test_shard_cache_keys_on_settings(tmp_path):
    a = ShardCache(tmp_path / "r.json", {"seed": 0})
    a.put("s0", [1, 2])
    assert ShardCache(tmp_path / "r.json", {"seed": 0}).get("s0") == [1, 2]
    assert ShardCache(tmp_path / "r.json", {"seed": 1}).get("s0") is None
    assert ShardCache(tmp_path / "r.json", {"seed": 0}, enabled=False).get("s0") is None


def test_training_run_directories_load_from_export(tiny_gpt2_dir, tiny_sedd_dir, tmp_path):
    """`pysedd train` leaves RUN_DIR/export/; passing RUN_DIR itself works for either model."""
    import shutil

    for name, source, kind in (("gpt2-run", tiny_gpt2_dir, "gpt2"), ("sedd-run", tiny_sedd_dir, "sedd")):
        shutil.copytree(source, tmp_path / name / "export")
        lm = load_model(str(tmp_path / name))
        assert lm.kind == kind and lm.fingerprint["path"].endswith("export")


def test_model_kind_detection_errors(tmp_path):
    with pytest.raises(UserError, match="no such model directory"):
        load_model("./does-not-exist")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="neither a SEDD nor a transformers config"):
        load_model(str(tmp_path))


def test_zero_shot_cli_on_offline_copies(shared_data, tiny_gpt2_dir, tmp_path, capsys):
    out, table = tmp_path / "zs.json", tmp_path / "zs.md"
    argv = ["eval", "zero-shot", "--model", str(tiny_gpt2_dir), "--datasets", "lambada", "wikitext2",
            "--data-file", f"lambada={shared_data / 'lambada/lambada_test.jsonl'}",
            "--data-file", f"wikitext2={shared_data / 'wikitext-2-raw/wiki.test.raw'}",
            "--length", "64", "--limit", "3", "--out", str(out), "--table", str(table), "--quiet"]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["settings"]["ar_first_token"] == "skip" and "tokens 2..64" in result["scoring"]
    lam = result["datasets"]["lambada"]
    assert lam["data"]["source"]["files"][str(shared_data / "lambada/lambada_test.jsonl")].startswith("4aa8d02c")
    assert lam["metrics"]["n_sequences"] == 3 and lam["metrics"]["n_tokens"] == 3 * 63
    assert "| LAMBADA | WikiText2 |" in table.read_text()
    assert main(argv[:-1] + ["--data-file", "ptb=x.txt"]) == 2
    assert "not in --datasets" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_sedd_dir(tmp_path_factory):
    from pysedd.config import SEDDConfig
    from pysedd.model import SEDD

    torch.manual_seed(0)
    model = SEDD(SEDDConfig.preset("tiny", hidden_size=32, cond_dim=16, n_heads=2, length=64))
    with torch.no_grad():
        model.output_layer.linear.weight.normal_(0, 0.05)
    path = tmp_path_factory.mktemp("tiny-sedd")
    model.save_pretrained(path)
    return path


def test_zero_shot_sedd_is_a_bound_over_the_same_chunks(tiny_sedd_dir, tokenizer, tmp_path):
    from pysedd.likelihood import sequence_nelbo

    lm = load_model(str(tiny_sedd_dir))
    assert lm.kind == "sedd"
    path = tmp_path / "lm1b.txt"
    path.write_text("The cat sat on the mat .\nIt was a sunny day , he said .\n" * 6)
    settings = zero_shot.ZeroShotSettings(seq_len=16, n_samples=4, seed=7, batch_size=4, shard_size=2)
    res = zero_shot.evaluate_dataset(lm, "lm1b", [str(path)], settings, tokenizer, str(tmp_path / "z.json"), progress=False)
    m = res["metrics"]
    assert m["bound"] and m["n_tokens"] == 16 * m["n_sequences"]  # every token of a chunk is scored
    blocks, _ = zero_shot.load_chunks("lm1b", [str(path)], settings, 16, tokenizer)
    nll = [float(sequence_nelbo(lm.model, lm.graph, lm.noise, torch.from_numpy(blocks[i:i + 1]), n_samples=4,
                                seed=derived_seed(7, i), batch_size=4).nelbo[0]) for i in range(len(blocks))]
    assert m["nll_per_token"] == pytest.approx(sum(nll) / (16 * len(nll)), rel=1e-6)
    assert m["mean_then_exp"] == pytest.approx(math.exp(m["nll_per_token"]))
    assert "≤" in zero_shot.table([{"model": {"source": "tiny"}, "datasets": {"lm1b": res}}])


def test_mauve_sedd_generation_keeps_the_prompt(tiny_sedd_dir, judge, tokenizer, tmp_path):
    lm = load_model(str(tiny_sedd_dir))
    refs = np.array([tokenizer.encode(TEXT)[i:i + 8] for i in range(12)], dtype=np.int64)
    settings = mauve_eval.MauveSettings(prompt_len=4, gen_len=4, canvas=16, steps=4, n_prompts=12, mauve_seeds=(1,),
                                        batch_size=6)
    res = mauve_eval.evaluate(lm, judge, refs, settings, str(tmp_path / "m.json"), progress=False)
    assert np.asarray(res["generations"]).shape == (12, 4)
    prompts = torch.from_numpy(refs[:3, :4])
    x = mauve_eval.generate(lm, prompts, settings, seed=0)
    assert x.shape == (3, 8) and torch.equal(x[:, :4], prompts)
    x = mauve_eval.generate(lm, prompts, dataclasses.replace(settings, categorical="reference"), seed=0)
    assert x.shape == (3, 8) and torch.equal(x[:, :4], prompts)
    with pytest.raises(UserError, match="unknown categorical draw 'float32'"):  # the setting reaches the sampler
        mauve_eval.generate(lm, prompts, dataclasses.replace(settings, categorical="float32"), seed=0)
    with pytest.raises(UserError, match="canvas 6 cannot hold"):
        mauve_eval.evaluate(lm, judge, refs, mauve_eval.MauveSettings(prompt_len=4, gen_len=4, canvas=6), str(tmp_path / "m.json"))
    with pytest.raises(UserError, match="longer than the model's context"):
        mauve_eval.evaluate(lm, judge, refs, mauve_eval.MauveSettings(prompt_len=4, gen_len=4, canvas=128), str(tmp_path / "m.json"))


def test_prepared_directory_for_zero_shot_and_diversity(tiny_gpt2_dir, tmp_path, capsys):
    """The workflow's path: `pysedd prepare` a held-out split, then evaluate its blocks as they are."""
    text = tmp_path / "heldout.txt"
    text.write_text(TEXT * 8)
    data = tmp_path / "data"
    assert main(["prepare", "--path", str(text), "--out", str(data), "--length", "32", "--val-fraction", "0.5"]) == 0
    out = tmp_path / "zs.json"
    assert main(["eval", "zero-shot", "--model", str(tiny_gpt2_dir), "--data", str(data), "--split", "validation",
                 "--dataset-name", "heldout", "--out", str(out), "--quiet"]) == 0
    res = json.loads(out.read_text())["datasets"]["heldout"]
    assert res["data"]["split"] == "validation" and res["metrics"]["n_tokens"] == 31 * res["metrics"]["n_sequences"]
    out = tmp_path / "div.json"
    assert main(["eval", "diversity", "--data", str(data), "--split", "validation", "--out", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["results"][str(data)]["metrics"]["lengths"] == [32]
    assert main(["eval", "zero-shot", "--model", str(tiny_gpt2_dir), "--data", str(tmp_path), "--out", str(out)]) == 2
    assert "not a prepared dataset" in capsys.readouterr().err


def test_mauve_reads_prompt_ids_and_tiled_samples(judge, tmp_path):
    """Prompt windows given as token ids; samples hold k continuations per prompt, row i continuing prompt i mod n."""
    rng = np.random.default_rng(0)
    windows = rng.integers(0, 50000, size=(6, 10))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"text": "ignored", "ids": w.tolist()}) + "\n" for w in windows))
    settings = mauve_eval.MauveSettings(prompt_len=5, gen_len=5, mauve_seeds=(1,), batch_size=4)
    refs, _ = mauve_eval.load_prompts(str(prompts), settings, tokenizer=None)
    assert np.array_equal(refs, windows)
    samples = np.concatenate([windows, windows])  # 2 continuations per prompt, tiled
    samples[6:, 5:] = rng.integers(0, 50000, size=(6, 5))
    res = mauve_eval.evaluate(None, judge, refs, settings, str(tmp_path / "m.json"), samples=samples, progress=False)
    assert res["mauve"]["samples_per_prompt"] == 2 and res["mauve"]["n_q"] == 12
    with pytest.raises(UserError, match="whole number"):
        mauve_eval.evaluate(None, judge, refs, settings, str(tmp_path / "m.json"), samples=samples[:7])


def test_zero_shot_sedd_chunking_option(tokenizer, tmp_path):
    """--chunking sedd gives data.py's blocks: per 1000-row batch of 8 contiguous shards (here 8 one-row shards)."""
    from pysedd.data.packing import pack_token_rows

    path = tmp_path / "lm1b.txt"
    lines = [f"Line number {i} has a few words in it ." for i in range(8)]
    path.write_text("\n".join(lines) + "\n")
    from pysedd.data import detokenizer_for

    rows = [tokenizer.encode(detokenizer_for("lm1b")(line)) for line in lines]
    concat = zero_shot.load_chunks("lm1b", [str(path)], zero_shot.ZeroShotSettings(seq_len=8), 8, tokenizer)[0]
    sedd, info = zero_shot.load_chunks("lm1b", [str(path)], zero_shot.ZeroShotSettings(seq_len=8, chunking="sedd"), 8, tokenizer)
    assert info["chunking"] == "sedd"
    assert concat.tolist() == pack_token_rows(rows, 8, 50256)[0].tolist()
    assert sedd.tolist() == [b for r in rows for b in pack_token_rows([r], 8, 50256)[0].tolist()]


def test_repetition_readings_on_openwebtext(shared_data, tokenizer):
    """On 108 blocks of 1024 OpenWebText tokens the caption's literal reading gives 0.390, an order of magnitude above
    the paper's OWT row (0.033 ± 0.013); the 3-gram reading, pysedd's paper column, lands on it."""
    from pysedd.eval.common import load_token_blocks

    blocks, info = load_token_blocks(shared_data / "openwebtext/openwebtext_sample.txt", 1024, None, tokenizer)
    assert info["n_blocks"] == 108
    m = diversity.diversity(blocks)
    assert m["repetition_rate_100"]["mean"] == pytest.approx(0.390, abs=0.001)
    assert abs(m["repetition_rate_100_3gram"]["mean"] - 0.033) < 0.1 * 0.013
    assert abs(m["unique_unigram_fraction"]["mean"] - 0.49) < 0.07 and abs(m["unigram_entropy"]["mean"] - 5.14) < 2 * 0.31
