"""``python -m perturbative``: the command line, as the ``perturbative`` script."""

import sys

from perturbative.cli import main

sys.exit(main())
