"""pysedd: Score Entropy Discrete Diffusion, its kernels, samplers, likelihoods and the SEDD-vs-GPT-2 evaluation.

The model and its configs are imported on first use (`pysedd.SEDD`, `from pysedd import SEDD`), so that `pysedd.cli`
starts without torch and installs its signal handlers first (see pysedd/signals.py)."""
__version__ = "0.1.0"

__all__ = ["SEDD", "SEDDConfig", "ModelConfig", "GraphConfig", "NoiseConfig", "__version__"]


def __getattr__(name: str):
    if name == "SEDD":
        from .model import SEDD

        return SEDD
    if name in __all__:
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module 'pysedd' has no attribute {name!r}")
