"""``StarRatingMLP``: the paper's star-rating setup, a softmax over ratings read out as an expectation.

The paper trains the usual softmax classifier over the 5 ratings (NLL loss) but predicts the
*expected* star value under the softmax, sum_k p_k * (k + 1), and reports its RMSE. A hard argmax
would throw away how confident the network is between neighbouring ratings, which RMSE rewards.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MeanSquaredError

from lightning_rect.metrics import as_metric
from lightning_rect.models.batch import split_batch
from lightning_rect.models.classifier import SparseMLP


def expected_stars(logits: torch.Tensor) -> torch.Tensor:
    """Expected rating under ``softmax(logits)``, classes 0..K-1 standing for ratings 1..K."""
    ratings = torch.arange(1, logits.shape[-1] + 1, dtype=logits.dtype, device=logits.device)
    return torch.softmax(logits, dim=-1) @ ratings


class StarRatingMLP(SparseMLP):
    """``SparseMLP`` for ratings 1..K (labels 0..K-1, e.g. ``AmazonReviewsDataModule(task="stars")``).

    Training is unchanged (cross-entropy + L1). Evaluation also logs ``val/rmse`` / ``test/rmse``
    of the expected rating (torchmetrics state, so the value is exact across DDP ranks), the
    checkpoint is selected on ``val/rmse``, and ``predict_step`` returns expected ratings. The
    error rate of the argmax rating is still logged as ``val/err`` / ``test/err``.
    Takes the same arguments as ``SparseMLP``.
    """

    selection_metric = "val/rmse"

    def evaluation_metrics(self) -> nn.ModuleDict:
        metrics = super().evaluation_metrics()
        metrics["rmse"] = MeanSquaredError(squared=False)
        return metrics

    @torch.compiler.disable  # as the parent's: metric bookkeeping stays out of a compiled graph
    def update_evaluation_metrics(
        self, metrics: nn.ModuleDict, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor
    ) -> None:
        super().update_evaluation_metrics(metrics, loss, logits, y)
        as_metric(metrics["rmse"]).update(expected_stars(logits.detach().float()), (y + 1).float())

    def evaluation_values(self, metrics: nn.ModuleDict) -> dict[str, torch.Tensor]:
        return {**super().evaluation_values(metrics), "rmse": as_metric(metrics["rmse"]).compute()}

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        self._pretrained_before_first_use()  # outside a Trainer no stage hook reads ``pretrained`` first
        return expected_stars(self.head(self.encoder(split_batch(batch)[0])[-1]))
