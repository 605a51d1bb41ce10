"""Self-contained demonstrations built on the library: a small diffusion model (``diffusion``)
tilted toward ``p exp(-dH)`` on 2-D points (``two_moons``) and on 8x8 digit images
(``digits_tilt``)."""
