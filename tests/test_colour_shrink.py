"""The colour descriptor's fast 2x2 pooling gives exactly the values of the reshape-mean it
replaced, so stored vectors and trained heads are unaffected."""
from __future__ import annotations

import numpy as np
import pytest

from taggers.offline import colour


@pytest.mark.parametrize("side", [224, 225, 230, 112, 300, 448])
def test_shrink_equals_the_reshape_mean(side):
    arr = np.random.default_rng(side).integers(0, 256, (side, side, 3)).astype(np.float32)
    f = max(1, side // colour._SIDE)
    h = (side // f) * f
    expected = arr[:h, :h].reshape(h // f, f, h // f, f, 3).mean(axis=(1, 3))
    assert np.array_equal(colour._shrink(arr), expected)
