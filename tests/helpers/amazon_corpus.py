"""A synthetic Amazon reviews corpus in the real ``processed_acl`` / ``processed_stars`` format.

Test-only (the tests of ``AmazonReviewsDataModule``, ``benchmarks/amazon_loading.py``): reviews
whose label words make them learnable, so a model's error can be checked against chance.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Sequence
from pathlib import Path


def write_synthetic_corpus(
    root: str | os.PathLike,
    domains: Sequence[str] = ("books",),
    reviews_per_class: int = 200,
    unlabeled_reviews: int = 400,
    background_size: int = 2000,
    features_per_review: int = 60,
    signal_features: int = 4,
    noise: float = 0.2,
    seed: int = 0,
) -> Path:
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
        words = [
            ("good" if positive != (rng.random() < noise) else "bad") + f"_{rng.randrange(20)}"
            for _ in range(signal_features)
        ]
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
            "".join(stars(r) for r in range(1, 6) for _ in range(reviews_per_class))
        )
    return root


def amazon_archives(scratch: str | os.PathLike, **corpus_args) -> dict[str, bytes]:
    """``processed_acl.tar.gz`` and ``processed_stars.tar.gz`` of a synthetic corpus (see
    ``write_synthetic_corpus``, which gets ``corpus_args``), by file name, laid out as the real tarballs
    (top-level folder ``processed_acl/`` or ``processed_stars/``). ``scratch`` is a folder to write in."""
    import io
    import tarfile

    root = write_synthetic_corpus(scratch, **corpus_args)
    archives = {}
    for folder in ("processed_acl", "processed_stars"):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(root / folder, arcname=folder)
        archives[f"{folder}.tar.gz"] = buffer.getvalue()
    return archives
