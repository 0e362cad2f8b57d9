"""The paired bootstrap the gate decides relative rules with, and the error the gate raises.

Its own module so that the evaluation report (components/evaluate/report.py) computes the same confidence
intervals as the gate without importing the gate, which imports the report to write it.
"""

from __future__ import annotations

import numpy as np

# Index-matrix elements drawn per chunk (int64: 32 MiB); the chunk size depends only on n, so a seed
# gives the same interval on every machine.
_CHUNK_ELEMENTS = 1 << 22


class GateError(ValueError):
    """The gate cannot decide: the inputs are not comparable (settings, example counts) or malformed."""


def paired_bootstrap(
    candidate: np.ndarray | list[float],
    baseline: np.ndarray | list[float],
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Observed mean difference (candidate - baseline) and its two-sided percentile CI.

    Each resample draws n example indices with replacement and averages the paired differences at those
    indices; the index matrix (resamples x n) is drawn in chunks of whole rows, never one resample at a time.
    """
    d = np.asarray(candidate, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    n = d.shape[0]
    if n == 0:
        raise GateError("a paired bootstrap needs at least one example")
    if resamples < 1 or not 0 < confidence < 1:
        raise GateError(
            f"bootstrap needs resamples >= 1 and 0 < confidence < 1; got {resamples}, {confidence}"
        )
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = d[idx].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(d.mean()), float(low), float(high)


__all__ = ["GateError", "paired_bootstrap"]
