"""``ClassData``: one split of a labelled image set in memory, the form every source of training data returns.

Its own module so that the sources (:mod:`.classes`, :mod:`.imagenet64`) import it and not each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from torch import Tensor


@dataclass
class ClassData:
    """One split of a labelled image set, in memory.

    images: uint8 ``[N, 3, S, S]``. labels: int64 ``[N]`` in [0, len(classes)).
    classes: class names. source: where it came from. synthetic: True for generated data.
    """

    images: Tensor
    labels: Tensor
    classes: Tuple[str, ...]
    source: str
    synthetic: bool = False

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])
