"""``python -m perceptual_fast.cli ...`` (e.g. under ``torchrun -m``): the same as ``perceptual-fast ...``."""

import sys

from . import main

sys.exit(main())
