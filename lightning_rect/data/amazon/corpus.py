"""The reviews of every file, split into train / val / test / unlabeled, before a vocabulary is chosen.

Reviews are parsed once into ids over *every* feature seen. A vocabulary (built from these
splits, read from the cache, or restored from a checkpoint) is then applied as a remap of ids
(``Corpus.encode``), so a vocabulary that arrives after the files were read re-encodes the
reviews without reading the files again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lightning_rect.data.amazon.parse import UNLABELED, ParsedReviews, SkipReport, read_reviews
from lightning_rect.data.amazon.storage import SparseRows

Split = tuple[SparseRows, torch.Tensor]
SPLITS = ("train", "val", "test", "unlabeled")


@dataclass
class Corpus:
    """``splits`` maps each of ``SPLITS`` to (rows over ``feature_ids``, labels; -1 for unlabeled)."""

    splits: dict[str, Split]
    feature_ids: dict[str, int]  # every feature seen -> its column in ``splits``
    unlabeled_duplicates: int  # unlabeled reviews dropped for being copies of labeled ones
    skipped: SkipReport

    def training_document_frequency(self) -> torch.Tensor:
        """Reviews containing each feature, over the labeled training split plus all unlabeled reviews."""
        training = torch.cat([self.splits["train"][0].indices, self.splits["unlabeled"][0].indices]).long()
        return torch.bincount(training, minlength=len(self.feature_ids))

    def encode(self, vocab: Sequence[str], num_columns: int) -> dict[str, Split]:
        """Every split with feature ``vocab[j]`` as column ``j``; features outside ``vocab`` dropped."""
        known = [(column, self.feature_ids[f]) for column, f in enumerate(vocab) if f in self.feature_ids]
        table = torch.full((len(self.feature_ids),), -1, dtype=torch.int64)
        if known:
            columns, ids = torch.tensor(known, dtype=torch.int64).T
            table[ids] = columns
        return {name: (rows.remap(table, num_columns), y) for name, (rows, y) in self.splits.items()}


def read_corpus(
    files: Sequence[tuple[list[Path], list[Path]]],
    label_parser: Callable[[str], int],
    val_fraction: float,
    test_fraction: float,
    split_seed: int,
    skip_malformed: bool,
) -> Corpus:
    """Read each domain's ``(labeled files, unlabeled files)``, split each domain's labeled reviews,
    drop unlabeled copies of labeled ones (pre-training must never see a val or test review), and
    concatenate the domains."""
    feature_ids: dict[str, int] = {}
    skipped = SkipReport() if skip_malformed else None
    per_domain = []
    for labeled_files, unlabeled_files in files:
        labeled, unlabeled = ParsedReviews(), ParsedReviews()
        for path in labeled_files:
            read_reviews(path, feature_ids, label_parser, True, skipped, labeled)
        for path in unlabeled_files:
            read_reviews(path, feature_ids, label_parser, False, skipped, unlabeled)
        per_domain.append((labeled, unlabeled))

    num_ids = len(feature_ids)
    rows: dict[str, list[SparseRows]] = {name: [] for name in SPLITS}
    labels: dict[str, list[torch.Tensor]] = {name: [] for name in SPLITS}
    seen = {key for labeled, _ in per_domain for key in labeled.keys}
    duplicates = 0
    for labeled, unlabeled in per_domain:
        x, y = labeled.rows(num_ids), torch.tensor(labeled.labels, dtype=torch.long)
        for name, idx in zip(("train", "val", "test"), split_indices(len(y), val_fraction, test_fraction, split_seed)):
            rows[name].append(x[idx])
            labels[name].append(y[idx])
        fresh = torch.tensor([key not in seen for key in unlabeled.keys], dtype=torch.bool).nonzero().flatten()
        duplicates += len(unlabeled.keys) - len(fresh)
        rows["unlabeled"].append(unlabeled.rows(num_ids)[fresh])
        labels["unlabeled"].append(torch.full((len(fresh),), UNLABELED, dtype=torch.long))
    splits = {name: (SparseRows.cat(rows[name], num_ids), torch.cat(labels[name])) for name in SPLITS}
    return Corpus(splits, feature_ids, duplicates, skipped or SkipReport())


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> list[torch.Tensor]:
    """Sorted train / val / test indices of ``n`` reviews from a permutation seeded by ``seed``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test, n_val = round(test_fraction * n), round(val_fraction * n)
    n_train = n - n_val - n_test
    return [
        order[:n_train].sort().values,
        order[n_train : n_train + n_val].sort().values,
        order[n_train + n_val :].sort().values,
    ]
