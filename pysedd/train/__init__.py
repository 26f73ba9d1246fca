"""Training SEDD and the GPT-2 baseline (see trainer.py for the reproducibility contract and exit codes)."""
from pysedd.train.config import PRESETS, TrainConfig
from pysedd.train.ema import EMA
from pysedd.train.models import build_objective, sedd_config
from pysedd.train.trainer import EXIT_NONFINITE, EXIT_PREEMPTED, Trainer, train

__all__ = ["EMA", "EXIT_NONFINITE", "EXIT_PREEMPTED", "PRESETS", "TrainConfig", "Trainer", "build_objective",
           "sedd_config", "train"]
