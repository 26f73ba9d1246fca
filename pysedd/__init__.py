"""pysedd: Score Entropy Discrete Diffusion, its kernels, samplers, likelihoods and the SEDD-vs-GPT-2 evaluation."""
__version__ = "0.1.0"

from .config import GraphConfig, ModelConfig, NoiseConfig, SEDDConfig  # noqa: E402
from .model import SEDD  # noqa: E402

__all__ = ["SEDD", "SEDDConfig", "ModelConfig", "GraphConfig", "NoiseConfig", "__version__"]
