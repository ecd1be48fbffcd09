"""Reading review lines of the Blitzer et al. files into feature ids and labels.

One review per line::

    great:2 not_bad:1 the_plot:1 ... #label#:positive        (processed_acl)
    great:2 not_bad:1 the_plot:1 ... #label#:4.0             (processed_stars)

Each token is ``feature:count`` split at its *last* colon (features may contain colons; bigrams
are joined with ``_``). Only presence matters to the model, so counts are checked, then dropped.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lightning_rect.data.amazon.files import SOURCE_URL
from lightning_rect.data.amazon.storage import SparseRows
from lightning_rect.data.formats import redownload
from lightning_rect.errors import ConfigError, DataFileError

UNLABELED = -1  # the label of a review from an unlabeled file
#: Longest review line read: real lines hold at most a few thousand features (tens of KB); a longer
#: "line" is a file without line breaks (binary data, another format) and is refused, not held in memory.
MAX_LINE_CHARS = 4 << 20
DAMAGED_FIX = redownload(f"unpack it again from its tarball at {SOURCE_URL}")


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


LABEL_PARSERS: dict[str, Callable[[str], int]] = {"polarity": polarity_label, "stars": star_label}


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
    """Reviews of some files: feature ids (in the caller's id space), labels, duplicate keys."""

    indices: array = field(default_factory=lambda: array("i"))
    lengths: array = field(default_factory=lambda: array("i"))
    labels: list[int] = field(default_factory=list)
    keys: list[int] = field(default_factory=list)  # one per review: its feature set, for spotting copies

    def rows(self, num_columns: int) -> SparseRows:
        return SparseRows.from_arrays(self.indices, self.lengths, num_columns)


@dataclass
class SkipReport:
    """Malformed lines skipped under ``skip_malformed``: how many, and where the first one was."""

    count: int = 0
    first: str = ""

    def add(self, where: str) -> None:
        self.count += 1
        self.first = self.first or where


def read_reviews(
    path: Path,
    feature_ids: dict[str, int],
    label_parser: Callable[[str], int],
    labeled: bool,
    skipped: SkipReport | None,
    out: ParsedReviews,
) -> None:
    """Append the reviews of ``path`` to ``out``; features new to ``feature_ids`` get the next id.

    ``labeled``: the line must carry a valid label; unlabeled files' labels are ignored.
    ``skipped is None`` makes a malformed line an error naming file and line.
    """
    with open(path, encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(iter(lambda: lines.readline(MAX_LINE_CHARS + 1), ""), 1):
            if len(line) > MAX_LINE_CHARS:
                raise DataFileError(
                    f"{path}, line {number}: longer than {MAX_LINE_CHARS:,} characters, not a review "
                    f"line: the file is damaged or not a review file; {DAMAGED_FIX}"
                )
            if "\x00" in line:  # no review line holds a NUL: an archive, or a download that broke off
                raise DataFileError(
                    f"{path}, line {number}: binary data, not review lines: the file is damaged or "
                    f"not a review file (the .tar.gz archive itself?); {DAMAGED_FIX}"
                )
            try:
                features, raw_label = parse_line(line)
                if not features and raw_label is None:
                    continue  # blank line
                if not labeled:
                    label = UNLABELED
                elif raw_label is None:
                    raise MalformedLine("no '#label#:...' token")
                else:
                    label = label_parser(raw_label)
            except MalformedLine as err:
                where = f"{path}, line {number}: {err}"
                if not line.endswith("\n"):  # only the last line can lack its newline
                    raise DataFileError(
                        f"{path}, line {number}: the file ends in the middle of a review "
                        f"(...{line[-30:]!r}): it is truncated; {DAMAGED_FIX}"
                    ) from None
                if skipped is None:
                    raise DataFileError(
                        f"{where}. Fix or delete that line, or set `data.init_args.skip_malformed: "
                        "true` to skip malformed lines (they are counted and reported); if the "
                        f"file is damaged, {DAMAGED_FIX}"
                    ) from None
                skipped.add(where)
                continue
            out.indices.extend(feature_ids.setdefault(f, len(feature_ids)) for f in features)
            out.lengths.append(len(features))
            out.labels.append(label)
            out.keys.append(hash(frozenset(features)))


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
