"""The paper's experiments, one module each: its plan (the runs), its table and its figure, and
the W&B sweeps of its plan.

- ``table1``: rectifier / tanh / softplus, with and without pre-training;
- ``l1_sweep``: rectifier networks against the L1 coefficient (error and sparsity);
- ``sharpness``: (1/a) softplus(a x) against a;
- ``semi_supervised``: with and without pre-training against the labeled fraction;
- ``protocol``: choices the paper leaves open (L1 on tanh/softplus, the sign flip), on and off;
- ``pretraining``: variants of the pre-training and fine-tuning protocol against a random start.
"""

from lightning_rect.reproduce.experiments import l1_sweep, pretraining, protocol, semi_supervised, sharpness, table1
from lightning_rect.reproduce.experiments.base import Experiment
from lightning_rect.reproduce.plan import Context

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        table1.EXPERIMENT,
        l1_sweep.EXPERIMENT,
        sharpness.EXPERIMENT,
        semi_supervised.EXPERIMENT,
        protocol.EXPERIMENT,
        pretraining.EXPERIMENT,
    )
}

__all__ = ["EXPERIMENTS", "Context", "Experiment"]
