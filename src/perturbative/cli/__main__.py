"""``python -m perturbative.cli``, which ``torchrun --nproc-per-node N -m perturbative.cli``
runs on every rank."""

import sys

from perturbative.cli import main

sys.exit(main())
