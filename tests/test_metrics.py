"""2AFC agreement: LPIPS's formula, ties included."""

import numpy as np
import torch

from perceptual_fast.metrics import two_afc


def test_two_afc_matches_the_lpips_formula_with_ties():
    rng = np.random.default_rng(0)
    d0 = rng.integers(0, 4, 500).astype(np.float32) / 4  # coarse values: many exact ties
    d1 = rng.integers(0, 4, 500).astype(np.float32) / 4
    gts = rng.random(500)
    gts[:50] = rng.integers(0, 2, 50)  # unanimous judgements too
    want = (d0 < d1) * (1.0 - gts) + (d1 < d0) * gts + (d1 == d0) * 0.5  # lpips.trainer.score_2afc_dataset
    got = two_afc(torch.from_numpy(d0), torch.from_numpy(d1), torch.from_numpy(gts))
    assert (d0 == d1).sum() > 50
    np.testing.assert_array_equal(got.numpy(), want)


def test_two_afc_cases():
    d0 = torch.tensor([0.1, 0.3, 0.2, 0.2])
    d1 = torch.tensor([0.2, 0.1, 0.2, 0.2])
    h = torch.tensor([0.25, 0.25, 0.9, 0.0])
    torch.testing.assert_close(two_afc(d0, d1, h), torch.tensor([0.75, 0.25, 0.5, 0.5], dtype=torch.float64))
