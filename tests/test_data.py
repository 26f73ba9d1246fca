"""Corpora, detokenisers, packing and the atomic prepared-dataset format."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from pysedd.cli import main
from pysedd.data import PackedDataset, detokenizer_for, file_rows, open_corpus, pack_token_rows, prepare_corpus
from pysedd.data.packing import read_manifest
from pysedd.errors import UserError
from pysedd.tokenizer import get_tokenizer

HELLO = [15496, 995]  # "Hello world"
EOS = 50256


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ---- packing -----------------------------------------------------------------------------------------------------

def test_pack_token_rows_hand_computed():
    rows = [[1, 2, 3], [4], [5, 6]]  # stream: 1 2 3 E 4 E 5 6 E
    blocks, dropped = pack_token_rows(rows, 3, 9)
    assert blocks.tolist() == [[1, 2, 3], [9, 4, 9], [5, 6, 9]] and dropped == 0
    blocks, dropped = pack_token_rows(rows, 4, 9)
    assert blocks.tolist() == [[1, 2, 3, 9], [4, 9, 5, 6]] and dropped == 1
    assert blocks.dtype == np.int64


def test_prepare_hand_computed(tmp_path, tok):
    src = write(tmp_path / "c.txt", "Hello world\nHello world\n\nHello world\n")
    manifest = prepare_corpus(open_corpus(paths=[src]), tmp_path / "out", tok, seq_len=4, progress=False)
    # rows: three "Hello world" (the blank line is no row) → H w E H w E H w E (9 tokens) → 2 blocks, 1 dropped
    stream = (HELLO + [EOS]) * 3
    ds = PackedDataset(tmp_path / "out", "train", verify="full")
    assert len(ds) == 2 and ds.batch([0, 1]).tolist() == [stream[:4], stream[4:8]]
    assert ds[1].dtype == torch.int64
    assert manifest["tokens_total"] == 9 and manifest["tokens_dropped"] == 1 and manifest["rows"] == 3
    assert manifest["request"]["source"]["files"][str(src)] == __import__("hashlib").sha256(src.read_bytes()).hexdigest()
    assert manifest["request"]["tokenizer"] == tok.fingerprint
    assert (tmp_path / "out" / "train.bin").stat().st_size == 2 * 4 * 2  # uint16


def test_validation_is_the_tail(tmp_path, tok):
    src = write(tmp_path / "c.txt", "".join(f"line number {i}\n" for i in range(200)))
    full = prepare_corpus(open_corpus(paths=[src]), tmp_path / "a", tok, seq_len=16, progress=False)
    split = prepare_corpus(open_corpus(paths=[src]), tmp_path / "b", tok, seq_len=16, val_fraction=0.1, progress=False)
    n = full["splits"]["train"]["blocks"]
    n_val = int(np.ceil(0.1 * n))
    assert split["splits"]["validation"]["blocks"] == n_val and split["splits"]["train"]["blocks"] == n - n_val
    everything = PackedDataset(tmp_path / "a").tokens
    assert np.array_equal(PackedDataset(tmp_path / "b", "train").tokens, everything[: n - n_val])
    assert np.array_equal(PackedDataset(tmp_path / "b", "validation").tokens, everything[n - n_val:])


def test_reuse_and_rebuild(tmp_path, tok):
    src = write(tmp_path / "c.txt", "Hello world\n" * 50)
    out = tmp_path / "out"
    prepare_corpus(open_corpus(paths=[src]), out, tok, seq_len=8, progress=False)
    mtime = (out / "train.bin").stat().st_mtime_ns
    prepare_corpus(open_corpus(paths=[src]), out, tok, seq_len=8, progress=False)
    assert (out / "train.bin").stat().st_mtime_ns == mtime  # same request: reused
    (out / "train.bin").write_bytes(b"")  # damaged since: the same request rebuilds instead of failing
    prepare_corpus(open_corpus(paths=[src]), out, tok, seq_len=8, progress=False)
    assert len(PackedDataset(out)) == 50 * 3 // 8
    m = prepare_corpus(open_corpus(paths=[src]), out, tok, seq_len=4, progress=False)
    assert m["seq_len"] == 4 and PackedDataset(out).tokens.shape[1] == 4  # different request: rebuilt


def test_killed_prepare_leaves_nothing_complete(tmp_path, tok):
    """kill -9 in the middle of writing: no manifest, PackedDataset refuses, a re-run rebuilds the same bytes."""
    src = write(tmp_path / "c.txt", "".join(f"Row {i} of a corpus that is written in batches.\n" for i in range(5000)))
    out = tmp_path / "out"
    prepare_corpus(open_corpus(paths=[src]), tmp_path / "clean", tok, seq_len=32, progress=False)
    prepare_corpus(open_corpus(paths=[src]), out, tok, seq_len=64, progress=False)  # an older, complete build
    script = textwrap.dedent(f"""
        import os, signal
        from pysedd.data import open_corpus, prepare_corpus
        from pysedd.tokenizer import get_tokenizer
        corpus = open_corpus(paths=[{str(src)!r}])
        def rows(inner=corpus.rows):
            for i, row in enumerate(inner):
                if i == 3000:
                    os.kill(os.getpid(), signal.SIGKILL)
                yield row
        corpus.rows = rows()
        prepare_corpus(corpus, {str(out)!r}, get_tokenizer(), seq_len=32, batch_rows=256, progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == -signal.SIGKILL
    assert read_manifest(out) is None
    with pytest.raises(UserError, match="not a prepared dataset"):
        PackedDataset(out)
    prepare_corpus(open_corpus(paths=[src]), out, tok, seq_len=32, progress=False)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".pysedd.lock"]  # stale temps cleaned
    assert (out / "train.bin").read_bytes() == (tmp_path / "clean" / "train.bin").read_bytes()


def test_truncated_bin_is_detected(tmp_path, tok):
    src = write(tmp_path / "c.txt", "Hello world\n" * 50)
    prepare_corpus(open_corpus(paths=[src]), tmp_path / "o", tok, seq_len=8, progress=False)
    data = (tmp_path / "o" / "train.bin").read_bytes()
    (tmp_path / "o" / "train.bin").write_bytes(data[:-2])
    with pytest.raises(UserError, match="wrong size"):
        PackedDataset(tmp_path / "o")
    (tmp_path / "o" / "train.bin").write_bytes(data[:-2] + b"\x00\x00")
    with pytest.raises(UserError, match="sha256"):
        PackedDataset(tmp_path / "o", verify="full")


# ---- bad inputs --------------------------------------------------------------------------------------------------

def test_bad_inputs(tmp_path, tok, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9 latin-1\n")
    with pytest.raises(UserError, match=r"not UTF-8.*0xe9 at offset 3"):
        prepare_corpus(open_corpus(paths=[bad]), tmp_path / "o1", tok, progress=False)
    empty = write(tmp_path / "empty.txt", "")
    with pytest.raises(UserError, match="is empty"):
        prepare_corpus(open_corpus(paths=[empty]), tmp_path / "o2", tok, progress=False)
    short = write(tmp_path / "short.txt", "Hello world\n")
    with pytest.raises(UserError, match="too short: 3 tokens"):
        prepare_corpus(open_corpus(paths=[short]), tmp_path / "o3", tok, seq_len=1024, progress=False)
    with pytest.raises(UserError, match="unknown corpus 'wikitxt'"):
        open_corpus("wikitxt")
    with pytest.raises(UserError, match="does not exist"):
        open_corpus(paths=[tmp_path / "missing.txt"])
    assert main(["prepare", "--path", str(bad), "--out", str(tmp_path / "o5")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"pysedd: error: {bad} is not UTF-8 text: invalid byte 0xe9 at offset 3"
    j = write(tmp_path / "x.jsonl", '{"text": "ok"}\n{"body": "no text field"}\n')
    with pytest.raises(UserError, match=r"x.jsonl:2: expected an object with a string field 'text'"):
        list(file_rows(j))
    with pytest.raises(UserError, match="no detokenizer"):
        detokenizer_for("klingon")
    with pytest.raises(UserError, match="no split 'test'"):
        prepare_corpus(open_corpus(paths=[write(tmp_path / "ok.txt", "Hello world\n" * 9)]), tmp_path / "o4", tok,
                       seq_len=4, progress=False)
        PackedDataset(tmp_path / "o4", "test")


# ---- detokenisers ------------------------------------------------------------------------------------------------

def test_detokenizers_known_strings():
    wt = detokenizer_for("wikitext103")
    assert wt(" = = Gameplay = = \n") == " == Gameplay ==\n"
    assert wt("The 2 @,@ 000 @-@ year @-@ old ( approx . ) figure , he said .") == \
        "The 2,000-year-old (approx.) figure, he said ."
    assert wt(" the player 's score is N points \n") == " the player's score is 1 points\n"
    ptb = detokenizer_for("ptb")
    assert ptb("the company 's shares fell N N to $ N a share <unk> \\/ mr. smith does n't") == \
        "the company's shares fell 1 1 to $1 a share ? / mr. smith doesn't"
    lm1b = detokenizer_for("lm1b")
    assert lm1b("Visit http : / / example.com , he said .") == "Visit http://example.com, he said."
    assert lm1b('He said " yes " to $ 5 .') == 'He said "yes" to $5.'
    assert lm1b("It cost \N{POUND SIGN} 5 ( about $ 8 ) .") == "It cost \N{POUND SIGN}5 (about $8) ."  # ")" is not a word char
    lam = detokenizer_for("lambada")
    assert lam("\N{LEFT DOUBLE QUOTATION MARK}Hi,\N{RIGHT DOUBLE QUOTATION MARK} he said. ") == '\n"Hi," he said.'
    assert detokenizer_for("openwebtext") is None and detokenizer_for("none") is None


# ---- real corpora (offline copies) -------------------------------------------------------------------------------

def test_local_copies_give_hub_rows(shared_data):
    wt = list(open_corpus("wikitext2", [shared_data / "wikitext-2-raw/wiki.test.raw"], split="test").rows)
    assert len(wt) == 4358 and wt[0] == "" and wt[1] == " = Robert Boulter = \n"
    ptb = list(open_corpus("ptb", [shared_data / "ptb/ptb.valid.txt"]).rows)
    assert len(ptb) == 3370 and ptb[0] == ptb[0].strip()
    lam = list(open_corpus("lambada", [shared_data / "lambada/lambada_test.jsonl"]).texts())
    assert len(lam) == 5153 and all(t.startswith("\n") for t in lam)
    lm1b = list(open_corpus("lm1b", [shared_data / "lm1b/1b_benchmark.test.tokens"]).rows)
    assert len(lm1b) == 12105


def test_prepare_wikitext_and_demo(tmp_path, tok, shared_data):
    corpus = open_corpus("wikitext2", [shared_data / "wikitext-2-raw/wiki.test.raw"], split="test")
    m = prepare_corpus(corpus, tmp_path / "wt2", tok, split_name="test", progress=False)
    ds = PackedDataset(tmp_path / "wt2", "test")
    assert m["rows"] == 4358 and len(ds) == m["tokens_total"] // 1024
    assert ds[0][0].item() == EOS  # the first row is empty: a lone EOS
    text = tok.decode(ds[0].tolist())
    assert "Robert Boulter" in text and "@-@" not in text
    demo = prepare_corpus(open_corpus("demo"), tmp_path / "demo", tok, val_fraction=0.05, progress=False)
    assert demo["splits"]["train"]["blocks"] >= 50 and demo["request"]["source"]["kind"] == "demo"
    assert json.loads((tmp_path / "demo" / "manifest.json").read_text()) == demo


def _group_texts(examples, block_size=8):
    """SEDD data.py's group_texts (HF run_clm's): concatenate the batch, drop its remainder, cut blocks."""
    from itertools import chain

    concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
    total = len(concatenated["input_ids"]) // block_size * block_size
    return {k: [t[i:i + block_size] for i in range(0, total, block_size)] for k, t in concatenated.items()}


@pytest.mark.parametrize("n_rows", [5, 23, 2500])
def test_sedd_chunking_matches_datasets_map_as_data_py_calls_it(n_rows):
    """SEDD's data.py chunks with datasets' map(group_texts, batched=True, num_proc=8): 8 contiguous shards, batches of
    1000 rows, a remainder dropped per batch. chunking='sedd' reproduces that block for block (here against datasets
    itself; num_proc=8 forks 8 workers, so the rows are few and short)."""
    import datasets

    from pysedd.data.packing import pack_token_rows_sedd

    rng = np.random.default_rng(n_rows)
    rows = [rng.integers(0, 50256, rng.integers(0, 7)).tolist() for _ in range(n_rows)]
    ds = datasets.Dataset.from_dict({"input_ids": [r + [50256] for r in rows]})
    expected = ds.map(_group_texts, batched=True, num_proc=8)["input_ids"]
    got = pack_token_rows_sedd(rows, 8, 50256)
    assert got.tolist() == [list(b) for b in expected]
    assert len(got) < pack_token_rows(rows, 8, 50256)[0].shape[0] or n_rows == 5
