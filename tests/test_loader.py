"""The one loader: every input form (hub id through an offline cache, save_pretrained directory, pysedd run directory
with and without export/, reference run directory, transformers directories of GPT-2 and GPT-NeoX/Pythia) loads the
same weights through every command; released configs with fields pysedd does not know load with one warning and
round-trip; hostile weights and configs are refused with one line before anything large is allocated."""
import json
import math
import os
import shutil
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pysedd.cli import main
from pysedd.config import ALLOW_HUGE_ENV, SEDDConfig
from pysedd.data import open_corpus, prepare_corpus
from pysedd.errors import UserError
from pysedd.loader import detect_kind, load
from pysedd.model import SEDD
from pysedd.tokenizer import get_tokenizer
from pysedd.train import TrainConfig, train
from pysedd import checkpoint as ckpt

SMALL = dict(hidden_size=32, cond_dim=16, n_blocks=1, n_heads=2)


def small_config(**kw) -> SEDDConfig:
    return SEDDConfig.preset("tiny", **{**SMALL, "length": 64, **kw})


def params(model):
    return [p.detach().clone() for p in model.parameters()]


def same_params(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def cli_error(capsys, argv) -> str:
    """Run the CLI; it must fail with exactly one `pysedd: error:` line and exit code 2. Returns that line."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pysedd: error: "), err
    return err[0]


# -- fixtures: real training runs ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo16")
    prepare_corpus(open_corpus("demo"), out, get_tokenizer(), seq_len=16, val_fraction=0.01, progress=False)
    return out


def _run(data_dir, out, model):
    cfg = TrainConfig(model=model, size="tiny", hidden_size=32, n_blocks=1, n_heads=2, data=str(data_dir),
                      out=str(out), steps=3, batch_size=2, warmup_steps=1, lr=1e-2, ckpt_every=1, keep_last=2,
                      log_every=1, progress=False)
    assert train(cfg) == 0
    return Path(out)


@pytest.fixture(scope="module")
def sedd_run(data_dir, tmp_path_factory):
    return _run(data_dir, tmp_path_factory.mktemp("runs") / "sedd", "sedd")


@pytest.fixture(scope="module")
def gpt2_run(data_dir, tmp_path_factory):
    return _run(data_dir, tmp_path_factory.mktemp("runs") / "gpt2", "gpt2")


def without_export(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    shutil.rmtree(dest / "export")
    return dest


# -- every input form ------------------------------------------------------------------------------------------------
def test_pysedd_run_directory_loads_export_else_newest_verified_checkpoint_ema(sedd_run, tmp_path):
    exported = params(SEDD.from_pretrained(sedd_run / "export"))
    lm = load(sedd_run, device="cpu")
    assert (lm.kind, lm.extra["form"]) == ("sedd", "run-export") and same_params(params(lm.model), exported)
    assert same_params(params(SEDD.from_pretrained(sedd_run)), exported)  # the reported failure

    bare = without_export(sedd_run, tmp_path / "bare")
    lm = load(bare, device="cpu")
    # the export is the final EMA, so the newest checkpoint's EMA is the same weights, bit for bit
    assert lm.extra["form"] == "run-checkpoint" and lm.fingerprint["step"] == 3
    assert same_params(params(lm.model), exported)
    assert lm.model.config.to_dict() == SEDD.from_pretrained(sedd_run / "export").config.to_dict()

    newest, older = ckpt.list_checkpoints(bare / "checkpoints")[:2]
    data = bytearray((newest / "ema.safetensors").read_bytes())
    data[-1] ^= 1
    (newest / "ema.safetensors").write_bytes(bytes(data))
    lm = load(bare, device="cpu")
    shadow = load_file(str(older / "ema.safetensors"))
    assert lm.fingerprint["step"] == 2
    assert same_params(params(lm.model), [shadow[str(i)] for i in range(len(shadow))])


def test_gpt2_run_directory_with_and_without_export(gpt2_run, tmp_path):
    lm = load(gpt2_run, device="cpu")
    assert (lm.kind, lm.extra["form"], lm.max_length) == ("gpt2", "run-export", 16)
    bare = load(without_export(gpt2_run, tmp_path / "bare"), device="cpu")
    assert bare.extra["form"] == "run-checkpoint" and same_params(params(bare.model), params(lm.model))
    with pytest.raises(UserError, match="causal LM.*not a SEDD"):
        SEDD.from_pretrained(gpt2_run)


def build_hub_cache(root: Path, repo_id: str, files: dict[str, Path], commit: str = "0123456789abcdef" * 2 + "01234567"):
    """The huggingface_hub cache layout: models--owner--name/{refs/main, snapshots/<commit>/<files>}."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, src in files.items():
        shutil.copy(src, snapshot / name)
    return commit


def test_hub_id_through_an_offline_cache(sedd_run, tmp_path, monkeypatch):
    import huggingface_hub.constants

    export = sedd_run / "export"
    commit = build_hub_cache(tmp_path / "hub", "louaaron/sedd-small",
                             {"config.json": export / "config.json", "model.safetensors": export / "model.safetensors"})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert detect_kind("louaaron/sedd-small") == "sedd"
    lm = load("louaaron/sedd-small", device="cpu")
    assert lm.extra["form"] == "hub" and lm.fingerprint == {"hub_id": "louaaron/sedd-small", "revision": "main",
                                                            "commit": commit}
    assert same_params(params(lm.model), params(SEDD.from_pretrained(export)))


def test_save_pretrained_and_reference_run_directories(tmp_path):
    import yaml

    torch.manual_seed(0)
    model = SEDD(small_config())
    model.save_pretrained(tmp_path / "saved")
    assert same_params(params(load(tmp_path / "saved", "sedd", "cpu").model), params(model))

    run = tmp_path / "reference-run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(model.config.to_dict()))
    (run / "checkpoints-meta").mkdir()
    ema = [torch.randn_like(p) for p in model.parameters()]
    torch.save({"model": model.state_dict(), "ema": {"decay": 0.9999, "num_updates": 1, "shadow_params": ema}},
               run / "checkpoints-meta" / "checkpoint.pth")
    lm = load(run, device="cpu")
    assert (lm.kind, lm.extra["form"]) == ("sedd", "reference-run") and same_params(params(lm.model), ema)
    assert lm.fingerprint["path"].endswith("checkpoint.pth")


def tiny_pythia(path: Path) -> Path:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=128, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)).save_pretrained(path)
    return path


def test_kind_detection_agrees_for_sample_and_eval(sedd_run, gpt2_run, data_dir, tmp_path, capsys):
    """sample and eval call the same loader: every form is detected, and both commands run on run directories."""
    pythia = tiny_pythia(tmp_path / "pythia")
    for spec, kind in ((sedd_run, "sedd"), (gpt2_run, "gpt2"), (without_export(sedd_run, tmp_path / "b"), "sedd"),
                       (sedd_run / "export", "sedd"), (pythia, "gpt2")):
        assert detect_kind(str(spec)) == kind
    assert load(pythia, device="cpu").max_length == 32
    for run in (sedd_run, gpt2_run):
        out = tmp_path / f"{run.name}.npz"
        assert main(["sample", "--model", str(run), "--num-samples", "1", "--length", "8", "--steps", "2",
                     "--device", "cpu", "--out", str(out)]) == 0
        with np.load(out) as z:
            meta = json.loads(str(z["meta"]))
        assert meta["kind"] == run.name and meta["fingerprint"]["path"].endswith("export")
        res = tmp_path / f"{run.name}.json"
        assert main(["eval", "zero-shot", "--model", str(run), "--data", str(data_dir), "--split", "validation",
                     "--seq-len", "16", "--limit", "1", "--n-samples", "2", "--batch-size", "2", "--device", "cpu",
                     "--out", str(res), "--quiet"]) == 0
        assert json.loads(res.read_text())["model"]["kind"] == run.name
    with pytest.raises(UserError, match="size preset"):
        detect_kind("tiny")


# -- released configs ------------------------------------------------------------------------------------------------
def test_unknown_fields_warn_once_and_round_trip(tmp_path):
    torch.manual_seed(0)
    official = small_config().to_dict()
    official["model"]["score_strategy"] = "unused"
    official["noise"]["eps"] = 1e-3
    official["training"] = {"batch_size": 512}
    model = SEDD(small_config())
    model.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(official))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = SEDD.from_pretrained(tmp_path)
    mine = [w for w in caught if "does not use" in str(w.message)]
    assert len(mine) == 1 and "model.score_strategy" in str(mine[0].message) and "noise.eps" in str(mine[0].message)
    loaded.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == official
    # typos in pysedd's own configs stay errors
    with pytest.raises(UserError, match="unknown field.*hidden_sise"):
        TrainConfig.from_dict({"hidden_sise": 3})
    # the reference constructs SEDD(config) from a plain dict (and its hub mixin does the same)
    with pytest.warns(UserWarning, match="model.score_strategy"):
        from_dict = SEDD(official)
    assert from_dict.config.to_dict() == official and from_dict.num_parameters() == model.num_parameters()


def test_parameter_estimate_is_exact():
    for graph in ("absorb", "uniform"):
        cfg = small_config(graph=graph, n_blocks=2)
        assert cfg.num_parameters() == SEDD(cfg).num_parameters()


# -- hostile weights and configs ---------------------------------------------------------------------------------------
@pytest.fixture
def model_dir(tmp_path):
    torch.manual_seed(0)
    SEDD(small_config()).save_pretrained(tmp_path / "m")
    return tmp_path / "m"


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.float16, torch.float64, "nan"])
def test_tensor_dtype_and_finiteness_are_checked(model_dir, capsys, dtype):
    state = load_file(str(model_dir / "model.safetensors"))
    name = "blocks.0.attn_qkv.weight"
    state[name] = state[name].clone().fill_(math.nan) if dtype == "nan" else state[name].to(dtype)
    save_file(state, str(model_dir / "model.safetensors"))
    line = cli_error(capsys, ["sample", "--model", str(model_dir), "--length", "8", "--out", str(model_dir / "s.npz")])
    assert name in line and ("NaN" in line if dtype == "nan" else str(dtype).replace("torch.", "") in line)


@pytest.mark.parametrize("field, value, message", [
    ("hidden_size", 1e9, "model.hidden_size must be an int"),
    ("hidden_size", 10**9, "implausibly large.*parameters"),
    ("n_blocks", 10**6, "model.n_blocks = 1,000,000"),
    ("length", 1e12, "model.length must be an int"),
    ("length", 10**12, "model.length = 1,000,000,000,000"),
    ("scale_by_sigma", "no", "model.scale_by_sigma must be a bool"),
    ("dropout", True, "model.dropout must be a finite number"),
])
def test_config_types_and_bounds_are_checked_before_allocating(model_dir, capsys, field, value, message):
    import re
    import time

    config = json.loads((model_dir / "config.json").read_text())
    config["model"][field] = value
    (model_dir / "config.json").write_text(json.dumps(config))
    start = time.perf_counter()
    line = cli_error(capsys, ["sample", "--model", str(model_dir), "--out", str(model_dir / "s.npz")])
    assert re.search(message, line) and time.perf_counter() - start < 5


def test_infinite_sigma_and_the_huge_override(model_dir, capsys, monkeypatch):
    text = (model_dir / "config.json").read_text().replace('"sigma_max": 20.0', '"sigma_max": Infinity')
    (model_dir / "config.json").write_text(text)
    assert "noise.sigma_max must be a finite number" in cli_error(capsys, ["sample", "--model", str(model_dir),
                                                                          "--out", "x.npz"])
    big = small_config().to_dict()
    big["model"]["n_blocks"] = 2000
    with pytest.raises(UserError, match=ALLOW_HUGE_ENV):
        SEDDConfig.from_dict(big)
    (model_dir / "config.json").write_text(json.dumps(big))
    sample = ["sample", "--model", str(model_dir), "--out", "x.npz"]
    assert "run pysedd --allow-huge <command>" in cli_error(capsys, sample)
    monkeypatch.setenv(ALLOW_HUGE_ENV, "")  # restored after the test: --allow-huge sets it for the process
    assert "2,000 > 1,024" not in cli_error(capsys, ["--allow-huge", *sample])  # past the bound, then other checks
    assert os.environ[ALLOW_HUGE_ENV] == "1"
    assert SEDDConfig.from_dict(big).model.n_blocks == 2000  # validated, not built


def test_transformers_directories_are_checked_too(tmp_path, capsys):
    pythia = tiny_pythia(tmp_path / "pythia")
    out = ["--out", str(tmp_path / "s.npz")]
    state = load_file(str(pythia / "model.safetensors"))
    name = next(iter(state))
    save_file({**state, name: state[name].long()}, str(pythia / "model.safetensors"))
    assert f"tensor {name!r} has dtype I64" in cli_error(capsys, ["sample", "--model", str(pythia)] + out)
    save_file({**state, name: torch.full_like(state[name], math.inf)}, str(pythia / "model.safetensors"))
    assert "NaN or infinite" in cli_error(capsys, ["sample", "--model", str(pythia)] + out)
    config = json.loads((pythia / "config.json").read_text())
    (pythia / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 10**6}))
    assert "layers = 1,000,000 > 1,024" in cli_error(capsys, ["sample", "--model", str(pythia)] + out)
    (pythia / "config.json").write_text(json.dumps({**config, "hidden_size": "16"}))
    assert "hidden_size must be a positive integer" in cli_error(capsys, ["sample", "--model", str(pythia)] + out)


def test_corrupt_pickles_are_one_line(model_dir, capsys):
    (model_dir / "model.safetensors").unlink()
    (model_dir / "pytorch_model.bin").write_bytes(b"\x80\x02garbage")
    assert "weights_only=True" in cli_error(capsys, ["sample", "--model", str(model_dir), "--out", "x.npz"])


def _header(meta: dict) -> bytes:
    raw = json.dumps(meta).encode()
    return struct.pack("<Q", len(raw)) + raw


@pytest.mark.parametrize("case", ["empty", "bad-header", "huge-header-length", "bad-offsets", "truncated"])
def test_malformed_safetensors_is_one_line(model_dir, capsys, case):
    path = model_dir / "model.safetensors"
    good = path.read_bytes()
    data = {
        "empty": b"",
        "bad-header": struct.pack("<Q", 12) + b"{not json!!}",
        "huge-header-length": struct.pack("<Q", 1 << 60) + b"{}",
        "bad-offsets": _header({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 4096]}}) + b"\0" * 16,
        "truncated": good[: len(good) // 2],
    }[case]
    path.write_bytes(data)
    line = cli_error(capsys, ["sample", "--model", str(model_dir), "--out", str(model_dir / "s.npz")])
    assert "not a valid safetensors file" in line
    # the same file under a GPT-2 directory (read by transformers after pysedd's header check)
    gpt2 = tiny_pythia(model_dir.parent / "ar")
    (gpt2 / "model.safetensors").write_bytes(data)
    assert "not a valid safetensors file" in cli_error(capsys, ["sample", "--model", str(gpt2), "--out", "x.npz"])


# -- bad input of sample / eval ----------------------------------------------------------------------------------------
def test_bad_model_directories_and_devices(model_dir, sedd_run, data_dir, tmp_path, capsys):
    out = str(tmp_path / "s.npz")
    assert "not a device" in cli_error(capsys, ["sample", "--model", str(model_dir), "--device", "bogus", "--out", out])
    assert "not a device" in cli_error(capsys, ["eval", "zero-shot", "--model", str(model_dir), "--device", "bogus",
                                                "--data", str(data_dir), "--out", out])
    (model_dir / "config.json").write_text("{ not json")
    assert "is not valid JSON" in cli_error(capsys, ["sample", "--model", str(model_dir), "--out", out])
    (model_dir / "config.json").write_bytes(b"\xff\xfe{}")
    assert "is not UTF-8" in cli_error(capsys, ["sample", "--model", str(model_dir), "--out", out])
    (model_dir / "config.json").unlink()
    assert "holds weights but no config.json" in cli_error(capsys, ["sample", "--model", str(model_dir), "--out", out])

    run = tmp_path / "run"
    shutil.copytree(sedd_run, run)
    weights = run / "export" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a truncated export
    assert "not a valid safetensors file" in cli_error(capsys, ["sample", "--model", str(run), "--out", out])
    (run / "export" / "config.json").unlink()
    assert "export is incomplete" in cli_error(capsys, ["sample", "--model", str(run), "--out", out])
    assert "pass --kind" in cli_error(capsys, ["sample", "--model", "tiny", "--out", out])


def test_sample_length_and_prompt_files(model_dir, tmp_path, capsys):
    out = str(tmp_path / "s.npz")
    base = ["sample", "--model", str(model_dir), "--steps", "2", "--num-samples", "1", "--out", out]
    assert "--length 65 is longer than the model's context (64" in cli_error(capsys, base + ["--length", "65"])
    assert "--canvas 128 is longer" in cli_error(capsys, base + ["--prompts", str(_npy(tmp_path, np.int64)),
                                                                "--prompt-len", "4", "--gen-len", "4",
                                                                "--canvas", "128"])
    assert main(base + ["--length", "64"]) == 0
    assert "integer token ids, got dtype float32" in cli_error(capsys, base + ["--prompts", str(_npy(tmp_path, np.float32)),
                                                                              "--prompt-len", "4", "--gen-len", "4"])
    bad_json = tmp_path / "p.jsonl"
    bad_json.write_text('{"ids": [1, 2, 3, 4]}\n{"ids": [1, 2\n')
    assert "p.jsonl:2: not valid JSON" in cli_error(capsys, base + ["--prompts", str(bad_json), "--prompt-len", "4"])
    bad_json.write_text('{"ids": [1.5, 2, 3, 4]}\n')
    assert "integer token ids" in cli_error(capsys, base + ["--prompts", str(bad_json), "--prompt-len", "4"])
    for suffix in (".jsonl", ".txt"):
        latin = tmp_path / f"latin{suffix}"
        latin.write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
        assert "is not UTF-8" in cli_error(capsys, base + ["--prompts", str(latin), "--prompt-len", "1"])


def _npy(tmp_path, dtype) -> Path:
    path = tmp_path / f"prompts-{np.dtype(dtype).name}.npy"
    np.save(path, np.arange(16, dtype=dtype).reshape(2, 8))
    return path


# -- samplers and the bound take graph and noise from the model --------------------------------------------------------
def test_graph_and_noise_default_to_the_models_config():
    from pysedd.likelihood import sequence_nelbo
    from pysedd.sampling import fhs_sample, pc_sample

    torch.manual_seed(0)
    model = SEDD(small_config(tokens=20)).eval()
    graph, noise = model.graph_and_noise()
    assert (type(graph).__name__, graph.n_tokens, type(noise).__name__) == ("Absorbing", 20, "LogLinear")
    a = pc_sample(model, graph, noise, 2, 8, 4, seed=3).samples
    assert torch.equal(pc_sample(model, None, None, 2, 8, 4, seed=3).samples, a)
    assert torch.equal(fhs_sample(model, None, None, 2, 8, seed=3).samples, fhs_sample(model, graph, noise, 2, 8, seed=3).samples)
    x0 = torch.randint(0, 20, (1, 8))
    assert torch.equal(sequence_nelbo(model, None, None, x0, n_samples=2).nelbo,
                       sequence_nelbo(model, graph, noise, x0, n_samples=2).nelbo)
