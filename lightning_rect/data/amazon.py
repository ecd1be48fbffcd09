"""Amazon multi-domain reviews (Blitzer et al. 2007) as binary bag-of-features vectors.

The public files (https://www.cs.jhu.edu/~mdredze/datasets/sentiment/) hold one review per line::

    great:2 not_bad:1 the_plot:1 ... #label#:positive        (processed_acl)
    great:2 not_bad:1 the_plot:1 ... #label#:4.0             (processed_stars)

Each token is ``feature:count`` split at its *last* colon (features may contain colons; bigrams
are joined with ``_``). The paper's input is a binary presence vector over the most frequent
features, about 0.6% non-zero, so reviews are stored as a row-compressed list of feature indices
(``SparseRows``: int32 indices + int64 offsets, no values) and turned into dense float rows one
minibatch at a time by a vectorised gather/scatter. Memory holds ~4 bytes per present feature
instead of 4 * vocab_size bytes per review.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import warnings
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info

from lightning_rect.checks import check_positive_int
from lightning_rect.data.base import InMemoryDataModule, Split, labeled_subset
from lightning_rect.errors import ConfigError, DataFileError

DOMAINS = ("books", "dvd", "electronics", "kitchen")
SOURCE_URL = "https://www.cs.jhu.edu/~mdredze/datasets/sentiment/"

#: File templates per task, relative to ``data_dir``; ``{domain}`` is replaced by each domain.
#: processed_stars ships one labeled file per domain, ``all_balanced.review`` (checked against
#: public code that reads it); we found no evidence of an unlabeled file there, so the stars task
#: has no unlabeled default (the configs point it at processed_acl's unlabeled reviews).
DEFAULT_FILES = {
    "polarity": {
        "labeled": ("processed_acl/{domain}/positive.review", "processed_acl/{domain}/negative.review"),
        "unlabeled": ("processed_acl/{domain}/unlabeled.review",),
    },
    "stars": {
        "labeled": ("processed_stars/{domain}/all_balanced.review",),
        "unlabeled": (),
    },
}
NUM_CLASSES = {"polarity": 2, "stars": 5}
UNLABELED = -1


# -- compact storage ----------------------------------------------------------------------------
class SparseRows:
    """Rows of a 0/1 matrix stored as the column indices of their ones (CSR without values).

    ``rows[idx]`` (``idx`` a LongTensor) returns the selected rows, still compact; ``to_dense()``
    builds the float matrix. Both are a handful of tensor ops whatever the number of rows, so a
    minibatch costs no per-sample Python.
    """

    def __init__(self, indices: torch.Tensor, offsets: torch.Tensor, num_columns: int) -> None:
        self.indices = indices.to(torch.int32)
        self.offsets = offsets.to(torch.int64)
        self.num_columns = num_columns

    @classmethod
    def from_lengths(cls, indices: torch.Tensor, lengths: torch.Tensor, num_columns: int) -> SparseRows:
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
        torch.cumsum(lengths.to(torch.int64), dim=0, out=offsets[1:])
        return cls(indices, offsets, num_columns)

    @classmethod
    def cat(cls, parts: Sequence[SparseRows], num_columns: int) -> SparseRows:
        if not parts:
            return cls(torch.zeros(0, dtype=torch.int32), torch.zeros(1, dtype=torch.int64), num_columns)
        return cls.from_lengths(torch.cat([p.indices for p in parts]), torch.cat([p.lengths() for p in parts]),
                                num_columns)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def nnz(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, rows: torch.Tensor) -> SparseRows:
        rows = torch.as_tensor(rows, dtype=torch.int64)
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        out = SparseRows.from_lengths(torch.zeros(0), lengths, self.num_columns)
        total = out.nnz()
        # Position of every kept entry in self.indices: its row's old start + rank within the row.
        rank = torch.arange(total) - torch.repeat_interleave(out.offsets[:-1], lengths, output_size=total)
        out.indices = self.indices[torch.repeat_interleave(starts, lengths, output_size=total) + rank]
        return out

    def to_dense(self) -> torch.Tensor:
        """Float32 0/1 matrix, one row per stored row."""
        rows = torch.repeat_interleave(torch.arange(len(self)), self.lengths(), output_size=self.nnz())
        # numpy's calloc-backed zeros, not torch.zeros: torch fills a 10 x 5000 batch with its
        # intra-op thread pool, and when another process holds a core every such fill waits for
        # a descheduled thread (measured: 300 instead of 150,000 samples/s on 2 busy cores).
        dense = torch.from_numpy(np.zeros((len(self), self.num_columns), dtype=np.float32))
        dense.view(-1)[rows * self.num_columns + self.indices] = 1
        return dense

    def remap(self, table: torch.Tensor, num_columns: int) -> SparseRows:
        """Translate column ids through ``table`` (old id -> new id, -1 = drop)."""
        new = table[self.indices.long()]
        keep = new >= 0
        rows = torch.repeat_interleave(torch.arange(len(self)), self.lengths(), output_size=self.nnz())
        return SparseRows.from_lengths(new[keep], torch.bincount(rows[keep], minlength=len(self)), num_columns)


class Densify:
    """Batch transform: ``SparseRows`` -> dense float32 presence matrix (picklable for DDP)."""

    def __call__(self, rows: SparseRows) -> torch.Tensor:
        return rows.to_dense()


# -- parsing ------------------------------------------------------------------------------------
class MalformedLine(ValueError):
    """One line breaks the format; the caller adds file and line number."""


def polarity_label(value: str) -> int:
    if value == "positive":
        return 1
    if value == "negative":
        return 0
    raise MalformedLine(f"label {value!r} is not 'positive' or 'negative' (is `task: polarity` right for this file?)")


def star_label(value: str) -> int:
    try:
        stars = float(value)
    except ValueError:
        stars = float("nan")
    if stars not in (1.0, 2.0, 3.0, 4.0, 5.0):
        raise MalformedLine(f"label {value!r} is not a star rating 1.0 .. 5.0 (is `task: stars` right for this file?)")
    return int(stars) - 1


LABEL_PARSERS = {"polarity": polarity_label, "stars": star_label}


def parse_line(line: str) -> tuple[list[str], str | None]:
    """Features (each once) and the raw label (None if the line has none) of one review line."""
    features: dict[str, None] = {}
    label = None
    for token in line.split():
        parts = token.rsplit(":", 1)
        if len(parts) != 2 or not parts[0]:
            raise MalformedLine(f"token {token!r} is not feature:count")
        feature, count = parts
        if feature == "#label#":
            label = count
        elif count.isdecimal() and count.lstrip("0"):
            features[feature] = None
        else:
            raise MalformedLine(f"token {token!r}: count {count!r} is not a positive integer")
    return list(features), label


@dataclass
class ParsedReviews:
    """Reviews of some files: feature ids (in the ``lookup`` id space), labels, duplicate keys."""

    indices: array = field(default_factory=lambda: array("i"))
    lengths: array = field(default_factory=lambda: array("i"))
    labels: list[int] = field(default_factory=list)
    keys: list[int] = field(default_factory=list)

    def rows(self, num_columns: int) -> SparseRows:
        return SparseRows.from_lengths(int32_tensor(self.indices), int32_tensor(self.lengths), num_columns)


def int32_tensor(values: array) -> torch.Tensor:
    """Copy of an ``array('i')`` as a tensor, without a Python loop over its items."""
    if not len(values):
        return torch.zeros(0, dtype=torch.int32)
    return torch.frombuffer(values, dtype=torch.int32).clone()


@dataclass
class SkipReport:
    count: int = 0
    first: str = ""

    def add(self, where: str) -> None:
        self.count += 1
        self.first = self.first or where


def read_reviews(path: Path, lookup: dict[str, int], grow: bool, label_parser, labeled: bool,
                 skipped: SkipReport | None, out: ParsedReviews | None = None) -> ParsedReviews:
    """Append the reviews of ``path`` to ``out``.

    ``grow``: unknown features get new ids in ``lookup``; otherwise they are dropped (vocabulary
    fixed). ``labeled``: the line must carry a valid label; unlabeled files' labels are ignored.
    ``skipped is None`` makes a malformed line an error naming file and line.
    """
    out = out if out is not None else ParsedReviews()
    with open(path, encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            try:
                features, raw_label = parse_line(line)
                if not features and raw_label is None:
                    continue  # blank line
                if labeled and raw_label is None:
                    raise MalformedLine("no '#label#:...' token")
                label = label_parser(raw_label) if labeled else UNLABELED
            except MalformedLine as err:
                where = f"{path}, line {number}: {err}"
                if skipped is None:
                    raise DataFileError(f"{where}. Fix or delete that line, or set `data.init_args.skip_malformed: "
                                        "true` to skip malformed lines (they are counted and reported).") from None
                skipped.add(where)
                continue
            if grow:
                ids = [lookup.setdefault(f, len(lookup)) for f in features]
            else:
                ids = [lookup[f] for f in features if f in lookup]
            out.indices.extend(ids)
            out.lengths.append(len(ids))
            out.labels.append(label)
            out.keys.append(hash(frozenset(features)))
    return out


def encode_reviews(lines: Iterable[str], vocab: Sequence[str], size: int | None = None) -> torch.Tensor:
    """Dense binary inputs for reviews in the file format, over a saved vocabulary.

    Use it to predict on new reviews with the features a model was trained on::

        vocab = vocab_from_checkpoint("runs/.../best.ckpt")
        x = encode_reviews(["great:1 not_bad:2", "awful:1"], vocab, size=model.hparams.in_features)

    Labels in the lines are ignored; features outside ``vocab`` are dropped; a malformed line
    raises ``DataFileError`` naming its position. ``size`` defaults to ``len(vocab)``.
    """
    size = size or len(vocab)
    if size < len(vocab):
        raise ConfigError(f"size {size} is smaller than the vocabulary ({len(vocab)} features)")
    lookup = {feature: i for i, feature in enumerate(vocab)}
    parsed = ParsedReviews()
    for number, line in enumerate(lines, 1):
        try:
            features, _ = parse_line(line)
        except MalformedLine as err:
            raise DataFileError(f"review {number}: {err}") from None
        ids = [lookup[f] for f in features if f in lookup]
        parsed.indices.extend(ids)
        parsed.lengths.append(len(ids))
    return parsed.rows(size).to_dense()


def vocab_from_checkpoint(path: str | os.PathLike) -> list[str]:
    """The vocabulary an ``AmazonReviewsDataModule`` saved into a Lightning checkpoint."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint.get(AmazonReviewsDataModule.__qualname__)
    if not state or "vocab" not in state:
        raise DataFileError(f"{path} holds no Amazon vocabulary: it was not trained with AmazonReviewsDataModule")
    return list(state["vocab"])


def most_frequent(doc_freq: torch.Tensor, names: Sequence[str], k: int) -> list[str]:
    """The ``k`` features with the highest document frequency (> 0), ties in alphabetical order."""
    present = int((doc_freq > 0).sum())
    k = min(k, present)
    if k == 0:
        return []
    threshold = int(torch.topk(doc_freq, k).values[-1])
    candidates = torch.nonzero(doc_freq >= threshold).flatten()
    ranked = sorted(zip((-doc_freq[candidates]).tolist(), (names[i] for i in candidates.tolist())))
    return [name for _, name in ranked[:k]]


# -- the data module ----------------------------------------------------------------------------
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

    Args:
        data_dir: folder holding ``processed_acl/`` and/or ``processed_stars/`` as unpacked from
            the tarballs at https://www.cs.jhu.edu/~mdredze/datasets/sentiment/.
        domains: one or several of books, dvd, electronics, kitchen.
        task: ``polarity`` (positive/negative -> 1/0, metric error rate) or ``stars`` (1..5 ->
            0..4, metric RMSE of the expected star value; use ``StarRatingMLP``).
        vocab_size: input width; the most frequent features kept.
        val_fraction, test_fraction: fractions of each domain's labeled reviews held out.
        split_seed: seeds the fixed split.
        include_unlabeled: put the unlabeled reviews into the training split with label -1, for
            pre-training (the auto-encoder ignores labels). Not for supervised training: the
            cross-entropy rejects label -1.
        labeled_files, unlabeled_files: file templates relative to ``data_dir`` with a
            ``{domain}`` placeholder, to override the task's defaults (``DEFAULT_FILES``). An
            unlabeled review identical (same feature set) to a labeled one is dropped, so
            pre-training never sees a validation or test review.
        skip_malformed: skip lines that break the format (counted, one warning) instead of
            raising ``DataFileError`` with file and line number.
        cache_vocab: read/write the vocabulary cache.
        batch_size, eval_batch_size, labeled_fraction, seed: see ``InMemoryDataModule``;
            ``labeled_fraction`` subsamples the labeled training reviews only.
    """

    def __init__(self, data_dir: str = "data/amazon", domains: Sequence[str] = ("books",),
                 task: Literal["polarity", "stars"] = "polarity", vocab_size: int = 5000,
                 val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0,
                 include_unlabeled: bool = False, labeled_files: Sequence[str] | None = None,
                 unlabeled_files: Sequence[str] | None = None, skip_malformed: bool = False,
                 cache_vocab: bool = True, batch_size: int = 10, eval_batch_size: int = 1000,
                 labeled_fraction: float = 1.0, seed: int = 0) -> None:
        super().__init__(batch_size, eval_batch_size, labeled_fraction, seed)
        self.domains = check_domains(domains)
        if task not in NUM_CLASSES:
            raise ConfigError(f"task must be one of {', '.join(NUM_CLASSES)}, got {task!r}")
        check_positive_int("vocab_size", vocab_size)
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not (isinstance(value, (int, float)) and 0 < value < 1):
                raise ConfigError(f"{name} must be in (0, 1), got {value!r}")
        if val_fraction + test_fraction >= 1:
            raise ConfigError(f"val_fraction + test_fraction must be < 1 to leave training reviews, got "
                              f"{val_fraction} + {test_fraction}")
        self.data_dir = data_dir
        self.task = task
        self.vocab_size = vocab_size
        self.val_fraction, self.test_fraction, self.split_seed = float(val_fraction), float(test_fraction), split_seed
        self.include_unlabeled = include_unlabeled
        defaults = DEFAULT_FILES[task]
        self.labeled_files = tuple(defaults["labeled"] if labeled_files is None else labeled_files)
        self.unlabeled_files = tuple(defaults["unlabeled"] if unlabeled_files is None else unlabeled_files)
        if not self.labeled_files:
            raise ConfigError("labeled_files must name at least one file template, e.g. "
                              "'processed_acl/{domain}/positive.review'")
        self.skip_malformed = skip_malformed
        self.cache_vocab = cache_vocab
        self.input_size = vocab_size
        self.num_classes = NUM_CLASSES[task]
        self.transform = Densify()
        self.vocab: list[str] | None = None
        self.summary: dict[str, int] = {}

    # -- files ---------------------------------------------------------------------------------
    def _paths(self, templates: Sequence[str], domain: str) -> list[Path]:
        root = Path(self.data_dir)
        paths = [root / t.format(domain=domain) for t in templates]
        for path in paths:
            if not path.is_file():
                where = (f"Download {path.relative_to(root).parts[0]}.tar.gz from {SOURCE_URL} and unpack it into "
                         f"{root.resolve()}" if path.is_relative_to(root) else f"Get the files from {SOURCE_URL}")
                raise DataFileError(f"Amazon reviews file not found: {path.resolve()}. {where} (or set "
                                    "data.init_args.data_dir / labeled_files / unlabeled_files).")
        return paths

    def _cache_path(self, files: list[Path]) -> Path:
        key = {
            "domains": sorted(self.domains), "vocab_size": self.vocab_size, "task": self.task,
            "split": [self.val_fraction, self.test_fraction, self.split_seed], "skip": self.skip_malformed,
            "files": sorted([str(f.relative_to(self.data_dir) if f.is_relative_to(self.data_dir) else f),
                             f.stat().st_size, f.stat().st_mtime_ns] for f in files),
        }
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        name = f"{self.task}-{'+'.join(sorted(self.domains))}-{self.vocab_size}-{digest}.json"
        return Path(self.data_dir) / "vocab" / name

    def _read_cache(self, path: Path) -> list[str] | None:
        if not self.cache_vocab or not path.is_file():
            return None
        try:
            return list(json.loads(path.read_text())["vocab"])
        except (OSError, ValueError, KeyError, TypeError):
            warnings.warn(f"ignoring unreadable vocabulary cache {path}; it will be rebuilt", stacklevel=2)
            return None

    def _write_cache(self, path: Path, vocab: list[str]) -> None:
        if not self.cache_vocab:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"domains": self.domains, "task": self.task, "vocab": vocab}))
            tmp.replace(path)  # atomic: ranks writing at once never leave half a file
        except OSError as err:
            warnings.warn(f"could not cache the vocabulary in {path} ({err}); it will be rebuilt next run",
                          stacklevel=2)

    # -- loading -------------------------------------------------------------------------------
    def load_splits(self) -> dict[str, Split]:
        per_domain = [(self._paths(self.labeled_files, d), self._paths(self.unlabeled_files, d)) for d in self.domains]
        cache = self._cache_path([p for labeled, unlabeled in per_domain for p in labeled + unlabeled])
        vocab = self.vocab if self.vocab is not None else self._read_cache(cache)
        # Without a vocabulary every feature gets an id, and the vocabulary is chosen afterwards.
        lookup = {} if vocab is None else {feature: i for i, feature in enumerate(vocab)}
        skipped = SkipReport() if self.skip_malformed else None
        parsed = [(self._read(labeled, lookup, vocab is None, True, skipped),
                   self._read(unlabeled, lookup, vocab is None, False, skipped)) for labeled, unlabeled in per_domain]
        if skipped is not None and skipped.count:
            warnings.warn(f"skipped {skipped.count} malformed review lines (first: {skipped.first})", stacklevel=2)
        splits, duplicates = self._assemble(parsed, len(lookup))

        if vocab is None:
            training = torch.cat([splits["train"][0].indices, splits["unlabeled"][0].indices]).long()
            names = list(lookup)  # insertion order == id order
            vocab = most_frequent(torch.bincount(training, minlength=len(names)), names, self.vocab_size)
            table = torch.full((len(names),), -1, dtype=torch.int64)
            table[torch.tensor([lookup[f] for f in vocab], dtype=torch.int64)] = torch.arange(len(vocab))
            splits = {name: (rows.remap(table, self.vocab_size), y) for name, (rows, y) in splits.items()}
            self._write_cache(cache, vocab)
        else:
            splits = {name: (SparseRows(rows.indices, rows.offsets, self.vocab_size), y)
                      for name, (rows, y) in splits.items()}
        if len(vocab) < self.vocab_size:
            warnings.warn(f"the training reviews hold only {len(vocab)} distinct features, fewer than vocab_size="
                          f"{self.vocab_size}; the remaining inputs are always 0", stacklevel=2)
        self.vocab = vocab

        unlabeled_rows, unlabeled_y = splits.pop("unlabeled")
        self.summary = {f"{name}_reviews": len(y) for name, (_, y) in splits.items()}
        self.summary.update(unlabeled_reviews=len(unlabeled_y), unlabeled_duplicates_dropped=duplicates,
                            malformed_skipped=skipped.count if skipped else 0)
        rank_zero_info(f"Amazon reviews ({self.task}, {'+'.join(self.domains)}): " +
                       ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.summary.items()))
        if self.include_unlabeled:
            train_rows, train_y = splits["train"]
            splits["train"] = (SparseRows.cat([train_rows, unlabeled_rows], self.vocab_size),
                               torch.cat([train_y, unlabeled_y]))
        return splits

    def _read(self, paths: list[Path], lookup: dict[str, int], grow: bool, labeled: bool,
              skipped: SkipReport | None) -> ParsedReviews:
        reviews = ParsedReviews()
        for path in paths:
            read_reviews(path, lookup, grow, LABEL_PARSERS[self.task], labeled, skipped, reviews)
        return reviews

    def _assemble(self, parsed: list[tuple[ParsedReviews, ParsedReviews]], num_ids: int
                  ) -> tuple[dict[str, Split], int]:
        """Split each domain's labeled reviews, drop unlabeled copies of labeled ones, concatenate domains."""
        names = ("train", "val", "test", "unlabeled")
        rows: dict[str, list[SparseRows]] = {name: [] for name in names}
        labels: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        seen = {key for labeled, _ in parsed for key in labeled.keys}
        duplicates = 0
        for labeled, unlabeled in parsed:
            x, y = labeled.rows(num_ids), torch.tensor(labeled.labels, dtype=torch.long)
            for name, idx in zip(names, self._split(len(y))):
                rows[name].append(x[idx])
                labels[name].append(y[idx])
            fresh = torch.nonzero(torch.tensor([key not in seen for key in unlabeled.keys], dtype=torch.bool)).flatten()
            duplicates += len(unlabeled.keys) - len(fresh)
            rows["unlabeled"].append(unlabeled.rows(num_ids)[fresh])
            labels["unlabeled"].append(torch.full((len(fresh),), UNLABELED, dtype=torch.long))
        return {name: (SparseRows.cat(rows[name], num_ids), torch.cat(labels[name])) for name in names}, duplicates

    def _split(self, n: int) -> list[torch.Tensor]:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        n_test, n_val = round(self.test_fraction * n), round(self.val_fraction * n)
        n_train = n - n_val - n_test
        return [order[:n_train].sort().values, order[n_train:n_train + n_val].sort().values,
                order[n_train + n_val:].sort().values]

    def labeled_indices(self, y: torch.Tensor) -> torch.Tensor:
        # labeled_fraction thins out the labeled reviews only, never the unlabeled ones.
        labeled = torch.nonzero(y != UNLABELED).flatten()
        keep = labeled[labeled_subset(y[labeled], self.labeled_fraction, self.seed)]
        return torch.cat([keep, torch.nonzero(y == UNLABELED).flatten()]).sort().values

    # -- the vocabulary travels with checkpoints -----------------------------------------------
    def state_dict(self) -> dict:
        if self.vocab is None:
            return {}
        return {"vocab": list(self.vocab), "task": self.task, "domains": list(self.domains),
                "vocab_size": self.vocab_size}

    def load_state_dict(self, state_dict: dict) -> None:
        vocab = state_dict.get("vocab")
        if vocab is None or vocab == self.vocab:
            return
        if len(vocab) > self.vocab_size:
            raise ConfigError(f"the checkpoint's vocabulary has {len(vocab)} features but vocab_size is "
                              f"{self.vocab_size}; set data.init_args.vocab_size: {state_dict.get('vocab_size')}")
        # The model's weights belong to the checkpoint's features: re-encode the reviews with them.
        self.vocab = list(vocab)
        self.splits = None


def check_domains(domains: Sequence[str] | str) -> list[str]:
    domains = [domains] if isinstance(domains, str) else list(domains)
    unknown = [d for d in domains if d not in DOMAINS]
    if not domains or unknown or len(set(domains)) != len(domains):
        raise ConfigError(f"domains must be distinct names from {', '.join(DOMAINS)}; got {domains!r}")
    return domains


# -- a synthetic corpus in the real format (tests, benchmark, end-to-end checks) ---------------
def write_synthetic_corpus(root: str | os.PathLike, domains: Sequence[str] = ("books",), reviews_per_class: int = 200,
                           unlabeled_reviews: int = 400, background_size: int = 2000, features_per_review: int = 60,
                           signal_features: int = 4, noise: float = 0.2, seed: int = 0) -> Path:
    """Write ``processed_acl`` and ``processed_stars`` files whose reviews carry their label.

    Each review draws ``features_per_review`` background features (Zipf-distributed, every fifth
    a bigram ``a_b``) plus ``signal_features`` label words: ``good_<j>``/``bad_<j>`` for polarity,
    ``star<s>_<j>`` for a rating s (a neighbouring rating's word with probability ``noise``, so a
    model's error stays above 0). Polarity files get ``reviews_per_class`` reviews per class, the
    stars file as many per rating; unlabeled reviews carry labels like the real file does.
    """
    rng = random.Random(seed)
    names = [f"w{i}_w{i + 1}" if i % 5 == 4 else f"w{i}" for i in range(background_size)]
    cumulative = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(background_size)))

    def line(signal: list[str], label: str) -> str:
        features = set(rng.choices(names, cum_weights=cumulative, k=features_per_review)) | set(signal)
        return " ".join(f"{f}:{rng.randint(1, 3)}" for f in sorted(features)) + f" #label#:{label}\n"

    def polarity(positive: bool) -> str:
        words = [("good" if positive != (rng.random() < noise) else "bad") + f"_{rng.randrange(20)}"
                 for _ in range(signal_features)]
        return line(words, "positive" if positive else "negative")

    def stars(rating: int) -> str:
        shifted = [rating + rng.choice((-1, 1)) if rng.random() < noise else rating for _ in range(signal_features)]
        words = [f"star{min(5, max(1, s))}_{rng.randrange(20)}" for s in shifted]
        return line(words, f"{rating}.0")

    root = Path(root)
    for domain in domains:
        acl, star_dir = root / "processed_acl" / domain, root / "processed_stars" / domain
        acl.mkdir(parents=True, exist_ok=True)
        star_dir.mkdir(parents=True, exist_ok=True)
        (acl / "positive.review").write_text("".join(polarity(True) for _ in range(reviews_per_class)))
        (acl / "negative.review").write_text("".join(polarity(False) for _ in range(reviews_per_class)))
        (acl / "unlabeled.review").write_text("".join(polarity(rng.random() < 0.5) for _ in range(unlabeled_reviews)))
        (star_dir / "all_balanced.review").write_text(
            "".join(stars(r) for r in range(1, 6) for _ in range(reviews_per_class)))
    return root
