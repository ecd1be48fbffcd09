"""``AmazonReviewsDataModule``: Blitzer et al.'s reviews as binary bags of features, split and encoded."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_info

from lightning_rect.checks import check_positive_int
from lightning_rect.data.amazon.cache import VocabularyCache
from lightning_rect.data.amazon.corpus import Corpus, read_corpus
from lightning_rect.data.amazon.files import DEFAULT_FILES, NUM_CLASSES, check_domains, download_archives, review_files
from lightning_rect.data.amazon.parse import LABEL_PARSERS, UNLABELED
from lightning_rect.data.amazon.storage import Densify, SparseRows
from lightning_rect.data.amazon.vocabulary import most_frequent
from lightning_rect.data.base import InMemoryDataModule, Split, labeled_subset
from lightning_rect.errors import ConfigError


class AmazonReviewsDataModule(InMemoryDataModule):
    """Blitzer et al.'s Amazon reviews as binary bags of features; polarity (2 classes) or stars (5).

    Splits: each domain's labeled reviews (the labeled files concatenated, in order) are split by
    a permutation seeded by ``split_seed`` (fixed, independent of the run's ``seed``) into
    ``1 - val_fraction - test_fraction`` train / ``val_fraction`` val / ``test_fraction`` test;
    the defaults 0.7 / 0.1 / 0.2 give Blitzer's 1600 / 400 train / test per polarity domain, with
    200 of the 1600 held out for validation. Domains are split separately and concatenated.

    Vocabulary: the ``vocab_size`` features with the highest *document frequency* (number of
    reviews containing them, matching the binary input) over the training reviews: labeled train
    split plus all unlabeled reviews, whatever ``include_unlabeled`` says, so pre-training and
    fine-tuning runs with the same data settings share one vocabulary. Ties go alphabetically.
    It is cached as JSON under ``<data_dir>/vocab/`` (keyed by domains, files and their sizes and
    times, split and vocab_size), exposed as ``.vocab`` after ``setup()`` and saved into every
    checkpoint (``state_dict``); a checkpoint's vocabulary wins over the cache when restored.

    The files are read once, in ``setup()``. Lightning restores a checkpoint (``load_state_dict``)
    after ``setup()``, so the parsed reviews are kept (``.corpus``, ids over every feature seen:
    a few MB of ids plus the feature names) and a restored vocabulary re-encodes them in memory.

    Args:
        data_dir: folder holding ``processed_acl/`` and/or ``processed_stars/`` as unpacked from
            the tarballs at https://www.cs.jhu.edu/~mdredze/datasets/sentiment/.
        domains: one or several of books, dvd, electronics, kitchen.
        task: ``polarity`` (positive/negative -> 1/0, metric error rate) or ``stars`` (1..5 ->
            0..4, metric RMSE of the expected star value; use ``StarRatingMLP``).
        vocab_size: input width; the most frequent features kept.
        val_fraction: fraction of each domain's labeled reviews held out for validation.
        test_fraction: fraction of each domain's labeled reviews held out for the test.
        split_seed: seeds the fixed split.
        include_unlabeled: put the unlabeled reviews into the training split with label -1, for
            pre-training (the auto-encoder ignores labels). Not for supervised training: the
            cross-entropy rejects label -1.
        labeled_files: file templates of the labeled reviews, relative to ``data_dir`` with a
            ``{domain}`` placeholder, to override the task's defaults (``DEFAULT_FILES``).
        unlabeled_files: the same for the unlabeled reviews. An unlabeled review identical (same
            feature set) to a labeled one is dropped, so pre-training never sees a validation or
            test review.
        skip_malformed: skip lines that break the format (counted, one warning) instead of
            raising ``DataFileError`` with file and line number.
        cache_vocab: read/write the vocabulary cache.
        batch_size: training minibatch size (see ``InMemoryDataModule``).
        eval_batch_size: evaluation batch size (see ``InMemoryDataModule``).
        labeled_fraction: share of the labeled training reviews kept (the unlabeled ones all stay).
        seed: seeds the labeled subset and the training order (see ``InMemoryDataModule``).
        download: in ``prepare_data()``, fetch ``processed_acl.tar.gz`` / ``processed_stars.tar.gz``
            (whichever a missing file of the task comes from) from the source page into
            ``data_dir``, verify and unpack it; the tarball is kept, a broken download resumes.
    """

    def __init__(
        self,
        data_dir: str = "data/amazon",
        domains: Sequence[str] = ("books",),
        task: Literal["polarity", "stars"] = "polarity",
        vocab_size: int = 5000,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        include_unlabeled: bool = False,
        labeled_files: Sequence[str] | None = None,
        unlabeled_files: Sequence[str] | None = None,
        skip_malformed: bool = False,
        cache_vocab: bool = True,
        batch_size: int = 10,
        eval_batch_size: int = 1000,
        labeled_fraction: float = 1.0,
        seed: int = 0,
        download: bool = False,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, labeled_fraction, seed)
        self.download = download
        self.domains = check_domains(domains)
        if task not in NUM_CLASSES:
            raise ConfigError(f"task must be one of {', '.join(NUM_CLASSES)}, got {task!r}")
        check_positive_int("vocab_size", vocab_size)
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not (isinstance(value, (int, float)) and 0 < value < 1):
                raise ConfigError(f"{name} must be in (0, 1), got {value!r}")
        if val_fraction + test_fraction >= 1:
            raise ConfigError(
                f"val_fraction + test_fraction must be < 1 to leave training reviews, got "
                f"{val_fraction} + {test_fraction}"
            )
        self.data_dir = data_dir
        self.task = task
        self.vocab_size = vocab_size
        self.val_fraction, self.test_fraction, self.split_seed = float(val_fraction), float(test_fraction), split_seed
        self.include_unlabeled = include_unlabeled
        defaults = DEFAULT_FILES[task]
        self.labeled_files = tuple(defaults["labeled"] if labeled_files is None else labeled_files)
        self.unlabeled_files = tuple(defaults["unlabeled"] if unlabeled_files is None else unlabeled_files)
        if not self.labeled_files:
            raise ConfigError(
                "labeled_files must name at least one file template, e.g. 'processed_acl/{domain}/positive.review'"
            )
        self.skip_malformed = skip_malformed
        self.cache_vocab = cache_vocab
        self.input_size = vocab_size
        self.num_classes = NUM_CLASSES[task]
        self.transform = Densify()  # type: ignore[assignment]  # of sparse rows; the base types dense inputs
        self.vocab: list[str] | None = None
        self.corpus: Corpus | None = None
        self.summary: dict[str, int] = {}

    # -- loading -------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        # Lightning calls this on one process per node, before setup().
        if self.download:
            download_archives(self.data_dir, self.labeled_files + self.unlabeled_files, self.domains)

    def data_source(self) -> str:
        labeled = ", ".join(t.format(domain=d) for d in self.domains for t in self.labeled_files)
        return (
            f"the labeled reviews of {Path(self.data_dir).resolve()}: {labeled}; val_fraction {self.val_fraction}, "
            f"test_fraction {self.test_fraction}"
        )

    def load_splits(self) -> dict[str, Split]:
        files = [
            (
                review_files(self.data_dir, self.labeled_files, domain),
                review_files(self.data_dir, self.unlabeled_files, domain),
            )
            for domain in self.domains
        ]
        self.corpus = read_corpus(
            files, LABEL_PARSERS[self.task], self.val_fraction, self.test_fraction, self.split_seed, self.skip_malformed
        )
        skipped = self.corpus.skipped
        if skipped.count:
            warnings.warn(f"skipped {skipped.count} malformed review lines (first: {skipped.first})", stacklevel=2)
        if self.vocab is None:  # else restored from a checkpoint before setup(): it wins over the cache
            self.vocab = self._cached_or_built_vocabulary([path for pair in files for part in pair for path in part])

        splits = self.corpus.splits
        self.summary = {f"{name}_reviews": len(splits[name][1]) for name in ("train", "val", "test", "unlabeled")}
        self.summary.update(
            unlabeled_duplicates_dropped=self.corpus.unlabeled_duplicates, malformed_skipped=skipped.count
        )
        rank_zero_info(
            f"Amazon reviews ({self.task}, {'+'.join(self.domains)}): "
            + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.summary.items())
        )
        return self._encode()

    def _cached_or_built_vocabulary(self, files: list[Path]) -> list[str]:
        cache = VocabularyCache.for_setting(
            self.data_dir,
            self.task,
            self.domains,
            self.vocab_size,
            [self.val_fraction, self.test_fraction, self.split_seed],
            self.skip_malformed,
            files,
            enabled=self.cache_vocab,
        )
        vocab = cache.read()
        if vocab is None:
            corpus = self.corpus
            assert corpus is not None  # load_splits reads it before the vocabulary
            vocab = most_frequent(corpus.training_document_frequency(), list(corpus.feature_ids), self.vocab_size)
            cache.write(vocab, domains=self.domains, task=self.task)
        return vocab

    def _encode(self) -> dict[str, Split]:
        """The parsed reviews over ``self.vocab``; unlabeled ones join training if ``include_unlabeled``."""
        corpus, vocab = self.corpus, self.vocab
        assert corpus is not None and vocab is not None  # set by load_splits (vocab: or a checkpoint) first
        if len(vocab) < self.vocab_size:
            warnings.warn(
                f"the vocabulary holds only {len(vocab)} features, fewer than vocab_size="
                f"{self.vocab_size}; the remaining inputs are always 0",
                stacklevel=2,
            )
        splits = corpus.encode(vocab, self.vocab_size)
        unlabeled_rows, unlabeled_y = splits.pop("unlabeled")
        if self.include_unlabeled:
            train_rows, train_y = splits["train"]
            splits["train"] = (
                SparseRows.cat([train_rows, unlabeled_rows], self.vocab_size),
                torch.cat([train_y, unlabeled_y]),
            )
        return splits  # type: ignore[return-value]  # sparse rows as inputs; the base's Split types dense ones

    def labeled_indices(self, y: torch.Tensor) -> torch.Tensor:
        # labeled_fraction thins out the labeled reviews only, never the unlabeled ones.
        labeled = torch.nonzero(y != UNLABELED).flatten()
        keep = labeled[labeled_subset(y[labeled], self.labeled_fraction, self.seed)]
        return torch.cat([keep, torch.nonzero(y == UNLABELED).flatten()]).sort().values

    # -- the vocabulary travels with checkpoints -----------------------------------------------
    def state_dict(self) -> dict:
        if self.vocab is None:
            return {}
        return {
            "vocab": list(self.vocab),
            "task": self.task,
            "domains": list(self.domains),
            "vocab_size": self.vocab_size,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        vocab = state_dict.get("vocab")
        if vocab is None or vocab == self.vocab:
            return
        if len(vocab) > self.vocab_size:
            raise ConfigError(
                f"the checkpoint's vocabulary has {len(vocab)} features but vocab_size is "
                f"{self.vocab_size}; set data.init_args.vocab_size: {state_dict.get('vocab_size')}"
            )
        # The model's weights belong to the checkpoint's features: encode the reviews with them.
        self.vocab = list(vocab)
        if self.corpus is not None:  # setup() has read the files already: re-encode, don't re-read
            self.splits = self.with_labeled_fraction(self._encode())
