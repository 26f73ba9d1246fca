"""One trainer for SEDD and the GPT-2 baseline: same data, same optimizer recipe, same checkpoints.

Reproducibility: the data order (a seeded permutation per epoch) and all the randomness of a micro-batch (diffusion
time, noising, dropout) are pure functions of (seed, step, micro-batch index). So a run resumed from a checkpoint
replays exactly what the uninterrupted run would have done, and N DDP processes see the same samples and noise as one
process that accumulates the same N micro-batches. On CPU, training runs with torch's deterministic algorithms (the
backward of SEDD's embedding lookup, an index_put with accumulation, otherwise sums duplicate tokens in an order that
depends on thread scheduling), so two runs of one command on the same thread count are bit-identical, and so is a
resumed run. On GPU the data order and random draws are identical; bit-identical weights are not promised.

The run directory belongs to one trajectory: the settings that change what is computed (`TrainConfig.trajectory`
plus the identity of the training data) are stored in every checkpoint; a command with other settings is refused
before it writes anything, unless ``supersede`` moves the old run aside (never deleted). Options that do not change
the trajectory (steps, logging and checkpoint cadence, device, processes) may differ between attempts: a larger
``steps`` continues the run.

Exit codes: 0 finished, 2 bad input, EXIT_NONFINITE (3) NaN/inf loss or gradient (the last good checkpoint is kept),
EXIT_PREEMPTED (75, EX_TEMPFAIL) stopped by SIGTERM/SIGUSR1 after checkpointing: run the same command again to resume.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from pysedd.io import LOCK_NAME, DirLock, atomic_dir, atomic_write_text, remove_stale_temps
from pysedd.data import PackedDataset
from pysedd.errors import UserError
from pysedd.signals import StopRequest
from pysedd import checkpoint as ckpt
from pysedd.train.config import TrainConfig
from pysedd.train.ema import EMA
from pysedd.train.models import build_objective

EXIT_NONFINITE = 3
EXIT_PREEMPTED = 75


def seed_for(*parts: int) -> int:
    """A 63-bit seed that depends on every part (seed, step, micro-batch, ...)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SampleOrder:
    """Global sample position g → dataset index: epoch g // n is a permutation seeded by (seed, epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._epoch, self._perm = -1, None

    def indices(self, start: int, count: int) -> list[int]:
        out = []
        for g in range(start, start + count):
            epoch = g // self.n
            if epoch != self._epoch:
                gen = torch.Generator().manual_seed(seed_for(self.seed, epoch))
                self._epoch, self._perm = epoch, torch.randperm(self.n, generator=gen)
            out.append(int(self._perm[g % self.n]))
        return out


def lr_factor(step: int, warmup: int) -> float:
    """Linear warm-up then constant: lr·min(step/warmup, 1), step = the 1-based number of the update (the reference
    increments its step before optimize_fn)."""
    return min(step / warmup, 1.0) if warmup > 0 else 1.0


class _Distributed:
    """torch.distributed set-up from torchrun's environment (single process when WORLD_SIZE is unset)."""

    def __init__(self, device_name: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device_name == "auto":
            device_name = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        elif device_name == "cuda":
            device_name = f"cuda:{local}"
        try:
            self.device = torch.device(device_name)
        except RuntimeError:
            raise UserError(f"unknown device {device_name!r}; use auto, cpu, cuda or cuda:N") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"device {device_name!r} requested but CUDA is not available; use --device cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.world
        return value

    def any(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


class _Metrics:
    """metrics.jsonl (truncated back to the resumed step, so a resumed run's log reads as one run) + TensorBoard."""

    def __init__(self, out: Path, resume_step: int, enabled: bool):
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and _json_step(line) is not None and _json_step(line) <= resume_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self.file = open(self.path, "a", buffering=1)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step + 1)
        except ImportError:  # tensorboard is optional
            pass

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def _json_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _describe_differences(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


class Trainer:
    def __init__(self, cfg: TrainConfig, stop: StopRequest | None = None, build=build_objective):
        """``build(cfg, seq_len)`` makes the objective module (another objective, e.g. distillation, plugs in here)."""
        self.cfg = cfg
        self.stop = stop
        self.build = build
        self.dist = _Distributed(cfg.device)
        self.out = Path(cfg.out)
        self.lock = DirLock(self.out) if self.dist.main else None  # one writer per run directory
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Releases the run directory (the lock also goes when the process dies)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _setup(self) -> None:
        cfg = self.cfg
        if not cfg.data:
            raise UserError("no training data: pass --data DIR (made by `pysedd prepare`)")
        self.train_data = PackedDataset(cfg.data, cfg.train_split, verify=cfg.verify_data)
        self.seq_len = self.train_data.seq_len
        self.val_data = None
        if cfg.eval_every:
            if cfg.val_split not in self.train_data.manifest["splits"]:
                raise UserError(f"eval_every is set but {cfg.data} has no split {cfg.val_split!r}")
            self.val_data = PackedDataset(cfg.data, cfg.val_split, verify=cfg.verify_data)
        self.micro, self.accum = cfg.accumulation(self.dist.world)
        split = self.train_data.manifest["splits"][cfg.train_split]
        self.trajectory = {**cfg.trajectory(), "data_sha256": split["sha256"], "seq_len": self.seq_len}
        if self.dist.main:
            self._claim_run_dir()
        self.dist.barrier()  # the other ranks read checkpoints only once rank 0 has claimed the run directory
        self.order = SampleOrder(len(self.train_data), cfg.seed)

        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.objective = self.build(cfg, self.seq_len).to(self.dist.device)
        self.model = self.objective.model
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                           weight_decay=cfg.weight_decay, fused=True)  # one kernel, CPU and GPU
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step + 1, cfg.warmup_steps))  # LambdaLR's step counts from 0
        self.ema = EMA(self.model.parameters(), cfg.ema_decay)
        self.step = 0
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.dist.device.type == "cuda")
        self.autocast = (lambda: torch.autocast(self.dist.device.type, dtype=torch.bfloat16)) if bf16 \
            else contextlib.nullcontext

    # -- the run directory and checkpoints ----------------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def _claim_run_dir(self) -> None:
        """Removes what a killed writer left, and refuses (or, with ``supersede``, moves aside) a run of another
        trajectory, before anything in the run directory is written."""
        remove_stale_temps(self.out)
        remove_stale_temps(self.ckpt_dir)
        stored = ckpt.stored_run(self.ckpt_dir)
        if stored is None:
            return
        trajectory, step = stored
        if trajectory == self.trajectory and step <= self.cfg.steps:
            return
        if not self.cfg.supersede:
            changed = (_describe_differences(trajectory, self.trajectory) if trajectory != self.trajectory
                       else f"it is at step {step}, past steps {self.cfg.steps}")
            raise UserError(f"{self.out} holds a run with other settings ({changed}); use another --out, or "
                            "--supersede to move that run aside and start afresh")
        aside = self.out / time.strftime("superseded-%Y%m%dT%H%M%SZ", time.gmtime())
        aside.mkdir()
        for entry in sorted(self.out.iterdir()):
            if entry.name != LOCK_NAME and not entry.name.startswith("superseded-"):
                os.rename(entry, aside / entry.name)
        print(f"pysedd train: moved the run with other settings aside into {aside}", file=sys.stderr)

    def resume(self) -> None:
        state = ckpt.load_latest(self.ckpt_dir, self.model, self.ema, self.optimizer, self.scheduler,
                                 self.dist.device)
        if state is None:
            return
        if state.get("trajectory") != self.trajectory:  # claimed at start-up; a guard against mixing runs
            raise UserError(f"{state['path']} belongs to a run with other settings; use another --out or --supersede")
        self.step = state["step"]
        if self.dist.main:
            print(f"pysedd train: resumed from {state['path']} (step {self.step})", file=sys.stderr)

    def save(self) -> None:
        if self.dist.main:
            extra = {"samples_seen": self.step * self.cfg.batch_size, "seed": self.cfg.seed,
                     "world_size": self.dist.world, "seq_len": self.seq_len, "config": self.cfg.to_dict(),
                     "trajectory": self.trajectory}
            ckpt.save_checkpoint(self.ckpt_dir, self.step, self.model, self.ema, self.optimizer, self.scheduler,
                                 extra)
            ckpt.prune(self.ckpt_dir, self.cfg.keep_last)
        self.dist.barrier()

    @property
    def export_dir(self) -> Path:
        return self.out / "export"

    def export(self) -> Path:
        """The EMA weights in from_pretrained format (SEDD.save_pretrained / GPT2 save_pretrained + tokenizer),
        written into a temporary directory renamed onto export/ when complete: export/ exists only once training has
        finished and everything in it is written."""
        if self.dist.main:
            with atomic_dir(self.export_dir) as tmp:
                with self.ema.swapped_in():
                    self.objective.save_pretrained(tmp)
                if self.cfg.model == "gpt2":
                    from pysedd.tokenizer import get_tokenizer

                    get_tokenizer().as_transformers_tokenizer().save_pretrained(tmp)
        self.dist.barrier()
        return self.export_dir

    # -- one optimizer step -----------------------------------------------------------------------------------------
    def _micro_batch(self, step: int, m: int) -> torch.Tensor:
        start = step * self.cfg.batch_size + m * self.micro
        return self.train_data.batch(self.order.indices(start, self.micro)).to(self.dist.device, non_blocking=True)

    def _seeded(self, *parts: int) -> torch.Generator:
        """Seeds the global RNGs (dropout) and returns a generator for the loss's own draws."""
        seed = seed_for(self.cfg.seed, *parts)
        torch.manual_seed(seed)
        return torch.Generator(self.dist.device).manual_seed(seed)

    def train_step(self, wrapped) -> tuple[float, float, float]:
        """Runs accumulation × micro-batches and one optimizer update; returns (mean loss, grad norm, lr used)."""
        self.model.train()
        total = torch.zeros((), device=self.dist.device)
        for a in range(self.accum):
            m = self.dist.rank * self.accum + a  # global micro-batch index within the step
            x0 = self._micro_batch(self.step, m)
            generator = self._seeded(self.step, m)
            sync = a == self.accum - 1 or not hasattr(wrapped, "no_sync")
            with (contextlib.nullcontext() if sync else wrapped.no_sync()), self.autocast():
                loss = wrapped(x0, generator=generator).float().mean() / self.accum
            loss.backward()
            total += loss.detach()
        loss = float(self.dist.mean(total))
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip))
        if self.dist.any(not (math.isfinite(loss) and math.isfinite(grad_norm))):
            self.optimizer.zero_grad(set_to_none=True)
            raise FloatingPointError(f"non-finite loss {loss} or gradient norm {grad_norm} at step {self.step + 1}")
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss, grad_norm, lr

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean per-sequence loss of the EMA weights in eval mode on fixed validation batches with fixed noise."""
        self.model.eval()
        n = len(self.val_data)
        losses = torch.zeros((), device=self.dist.device)
        with self.ema.swapped_in():
            for j in range(self.dist.rank, self.cfg.eval_batches, self.dist.world):
                idx = [(j * self.micro + i) % n for i in range(self.micro)]
                x0 = self.val_data.batch(idx).to(self.dist.device)
                with self.autocast():
                    losses += self.objective(x0, generator=self._seeded(-1, j)).float().mean()
        if self.dist.world > 1:
            dist.all_reduce(losses)
        return float(losses) / self.cfg.eval_batches

    # -- the loop ---------------------------------------------------------------------------------------------------
    def fit(self) -> int:
        stop = self.stop if self.stop is not None else StopRequest()
        deterministic = torch.are_deterministic_algorithms_enabled()
        try:
            if self.dist.device.type == "cpu":
                torch.use_deterministic_algorithms(True)
            return self._fit(stop)
        finally:
            torch.use_deterministic_algorithms(deterministic)
            if self.stop is None:
                stop.restore()

    def _fit(self, stop: StopRequest) -> int:
        from tqdm.auto import tqdm

        cfg = self.cfg
        if self.dist.main:
            atomic_write_text(self.out / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
        self.resume()
        if self.dist.any(stop.signal is not None):
            if self.dist.main:
                print(f"pysedd train: stop signal received during start-up, before the first step: nothing to "
                      f"checkpoint, exit code {EXIT_PREEMPTED} (run again to resume)", file=sys.stderr)
            return EXIT_PREEMPTED
        if self.dist.main and self.step < cfg.steps and self.export_dir.exists():
            shutil.rmtree(self.export_dir)  # the export of a shorter run: this one is not finished yet
            print(f"pysedd train: removed {self.export_dir} of the run that ended at fewer steps", file=sys.stderr)
        wrapped = self.objective
        if self.dist.world > 1:
            wrapped = torch.nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[self.dist.device.index] if self.dist.device.type == "cuda" else None)
        metrics = _Metrics(self.out, self.step, self.dist.main)
        tokens_per_step = cfg.batch_size * self.seq_len
        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", disable=not (cfg.progress and self.dist.main),
                   dynamic_ncols=True)
        try:
            tick, tick_step = time.perf_counter(), self.step
            while self.step < cfg.steps:
                try:
                    loss, grad_norm, lr = self.train_step(wrapped)
                except FloatingPointError as exc:
                    print(f"pysedd train: stopping: {exc}; the last good checkpoint is kept", file=sys.stderr)
                    return EXIT_NONFINITE
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    now = time.perf_counter()
                    tok_s = tokens_per_step * (self.step - tick_step) / max(now - tick, 1e-9)
                    tick, tick_step = now, self.step
                    record = {"step": self.step, "loss": loss, "loss_per_token": loss / self._scored_tokens(),
                              "grad_norm": grad_norm, "lr": lr,
                              "tokens_per_s": tok_s, "ema_decay": self.ema.decay_at(self.ema.num_updates)}
                    metrics.log(record)
                    bar.set_postfix(loss=f"{loss:.4g}", tok_s=f"{tok_s:,.0f}")
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    val = self.evaluate()
                    metrics.log({"step": self.step, "val_loss": val, "val_loss_per_token": val / self._scored_tokens()})
                    bar.set_postfix(loss=f"{loss:.4g}", val=f"{val:.4g}")
                if self.dist.any(stop.signal is not None):
                    self.save()
                    if self.dist.main:
                        print(f"pysedd train: stop signal received; checkpoint at step {self.step} written, "
                              f"exit code {EXIT_PREEMPTED} (run again to resume)", file=sys.stderr)
                    return EXIT_PREEMPTED
                if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                    self.save()
            self.save()
            self.export()
            return 0
        finally:
            bar.close()
            metrics.close()

    def _scored_tokens(self) -> int:
        return self.seq_len if self.cfg.model == "sedd" else self.seq_len - 1


def train(cfg: TrainConfig, stop: StopRequest | None = None) -> int:
    """Trains (resuming from ``cfg.out/checkpoints`` when possible); returns the exit code. ``stop``: handlers the
    caller installed earlier (the command line does so before its slow imports)."""
    trainer = Trainer(cfg, stop)
    try:
        return trainer.fit()
    finally:
        trainer.close()
        trainer.dist.close()
