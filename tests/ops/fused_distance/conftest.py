"""The fused distance op's tests. They import fused_distance_cases.py beside this file (pytest runs
with importlib mode, so this folder is put on sys.path here)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
