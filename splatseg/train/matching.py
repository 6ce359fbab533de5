"""Hungarian matching between K predicted masks and M target segments (scipy)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def hungarian(cost: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one assignment for cost [K, M]: (query indices, target indices), each
    of length min(K, M)."""
    c = cost.detach().cpu().double().numpy()
    c = np.nan_to_num(c, nan=1e6, posinf=1e6, neginf=-1e6)
    rows, cols = linear_sum_assignment(c)
    return rows, cols
