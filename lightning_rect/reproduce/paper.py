"""The paper's numbers, in one place, as given in docs/paper.md#results-to-compare-against (Glorot,
Bordes, Bengio 2011).

All errors and sparsities are percentages. Where the paper only has a figure, docs/paper.md gives
values read off it; they are approximate and the reports say so.
"""

from __future__ import annotations

import math

from lightning_rect.reproduce.catalog import CATALOG

CITATION = "Glorot, Bordes, Bengio, Deep Sparse Rectifier Neural Networks, AISTATS 2011"

#: Display names of the data sets in the tables (the table of data sets holds them).
DATASET_TITLES = {name: facts.title for name, facts in CATALOG.items()}

#: Table 1 (docs/paper.md#results-to-compare-against): test error, networks of depth 3,
#: keyed by (activation, pre-trained).
TABLE1 = {
    ("rectifier", True): {"mnist": 1.20, "cifar10": 49.96, "nistp": 32.86, "norb": 16.46},
    ("tanh", True): {"mnist": 1.16, "cifar10": 50.79, "nistp": 35.89, "norb": 17.66},
    ("softplus", True): {"mnist": 1.17, "cifar10": 49.52, "nistp": 33.27, "norb": 19.19},
    ("rectifier", False): {"mnist": 1.43, "cifar10": 50.86, "nistp": 32.64, "norb": 16.40},
    ("tanh", False): {"mnist": 1.57, "cifar10": 52.62, "nistp": 36.46, "norb": 19.29},
    ("softplus", False): {"mnist": 1.77, "cifar10": 53.20, "nistp": 35.48, "norb": 17.68},
}

#: Table 1's exact sparsity (fraction of zeros) of the hidden layers of the rectifier networks.
#: The paper gives one number per data set, without saying which of the two rectifier rows.
SPARSITY = {"mnist": 83.4, "cifar10": 72.0, "nistp": 68.0, "norb": 73.8}

#: Softplus sharpness on NORB (docs/paper.md#softplus-sharpness-norb): test error against a; inf = rectifier.
SHARPNESS = {"norb": {1.0: 17.68, 1.3: 17.53, 2.0: 16.9, 3.0: 16.66, 6.0: 16.54, math.inf: 16.40}}

#: L1 sweep on MNIST (docs/paper.md#l1-sweep-mnist; a figure of 200 random networks, L1 coefficient
#: 0 to 0.01), read off the figure as (exact sparsity %, test error %) points: flat until about 85%
#: zeros, best near 80% (about 1.35%), about 2.3% at 98-99% zeros.
L1_CURVE = {"mnist": [(80.0, 1.35), (85.0, 1.35), (98.5, 2.3)]}

#: Semi-supervised NORB (docs/paper.md#semi-supervised-norb, read off the figure): test error against
#: the labeled fraction, keyed by (activation, pre-trained).
SEMI = {
    "norb": {
        ("tanh", False): {0.04: 44.6, 0.21: 25.8, 0.43: 22.4, 0.64: 20.6, 1.0: 19.3},
        ("tanh", True): {0.04: 41.5, 0.21: 24.5, 0.43: 21.3, 0.64: 19.5, 1.0: 17.7},
        ("rectifier", False): {0.04: 44.8, 0.21: 25.3, 0.43: 21.0, 0.64: 18.6, 1.0: 16.4},
        ("rectifier", True): {0.04: 38.2, 0.21: 23.8, 0.43: 20.1, 0.64: 18.0, 1.0: 16.4},
    }
}


def l1_curve_at(dataset: str, sparsity_pct: float) -> float | None:
    """The paper's approximate test error at a given sparsity (piecewise linear through
    ``L1_CURVE``; flat below its first point); None outside the curve or for other data sets."""
    points = L1_CURVE.get(dataset)
    if not points or sparsity_pct is None or not math.isfinite(sparsity_pct) or sparsity_pct > points[-1][0] + 1:
        return None
    if sparsity_pct <= points[0][0]:
        return points[0][1]
    for (s0, e0), (s1, e1) in zip(points, points[1:]):
        if sparsity_pct <= s1:
            return e0 + (e1 - e0) * (sparsity_pct - s0) / (s1 - s0)
    return points[-1][1]
