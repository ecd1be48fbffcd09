"""``StarRatingMLP``: the paper's star-rating setup, a softmax over ratings read out as an expectation.

The paper trains the usual softmax classifier over the 5 ratings (NLL loss) but predicts the
*expected* star value under the softmax, sum_k p_k * (k + 1), and reports its RMSE. A hard argmax
would throw away how confident the network is between neighbouring ratings, which RMSE rewards.
"""

from __future__ import annotations

import torch
from torchmetrics import MeanSquaredError

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

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.eval_rmse = MeanSquaredError(squared=False)

    def _eval_step(self, batch) -> torch.Tensor:
        logits = super()._eval_step(batch)
        self.eval_rmse.update(expected_stars(logits.detach().float()), (split_batch(batch)[1] + 1).float())
        return logits

    def _log_eval(self, stage: str) -> None:
        self.log(f"{stage}/rmse", self.eval_rmse.compute(), prog_bar=stage == "val")
        self.eval_rmse.reset()
        super()._log_eval(stage)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return expected_stars(self.head(self.encoder(split_batch(batch)[0])[-1]))
