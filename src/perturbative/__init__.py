"""perturbative: perturbation theory of neural-network training."""

__version__ = "0.1.0"
