"""Self-contained demonstrations built on the library: a 2-D diffusion model tilted toward
``p exp(-dH)`` (``two_moons``)."""
