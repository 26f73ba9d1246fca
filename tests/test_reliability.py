"""Trainer and data under faults, concurrency and bad input (issue 12 §4–11, issue 13 §1 on the trainer side).

Every case here is something a real job meets: kill -9, signals during start-up, bit flips, a full or read-only disk,
two writers, a resubmitted job with other settings. Models are test-sized (width 32, one block).
"""
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from pysedd.cli import main
from pysedd.data import PackedDataset, open_corpus, prepare_corpus
from pysedd.data import packing
from pysedd.errors import UserError
from pysedd.tokenizer import get_tokenizer
from pysedd.train import TrainConfig, Trainer, train
from pysedd import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
TINY = dict(model="sedd", size="tiny", hidden_size=32, n_blocks=1, n_heads=2, steps=3, batch_size=4,
            micro_batch_size=2, warmup_steps=2, lr=1e-3, log_every=1, ckpt_every=1, keep_last=3, progress=False)


def tiny(data_dir, out, **kw):
    return TrainConfig(**{**TINY, "data": str(data_dir), "out": str(out), **kw})


def cli_args(cfg: TrainConfig, *extra) -> list[str]:
    """`pysedd train` flags reproducing a TrainConfig (every field that differs from the defaults)."""
    defaults = TrainConfig().to_dict()
    args = ["train", "--no-progress"]
    for key, value in cfg.to_dict().items():
        if value != defaults[key] and key not in ("progress", "betas", "fused_loss", "supersede"):
            args.append(f"--{key.replace('_', '-')}={value}")
    return [*args, *extra]


def last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("pysedd: error: "), err
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def run_cli(args, preexec_fn=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pysedd", *args], env=ENV, capture_output=True, text=True,
                          preexec_fn=preexec_fn, timeout=timeout)


@pytest.fixture
def readonly_dir(tmp_path):
    """A directory nobody may write to: a read-only tmpfs mount (root can mount), /sys when root may not mount
    (sysfs refuses new entries even to root), or a chmod 555 directory for a normal user."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)], capture_output=True).returncode:
        yield Path("/sys")
        return
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """(directory, preexec_fn) where writes beyond a few hundred kB fail: a 256 kB tmpfs when we may mount (ENOSPC),
    otherwise an RLIMIT_FSIZE of 256 kB for the child process (EFBIG; Python ignores SIGXFSZ)."""
    d = tmp_path / "small"
    d.mkdir()
    if os.geteuid() == 0 and not subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(d)],
                                                capture_output=True).returncode:
        try:
            yield d, None
        finally:
            subprocess.run(["umount", str(d)], check=True)
        return
    yield d, lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))


def tensors(out):
    from safetensors.torch import load_file

    path = ckpt.list_checkpoints(Path(out) / "checkpoints")[0]
    return {name: load_file(str(path / name)) for name in ("model.safetensors", "ema.safetensors",
                                                           "optimizer.safetensors")}


# ---- §4 determinism at the default thread count -------------------------------------------------------------------

DETERMINISM_SCRIPT = """
import sys, torch
from pysedd.train import TrainConfig, train
print(torch.get_num_threads())
sys.exit(train(TrainConfig(**{options!r})))
"""


@pytest.mark.slow
def test_two_runs_at_the_default_thread_count_are_bit_identical(tmp_path):
    """The SEDD embedding's backward (index_put with accumulation) sums duplicate tokens in a thread-dependent order
    unless deterministic algorithms are on; 128-token blocks of real text have enough duplicates to show it."""
    data = tmp_path / "demo128"
    prepare_corpus(open_corpus("demo"), data, get_tokenizer(), seq_len=128, progress=False)
    env = {k: v for k, v in ENV.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}  # torch's default
    runs = []
    for i in range(2):
        cfg = tiny(data, tmp_path / f"run{i}", hidden_size=64, steps=6, batch_size=8, micro_batch_size=8,
                   ckpt_every=0)
        script = DETERMINISM_SCRIPT.format(options=cfg.to_dict())
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        if int(proc.stdout.split()[0]) < 2:
            pytest.skip("torch's default is one thread here: nothing runs in parallel")
        runs.append(tensors(cfg.out))
    for name in runs[0]:
        for key in runs[0][name]:
            assert torch.equal(runs[0][name][key], runs[1][name][key]), f"{name}:{key} differs between runs"


# ---- §5 export ------------------------------------------------------------------------------------------------------

EXPORT_KILL = """
import os, signal, sys
from pysedd.train import TrainConfig, Trainer
trainer = Trainer(TrainConfig(**{options!r}))
save = trainer.objective.save_pretrained
def killed(directory):  # the GPT-2 weights and config are written, the tokenizer files are not
    save(directory)
    os.kill(os.getpid(), signal.SIGKILL)
trainer.objective.save_pretrained = killed
sys.exit(trainer.fit())
"""


@pytest.mark.slow
def test_kill_9_during_export_leaves_no_export_and_a_rerun_completes_it(data_dir, tmp_path):
    cfg = tiny(data_dir, tmp_path / "run", model="gpt2", steps=2)
    proc = subprocess.run([sys.executable, "-c", EXPORT_KILL.format(options=cfg.to_dict())], env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    out = Path(cfg.out)
    assert not (out / "export").exists()  # `[ -d export ] || scontrol requeue` reads "not finished"
    assert [p.name for p in out.glob(".export.tmp-*")]  # the half-written export is a hidden temp directory
    assert train(cfg) == 0
    assert not list(out.glob(".export*"))  # the next run removed the stale temp directory
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in
                                                                                (out / "export").iterdir()}


# ---- §6 state.json checksum -----------------------------------------------------------------------------------------

def flip_in_state(path: Path, key: str) -> None:
    """One bit flipped in the first digit of `key`'s value (e.g. "step": 2 -> 3, 0x32 ^ 0x01)."""
    text = (path / "state.json").read_bytes()
    at = text.index(f'"{key}": '.encode()) + len(key) + 4
    (path / "state.json").write_bytes(text[:at] + bytes([text[at] ^ 0x01]) + text[at + 1:])


def test_a_bit_flip_anywhere_in_state_json_falls_back_to_an_older_checkpoint(data_dir, tmp_path):
    cfg = tiny(data_dir, tmp_path / "run", steps=4, keep_last=4)
    assert train(cfg) == 0
    dirs = ckpt.list_checkpoints(Path(cfg.out) / "checkpoints")
    flip_in_state(dirs[0], "num_updates")  # EMA updates 4 -> 5
    flip_in_state(dirs[1], "last_epoch")  # scheduler
    flip_in_state(dirs[2], "step")  # 2 -> 3: the directory says 2
    trainer = Trainer(cfg)
    try:
        with pytest.warns(RuntimeWarning, match="corrupt") as record:
            trainer.resume()
    finally:
        trainer.close()
    assert len(record) == 3 and trainer.step == 1


# ---- §7 data integrity ----------------------------------------------------------------------------------------------

def test_same_size_bit_flip_in_train_bin_is_refused_and_prepare_rebuilds(tmp_path, data_dir, capsys):
    tok = get_tokenizer()
    data = tmp_path / "data"
    prepare_corpus(open_corpus("demo"), data, tok, seq_len=16, progress=False)
    original = (data / "train.bin").read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 3] ^= 0x04
    (data / "train.bin").write_bytes(bytes(flipped))
    assert main(cli_args(tiny(data, tmp_path / "run"))) == 2
    assert "does not match the sha256 in its manifest" in last_error(capsys)
    assert main(["prepare", "demo", "--out", str(data), "--seq-len", "16"]) == 0  # same request: rebuilt, not kept
    assert (data / "train.bin").read_bytes() == original


def test_sampled_pages_catch_a_flip_in_a_large_file(tmp_path, monkeypatch):
    """Above FULL_VERIFY_BYTES the default check hashes the last page and SAMPLED_PAGES random ones."""
    monkeypatch.setattr(packing, "PAGE_BYTES", 4096)
    data = tmp_path / "data"
    manifest = prepare_corpus(open_corpus("demo"), data, get_tokenizer(), seq_len=16, progress=False)
    pages = manifest["splits"]["train"]["pages_sha256"]
    assert len(pages) == -(-(data / "train.bin").stat().st_size // 4096) > 8
    monkeypatch.setattr(packing, "FULL_VERIFY_BYTES", 0)
    monkeypatch.setattr(packing, "SAMPLED_PAGES", len(pages))  # every page: a flip anywhere is caught
    PackedDataset(data)
    blob = bytearray((data / "train.bin").read_bytes())
    blob[5 * 4096 + 7] ^= 0x10
    (data / "train.bin").write_bytes(bytes(blob))
    with pytest.raises(UserError, match="does not match the sha256"):
        PackedDataset(data)
    monkeypatch.setattr(packing, "SAMPLED_PAGES", 0)  # only the last page: this flip is not seen
    PackedDataset(data)
    with pytest.raises(UserError, match="does not match the sha256"):
        PackedDataset(data, verify="full")
    assert len(PackedDataset(data, verify="size")) == manifest["splits"]["train"]["blocks"]


def test_malformed_manifest_is_one_line_for_train_and_rebuilt_by_prepare(tmp_path, capsys):
    data = tmp_path / "data"
    prepare_corpus(open_corpus("demo"), data, get_tokenizer(), seq_len=16, progress=False)
    manifest = json.loads((data / "manifest.json").read_text())
    for broken, message in [({k: v for k, v in manifest.items() if k != "splits"}, "has no 'splits' mapping"),
                            ({**manifest, "seq_len": "16"}, "seq_len must be a positive integer"),
                            ({**manifest, "splits": {"train": {**manifest["splits"]["train"], "file": "../x.bin"}}},
                             "names no plain file")]:
        (data / "manifest.json").write_text(json.dumps(broken))
        assert main(cli_args(tiny(data, tmp_path / "run"))) == 2
        line = last_error(capsys)
        assert "manifest.json is malformed: " in line and message in line
    assert main(["prepare", "demo", "--out", str(data), "--seq-len", "16"]) == 0
    assert json.loads((data / "manifest.json").read_text())["splits"] == manifest["splits"]


# ---- §8 signals during start-up ------------------------------------------------------------------------------------

def catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler installed for `signum` (the SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_during_start_up_exits_75_with_a_message(data_dir, tmp_path, signum):
    cfg = tiny(data_dir, tmp_path / "run", steps=100)
    proc = subprocess.Popen([sys.executable, "-m", "pysedd", *cli_args(cfg)], env=ENV, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 60
    while not catches(proc.pid, signum) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signum)  # the handler is in place; data, model and resume are still loading
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert "stop signal received during start-up, before the first step" in err
    assert not ckpt.list_checkpoints(Path(cfg.out) / "checkpoints")


@pytest.mark.parametrize("command", ["train", "distill"])
def test_stop_handlers_are_installed_before_torch_loads(tmp_path, command):
    """Whenever the process has loaded torch, its SIGTERM/SIGUSR1 handlers are already in place, so no signal after
    the interpreter reaches pysedd can kill a checkpointing command (reading /proc/PID/maps before the status makes
    each observation sound: the handlers were installed before the library showed up)."""
    proc = subprocess.Popen([sys.executable, "-m", "pysedd", command, "--out", str(tmp_path / "run")], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen_torch, deadline = False, time.time() + 60
    try:
        while proc.poll() is None and time.time() < deadline and not seen_torch:
            try:
                seen_torch = "libtorch" in Path(f"/proc/{proc.pid}/maps").read_text()
                handlers = [catches(proc.pid, s) for s in (signal.SIGTERM, signal.SIGUSR1)]
            except (FileNotFoundError, ProcessLookupError):
                break
            if seen_torch:
                assert all(handlers), "torch was loaded before the stop handlers were installed"
    finally:
        proc.kill()
        proc.wait()
    assert seen_torch, "the command ended before it loaded torch"


# ---- §9 and issue 13 §1: one trajectory per run directory -------------------------------------------------------

def snapshot(out: Path) -> dict:
    return {str(p.relative_to(out)): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(out.rglob("*"))
            if p.name != ".pysedd.lock"}


def test_other_settings_are_refused_without_touching_the_run(data_dir, tmp_path, capsys):
    cfg = tiny(data_dir, tmp_path / "run", steps=2)
    assert main(cli_args(cfg)) == 0
    out = Path(cfg.out)
    before = snapshot(out)
    for changed, named in [(dict(seed=1), "seed 0 -> 1"), (dict(model="gpt2"), "model 'sedd' -> 'gpt2'"),
                           (dict(hidden_size=64), "hidden_size 32 -> 64"), (dict(lr=2e-3), "lr 0.001 -> 0.002")]:
        assert main(cli_args(tiny(data_dir, out, steps=2, **changed))) == 2
        line = last_error(capsys)
        assert "holds a run with other settings" in line and named in line and "--supersede" in line
        assert snapshot(out) == before  # config.json, checkpoints, metrics, export: untouched


def test_code_cadence_and_longer_steps_continue_the_run(data_dir, tmp_path, capsys):
    cfg = tiny(data_dir, tmp_path / "run", steps=2)
    assert main(cli_args(cfg)) == 0
    capsys.readouterr()
    longer = tiny(data_dir, cfg.out, steps=4, log_every=2, ckpt_every=3, keep_last=5, micro_batch_size=4)
    assert main(cli_args(longer, "--verify-data=full")) == 0
    err = capsys.readouterr().err
    assert "(step 2)" in err and "removed" in err and "export" in err  # resumed; the shorter run's export replaced
    assert [d.name for d in ckpt.list_checkpoints(Path(cfg.out) / "checkpoints")] == \
        ["step_00000004", "step_00000003", "step_00000002", "step_00000001"]
    assert (Path(cfg.out) / "export" / "model.safetensors").is_file()


def test_fewer_steps_than_the_run_holds_is_refused(data_dir, tmp_path, capsys):
    """A run at step 4 is not the 2-step model: resuming it would export 4 steps of training under steps=2."""
    cfg = tiny(data_dir, tmp_path / "run", steps=4)
    assert main(cli_args(cfg)) == 0
    before = snapshot(Path(cfg.out))
    assert main(cli_args(tiny(data_dir, cfg.out, steps=2))) == 2
    assert "it is at step 4, past steps 2" in last_error(capsys)
    assert snapshot(Path(cfg.out)) == before
    assert main(cli_args(tiny(data_dir, cfg.out, steps=2), "--supersede")) == 0
    assert ckpt.stored_run(Path(cfg.out) / "checkpoints")[1] == 2


def test_supersede_moves_the_old_run_aside(data_dir, tmp_path, capsys):
    cfg = tiny(data_dir, tmp_path / "run", steps=2)
    assert main(cli_args(cfg)) == 0
    out = Path(cfg.out)
    old = snapshot(out)
    assert main(cli_args(tiny(data_dir, out, steps=2, seed=7), "--supersede")) == 0
    aside = [p for p in out.iterdir() if p.name.startswith("superseded-")]
    assert len(aside) == 1 and "moved the run with other settings aside" in capsys.readouterr().err
    assert snapshot(aside[0]) == old  # every file of the old run, unchanged (renamed, never deleted)
    assert ckpt.stored_run(out / "checkpoints")[0]["seed"] == 7


# ---- §10 two writers ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_second_trainer_on_one_out_is_refused_and_the_lock_survives_no_kill_9(data_dir, tmp_path, capsys):
    cfg = tiny(data_dir, tmp_path / "run", steps=100_000, ckpt_every=2)
    first = subprocess.Popen([sys.executable, "-m", "pysedd", *cli_args(cfg)], env=ENV, stderr=subprocess.PIPE)
    metrics = Path(cfg.out) / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3) and time.time() < deadline:
        time.sleep(0.05)
    try:
        assert main(cli_args(cfg)) == 2
        assert f"is in use by another pysedd process (pid {first.pid})" in last_error(capsys)
    finally:
        first.kill()  # kill -9: the kernel drops the lock with the process
        first.communicate()
    lines = metrics.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, len(lines) + 1))  # nobody else wrote
    step = int(ckpt.list_checkpoints(Path(cfg.out) / "checkpoints")[0].name[5:])
    assert main(cli_args(tiny(data_dir, cfg.out, steps=step + 1, ckpt_every=2))) == 0


def test_second_prepare_on_one_out_is_refused(tmp_path, capsys):
    out = tmp_path / "data"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pysedd.io import DirLock
        DirLock({str(out)!r})
        print("locked", flush=True)
        time.sleep(120)
    """)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["prepare", "demo", "--out", str(out), "--seq-len", "16"]) == 2
        assert "is in use by another pysedd process" in last_error(capsys)
    finally:
        holder.kill()
        holder.communicate()
    assert main(["prepare", "demo", "--out", str(out), "--seq-len", "16"]) == 0  # stale lock of a killed holder


# ---- §11 and disk full ----------------------------------------------------------------------------------------------

def test_stale_temporaries_of_killed_writers_are_removed(data_dir, tmp_path):
    cfg = tiny(data_dir, tmp_path / "run", steps=1)
    out = Path(cfg.out)
    for stale in (out / "checkpoints" / ".step_00000009.tmp-99999", out / ".export.tmp-99999",
                  out / ".export.old-99999"):
        stale.mkdir(parents=True)
        (stale / "model.safetensors").write_bytes(b"\0" * 1000)
    assert train(cfg) == 0
    assert not [p for p in out.rglob(".*") if p.name != ".pysedd.lock"]


@pytest.mark.slow
def test_disk_full_during_training_is_one_line_and_leaves_no_temporaries(data_dir, small_disk):
    directory, limit = small_disk
    cfg = tiny(data_dir, directory / "run", steps=2)
    proc = run_cli(cli_args(cfg), preexec_fn=limit)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("pysedd: error: ") and ("No space left" in line or "File too large" in line), line
    assert "Traceback" not in proc.stderr
    out = Path(cfg.out)
    assert not ckpt.list_checkpoints(out / "checkpoints") and not (out / "export").exists()
    assert not [p for p in out.rglob(".*") if p.name != ".pysedd.lock"]  # the failed checkpoint's temp dir removed


def test_disk_full_during_prepare_is_one_line_and_leaves_no_manifest(small_disk):
    directory, limit = small_disk
    proc = run_cli(["prepare", "demo", "--out", str(directory / "data"), "--seq-len", "16"], preexec_fn=limit)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("pysedd: error: ") and ("No space left" in line or "File too large" in line), line
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in (directory / "data").iterdir()) == [".pysedd.lock"]


def fill(directory: Path) -> None:
    """Writes a filler file until the file system is full."""
    try:
        with open(directory / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:  # ENOSPC, on a write or on the final flush
        pass


def test_disk_full_in_sample_and_eval_is_one_line_and_leaves_no_result(small_disk, tmp_path):
    directory, limit = small_disk
    if limit is not None:
        pytest.skip("needs a small tmpfs (root): a per-file size limit does not fill a disk")
    samples = tmp_path / "s.npz"
    sample = ["sample", "--model", "tiny", "--kind", "sedd", "--length", "16", "--num-samples", "2", "--steps", "2",
              "--device", "cpu"]
    assert run_cli([*sample, "--out", str(samples)]).returncode == 0
    fill(directory)
    for args, out in [([*sample, "--out", str(directory / "s.npz")], directory / "s.npz"),
                      (["eval", "diversity", "--samples", str(samples), "--out", str(directory / "d.json")],
                       directory / "d.json")]:
        proc = run_cli(args)
        assert proc.returncode == 2, proc.stderr[-2000:]
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith("pysedd: error: ") and "No space left" in line and "Traceback" not in proc.stderr, line
        assert sorted(p.name for p in directory.iterdir()) == ["filler"], out  # no result, no temporary


# ---- bad input ------------------------------------------------------------------------------------------------------

def test_bad_outputs_and_paths_are_one_line(data_dir, tmp_path, readonly_dir, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    cases = [
        (cli_args(tiny(data_dir, a_file)), f"--out {a_file} is an existing file, not a directory"),
        (["prepare", "demo", "--out", str(a_file)], f"--out {a_file} is an existing file, not a directory"),
        (cli_args(tiny(data_dir, a_file / "run")), "a parent of it is a file"),
        (cli_args(tiny(data_dir, readonly_dir / "run")), f"{readonly_dir / 'run'}"),
        (["prepare", "demo", "--out", str(readonly_dir / "data")], f"{readonly_dir / 'data'}"),
        (["prepare", "--path", str(tmp_path), "--out", str(tmp_path / "d")],
         f"corpus file {tmp_path} is a directory, not a file"),
        (["train", "--config", str(tmp_path), "--data", str(data_dir)], f"config file {tmp_path} is a directory"),
        (cli_args(tiny(a_file, tmp_path / "r")), f"{a_file} is a file, not a prepared dataset"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        assert message in last_error(capsys), args
    assert not (readonly_dir / "run").exists() and not (readonly_dir / "data").exists()


def test_outputs_that_cannot_be_files_are_refused_before_any_work(data_dir, tmp_path, readonly_dir, capsys):
    """sample, eval, bench and frontier check --out (and --table, --plot, ...) first: a directory, a path below a
    file or a read-only place is one line naming the flag, and nothing is sampled or left behind."""
    a_dir, a_file = tmp_path / "adir", tmp_path / "file"
    a_dir.mkdir()
    a_file.write_text("x")
    sample = ["sample", "--model", "tiny", "--kind", "sedd", "--length", "16", "--num-samples", "2", "--steps", "2",
              "--device", "cpu", "--out"]
    samples = tmp_path / "s.npz"
    assert main([*sample, str(samples)]) == 0
    diversity = ["eval", "diversity", "--samples", str(samples), "--out"]
    latency = ["bench", "latency", "--sedd", "tiny", "--gpt2", "tiny", "--length", "8", "--steps", "2", "--out"]
    for args, message in [([*sample, str(a_dir)], f"--out {a_dir} is a directory; give a file name"),
                          ([*diversity, str(a_dir)], f"--out {a_dir} is a directory"),
                          ([*diversity, str(tmp_path / "d.json"), "--table", str(a_dir)], f"--table {a_dir} is a"),
                          ([*latency, str(a_dir)], f"--out {a_dir} is a directory"),
                          ([*sample, str(a_file / "s.npz")], f"{a_file} is a file, not a directory"),
                          ([*sample, str(readonly_dir / "s.npz")], str(readonly_dir)),
                          ([*diversity, str(readonly_dir / "d.json")], str(readonly_dir))]:
        assert main(args) == 2, args
        assert message in last_error(capsys), args
    assert sorted(p.name for p in a_dir.iterdir()) == []  # no shards of a refused sampling run
    assert not list(tmp_path.glob("adir.*")) and not (tmp_path / "d.json").exists()
    assert main(["train", "--preset", "cpu-tiny", "--data", str(data_dir), "--out", str(tmp_path / "run"),
                 "--device", "bogus"]) == 2
    assert "device" in last_error(capsys) and not (tmp_path / "run").exists()


def test_bad_training_options_are_one_line(data_dir, tmp_path, capsys):
    for text, message in [("steps: ten\n", "steps must be an int, got 'ten'"),
                          ("betas: [2.0, 0.5]\n", "betas must both be in [0, 1)"),
                          ("log_every: 1.5\n", "log_every must be an int, got 1.5"),
                          ("lr: 3e-4\n", "lr must be a number, got the text '3e-4'"),
                          ("progress: 'no'\n", "progress must be a bool"),
                          ("betas: 0.9\n", "betas must be two numbers")]:
        config = tmp_path / "c.yaml"
        config.write_text(text)
        assert main(["train", "--config", str(config), "--data", str(data_dir), "--out", str(tmp_path / "o")]) == 2
        assert message in last_error(capsys), text
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match=r"betas must both be in \[0, 1\).*got \[2.0, 0.5\]"):
        TrainConfig(betas=(2.0, 0.5))
    with pytest.raises(ValueError, match="verify_data must be auto, full or size"):
        TrainConfig(verify_data="sometimes")
