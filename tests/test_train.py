"""Trainer: EMA formula, bit-identical resume after kill -9, SIGTERM, corrupt checkpoints, NaN guard, DDP, bad input.

Models are test-sized (width 32, one block) so each run takes seconds; the GPT-2 vocabulary stays real.
"""
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pysedd.cli import main
from pysedd.errors import UserError
from pysedd.train import EMA, EXIT_NONFINITE, EXIT_PREEMPTED, TrainConfig, Trainer, train
from pysedd import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def tiny(data_dir, out, **kw):
    options = dict(model="sedd", size="tiny", hidden_size=32, n_blocks=1, n_heads=2, data=str(data_dir), out=str(out),
                   steps=6, batch_size=4, micro_batch_size=2, warmup_steps=2, lr=1e-3, log_every=1, ckpt_every=1,
                   keep_last=2, progress=False)
    return TrainConfig(**{**options, **kw})


def final_tensors(out):
    path = ckpt.list_checkpoints(Path(out) / "checkpoints")[0]
    return {name: load_file(str(path / name)) for name in ("model.safetensors", "ema.safetensors",
                                                           "optimizer.safetensors")}


def assert_same(a, b, exact=True, atol=0.0):
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            if exact:
                assert torch.equal(a[name][key], b[name][key]), f"{name}:{key} differs"
            else:
                torch.testing.assert_close(a[name][key], b[name][key], rtol=1e-4, atol=atol, msg=f"{name}:{key}")


def losses(out):
    import json

    return [(r["step"], r["loss"]) for r in map(json.loads, (Path(out) / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]


# ---- EMA (docs/sedd.md#i12) ----------------------------------------------------------------------------------------

def test_ema_decay_and_values_match_the_formula():
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    ema = EMA([p], decay=0.9999)
    for n, expected in [(1, 2 / 11), (2, 0.25), (10, 0.55), (100, 0.918182), (1000, 0.991089), (89_990, 0.9999)]:
        assert ema.decay_at(n) == pytest.approx(expected, abs=5e-7)
    assert ema.decay_at(89_989) < 0.9999 and ema.decay_at(10**6) == 0.9999
    with torch.no_grad():
        p.fill_(1.0)
    for n in range(1, 41):  # shadow 0, param 1: shadow_n = 1 - prod_k (1+k)/(10+k) = 1 - 10!(n+1)!/(n+10)!
        ema.update()
        closed = 1 - math.factorial(10) * math.factorial(n + 1) / math.factorial(n + 10)
        assert torch.allclose(ema.shadow[0], torch.full((3,), closed, dtype=torch.float64), rtol=0, atol=1e-12)
    assert ema.state_dict()["num_updates"] == 40


# ---- resume after kill -9 ------------------------------------------------------------------------------------------

KILL_SCRIPT = """
import os, signal, sys, torch
torch.set_num_threads(1)
from pysedd import checkpoint
from pysedd.train import TrainConfig, Trainer
cfg = TrainConfig(**{options!r})
where, at = {where!r}, {at!r}
if where == "step":  # inside a training step, after the first micro-batch's backward
    original = torch.Tensor.backward
    def backward(self, *a, **k):
        original(self, *a, **k)
        if trainer.step + 1 == at:
            os.kill(os.getpid(), signal.SIGKILL)
    torch.Tensor.backward = backward
else:  # in the middle of writing checkpoint `at` (after its model file)
    original = checkpoint.save_file
    def save_file(tensors, path, *a, **k):
        original(tensors, path, *a, **k)
        if trainer.step == at:
            os.kill(os.getpid(), signal.SIGKILL)
    checkpoint.save_file = save_file
trainer = Trainer(cfg)
sys.exit(trainer.fit())
"""


def test_kill_9_anywhere_then_resume_is_bit_identical(data_dir, tmp_path, capsys):
    torch.set_num_threads(1)
    reference = tiny(data_dir, tmp_path / "ref")
    assert train(reference) == 0
    expected, expected_losses = final_tensors(reference.out), losses(reference.out)
    rng = random.Random(1234)
    trials = [("step", rng.randint(2, 6)), ("checkpoint", rng.randint(2, 5)), ("step", rng.randint(2, 6))]
    for i, (where, at) in enumerate(trials):
        cfg = tiny(data_dir, tmp_path / f"killed{i}")
        script = KILL_SCRIPT.format(options=cfg.to_dict(), where=where, at=at)
        proc = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        capsys.readouterr()
        assert train(cfg) == 0  # resumes from the newest good checkpoint
        # the kill hit step `at`, or checkpoint `at` before it was complete: both resume from checkpoint at - 1
        assert f"(step {at - 1})" in capsys.readouterr().err, (where, at)
        assert not list((Path(cfg.out) / "checkpoints").glob(".*")), "temporary checkpoint left behind"
        assert_same(final_tensors(cfg.out), expected)
        assert losses(cfg.out) == expected_losses, (where, at)


# ---- SIGTERM / SIGUSR1 ---------------------------------------------------------------------------------------------

def test_sigterm_from_outside_checkpoints_and_exits_75(data_dir, tmp_path):
    signum = signal.SIGTERM
    cfg = tiny(data_dir, tmp_path / "run", steps=100_000, ckpt_every=0)
    args = ["train", *[f"--{k.replace('_', '-')}={v}" for k, v in cfg.to_dict().items()
                       if k in ("model", "size", "hidden_size", "n_blocks", "n_heads", "data", "out", "steps",
                                "batch_size", "micro_batch_size", "ckpt_every", "log_every", "lr",
                                "warmup_steps")], "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "pysedd", *args], env=ENV, stderr=subprocess.PIPE, text=True)
    metrics = Path(cfg.out) / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED == 75, err
    step = int(ckpt.list_checkpoints(Path(cfg.out) / "checkpoints")[0].name.split("_")[1])
    assert step >= 2 and f"checkpoint at step {step} written" in err
    resumed = tiny(data_dir, cfg.out, steps=step + 1, ckpt_every=0)
    trainer = Trainer(resumed)
    assert trainer.fit() == 0 and trainer.step == step + 1


def test_sigusr1_mid_step_finishes_the_step_then_stops(data_dir, tmp_path, capsys):
    trainer = Trainer(tiny(data_dir, tmp_path / "run", steps=50, ckpt_every=0))
    forward = trainer.objective.forward

    def signalled(x0, generator=None):
        if trainer.step == 3:  # SLURM's warning arrives in the middle of step 4
            signal.raise_signal(signal.SIGUSR1)
        return forward(x0, generator=generator)

    trainer.objective.forward = signalled
    assert trainer.fit() == EXIT_PREEMPTED
    assert trainer.step == 4 and "checkpoint at step 4 written" in capsys.readouterr().err
    assert [d.name for d in ckpt.list_checkpoints(Path(trainer.cfg.out) / "checkpoints")] == ["step_00000004"]
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # handler restored


# ---- corrupt checkpoints and NaN -----------------------------------------------------------------------------------

def test_corrupt_checkpoint_falls_back_with_warning(data_dir, tmp_path):
    cfg = tiny(data_dir, tmp_path / "run", steps=3, keep_last=3)
    assert train(cfg) == 0
    dirs = ckpt.list_checkpoints(Path(cfg.out) / "checkpoints")
    assert [d.name for d in dirs] == ["step_00000003", "step_00000002", "step_00000001"]
    model_file = dirs[0] / "model.safetensors"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern, same size
    model_file.write_bytes(bytes(data))
    state_file = dirs[1] / "state.json"
    state_file.write_text(state_file.read_text()[:50])  # truncated
    trainer = Trainer(cfg)
    with pytest.warns(RuntimeWarning, match="corrupt") as record:
        trainer.resume()
    assert len(record) == 2 and trainer.step == 1


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data_dir, tmp_path, capsys):
    trainer = Trainer(tiny(data_dir, tmp_path / "run", steps=5))
    forward = trainer.objective.forward

    def poisoned(x0, generator=None):
        loss = forward(x0, generator=generator)
        return loss * float("nan") if trainer.step == 2 else loss

    trainer.objective.forward = poisoned
    assert trainer.fit() == EXIT_NONFINITE
    assert "non-finite loss nan" in capsys.readouterr().err
    assert [d.name for d in ckpt.list_checkpoints(Path(trainer.cfg.out) / "checkpoints")] == \
        ["step_00000002", "step_00000001"]


# ---- DDP -----------------------------------------------------------------------------------------------------------

def test_two_process_gloo_ddp_equals_one_process(data_dir, tmp_path):
    torch.set_num_threads(1)
    single = tiny(data_dir, tmp_path / "one", steps=3, ckpt_every=0)  # micro 2 x accumulation 2
    assert train(single) == 0
    args = ["--model=sedd", "--size=tiny", "--hidden-size=32", "--n-blocks=1", "--n-heads=2", f"--data={data_dir}",
            f"--out={tmp_path / 'two'}", "--steps=3", "--batch-size=4", "--micro-batch-size=2", "--warmup-steps=2",
            "--lr=0.001", "--log-every=1", "--ckpt-every=0", "--device=cpu", "--no-progress"]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "pysedd", "train", *args], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same(final_tensors(tmp_path / "two"), final_tensors(single.out), exact=False, atol=1e-6)
    for (s1, l1), (s2, l2) in zip(losses(single.out), losses(tmp_path / "two")):
        assert s1 == s2 and l1 == pytest.approx(l2, rel=1e-5)


# ---- exports and bad input -----------------------------------------------------------------------------------------

def test_exports_load_with_from_pretrained(data_dir, tmp_path):
    from pysedd.ar import load_ar_model
    from pysedd.loader import load
    from pysedd.model import SEDD

    sedd = tiny(data_dir, tmp_path / "sedd", steps=2, ckpt_every=0)
    assert train(sedd) == 0
    model = SEDD.from_pretrained(Path(sedd.out) / "export")
    shadow = load_file(str(ckpt.list_checkpoints(Path(sedd.out) / "checkpoints")[0] / "ema.safetensors"))
    assert torch.equal(next(iter(model.parameters())), shadow["0"])  # the export holds the EMA weights
    gpt2 = tiny(data_dir, tmp_path / "gpt2", model="gpt2", steps=2, ckpt_every=0)
    assert train(gpt2) == 0
    ar = load_ar_model(str(Path(gpt2.out) / "export"))
    assert ar.config.n_embd == 32 and ar.config.n_layer == 1 and ar.config.vocab_size == 50257
    # --init-from takes what the loader takes: here both run directories themselves (their exports, EMA weights)
    for run, kind in ((sedd, "sedd"), (gpt2, "gpt2")):
        again = Trainer(tiny(data_dir, tmp_path / f"again-{kind}", model=kind, init_from=run.out))
        assert torch.equal(next(again.model.parameters()), next(load(run.out, kind, "cpu").model.parameters()))


def test_bad_inputs(data_dir, tmp_path, capsys):
    with pytest.raises(UserError, match="model must be one of sedd, gpt2"):
        TrainConfig(model="bert")
    with pytest.raises(UserError, match="not a multiple of micro_batch_size 3"):
        TrainConfig(batch_size=8, micro_batch_size=3).accumulation(1)
    with pytest.raises(UserError, match="not divisible by the 3 processes"):
        TrainConfig(batch_size=8).accumulation(3)
    with pytest.raises(UserError, match="unknown field.*training options"):
        TrainConfig.from_dict({"stepz": 3})
    bad_yaml = tmp_path / "c.yaml"
    bad_yaml.write_text("steps: 3\npreset: huge\n")
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        TrainConfig.from_file(bad_yaml)
    assert main(["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "is not a prepared dataset" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            Trainer(tiny(data_dir, tmp_path / "o", device="cuda"))
    with pytest.raises(UserError, match="unknown device 'tpu9'"):
        Trainer(tiny(data_dir, tmp_path / "o", device="tpu9"))
    with pytest.raises(UserError, match="cannot load a causal LM from 'gpt2-medium'"):
        Trainer(tiny(data_dir, tmp_path / "o", model="gpt2", init_from="gpt2-medium"))  # offline in tests
    with pytest.raises(UserError, match="has no split 'nope'"):
        Trainer(tiny(data_dir, tmp_path / "o", eval_every=1, val_split="nope"))


def test_fused_and_plain_sedd_loss_agree(data_dir, tmp_path):
    fused = Trainer(tiny(data_dir, tmp_path / "f"))
    plain = Trainer(tiny(data_dir, tmp_path / "p", fused_loss=False))
    assert fused.objective.fused and not plain.objective.fused
    plain.model.load_state_dict(fused.model.state_dict())
    x0 = fused.train_data.batch([0, 1, 2, 3])
    a = fused.objective(x0, generator=torch.Generator().manual_seed(5))
    b = plain.objective(x0, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)


def test_config_precedence_preset_file_flags(tmp_path):
    from pysedd.cli import build_parser
    from pysedd.commands.train import config_from_args

    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("model: gpt2\nsteps: 30\nlr: 1.0e-4\nbetas: [0.9, 0.95]\n")
    assert TrainConfig.from_file(cfg_file).betas == (0.9, 0.95)
    args = build_parser().parse_args(["train", "--preset", "cpu-tiny", "--config", str(cfg_file), "--steps", "7"])
    cfg = config_from_args(args)
    assert (cfg.model, cfg.steps, cfg.lr, cfg.batch_size, cfg.warmup_steps) == ("gpt2", 7, 1e-4, 8, 20)
    paper = TrainConfig.preset("paper-small")
    assert (paper.size, paper.batch_size, paper.lr, paper.warmup_steps, paper.ema_decay, paper.grad_clip,
            paper.betas, paper.eps, paper.weight_decay) == ("small", 512, 3e-4, 2500, 0.9999, 1.0, (0.9, 0.999),
                                                             1e-8, 0.0)


def test_warmup_lr_of_the_nth_update_is_lr_times_n_over_warmup(data_dir, tmp_path):
    """The reference increments state['step'] before optimize_fn, so update n (1-based) uses lr * min(n / warmup, 1):
    lr/2, lr, lr for warmup 2 (not 0, lr/2, lr: a first update with lr 0 is a wasted step)."""
    import json

    train(tiny(data_dir, tmp_path / "w", steps=3, ckpt_every=0))
    records = [json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records if "lr" in r] == pytest.approx([5e-4, 1e-3, 1e-3])
