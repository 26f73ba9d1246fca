"""Reverse-process sampling for SEDD: step samplers (Euler, analytic) with caching, the exact batched first-hitting
sampler, conditioning at any positions, and the cost report every sampler returns."""
from .conditioning import Conditioning
from .fhs import fhs_sample
from .pc import pc_sample
from .result import EOS_ID, SampleOutput

__all__ = ["Conditioning", "EOS_ID", "SampleOutput", "fhs_sample", "pc_sample"]
