"""Reverse-process sampling for SEDD."""
from .weights import analytic_probs, denoise_probs, euler_probs, sample_categorical

__all__ = ["analytic_probs", "denoise_probs", "euler_probs", "sample_categorical"]
