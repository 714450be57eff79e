"""Batch assignment of scheduled orders: the min-cost matching (scipy's `linear_sum_assignment`) and, as the
baseline it is measured against, greedy first-come nearest. Pure: cost matrices in, pairs out."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

# A pair that may not be matched; finite so that the solver always finds a full assignment, then dropped.
FORBIDDEN = 1e9


def optimal(cost: np.ndarray) -> list[tuple[int, int]]:
    """Rows (orders) to columns (caregivers), each used at most once, minimising the total cost of the
    allowed pairs; rows that cannot be served stay unmatched."""
    if cost.size == 0:
        return []
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if cost[r, c] < FORBIDDEN]


def greedy(cost: np.ndarray) -> list[tuple[int, int]]:
    """First come, first served: each row in order takes its cheapest column still free."""
    taken: set[int] = set()
    pairs = []
    for r in range(cost.shape[0]):
        best, best_cost = -1, FORBIDDEN
        for c in np.argsort(cost[r], kind="stable"):
            c = int(c)
            if c not in taken:
                if cost[r, c] < best_cost:
                    best, best_cost = c, float(cost[r, c])
                break
        if best >= 0:
            taken.add(best)
            pairs.append((r, best))
    return pairs


def total(cost: np.ndarray, pairs: list[tuple[int, int]]) -> float:
    return float(sum(cost[r, c] for r, c in pairs))
