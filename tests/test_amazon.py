"""Amazon reviews: parsing the Blitzer et al. formats, vocabulary, sparse batches, star-rating model."""

import json
import math
import os
import re
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from helpers.amazon_corpus import write_synthetic_corpus
from helpers.threads import one_torch_thread
from lightning import Trainer

from lightning_rect.data.amazon import (
    AmazonReviewsDataModule,
    SparseRows,
    corpus,
    encode_reviews,
    most_frequent,
    parse_line,
    vocab_from_checkpoint,
)
from lightning_rect.data.amazon.corpus import split_indices
from lightning_rect.errors import ConfigError, DataFileError
from lightning_rect.models import SparseMLP, StarRatingMLP
from lightning_rect.models.sentiment import expected_stars

POSITIVE = [
    "great:2 fun:1 the_plot:1 #label#:positive",
    "great:1 fun:3 #label#:positive",
    "great:1 a:b:1 #label#:positive",  # the feature "a:b" contains a colon: split at the last one
    "fun:1 loved_it:1 #label#:positive",
    "great:1 loved_it:1 #label#:positive",
]
NEGATIVE = [
    "awful:1 the_plot:2 #label#:negative",
    "awful:1 boring:1 #label#:negative",
    "boring:2 the_plot:1 #label#:negative",
    "awful:4 #label#:negative",
    "boring:1 waste:1 #label#:negative",
]
LABELED = POSITIVE + NEGATIVE
# Labels are optional and ignored; "a:b" here puts that feature into the vocabulary.
UNLABELED = ["great:1 boring:1 zany:1 #label#:positive", "zany:2 quirky:1 a:b:1"]
STARS = [f"s{r}:1 common:1 w{i}:1 #label#:{r}.0" for r in range(1, 6) for i in range(4)]


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def acl(tmp_path: Path) -> Path:
    write(tmp_path / "processed_acl/books/positive.review", POSITIVE)
    write(tmp_path / "processed_acl/books/negative.review", NEGATIVE)
    write(tmp_path / "processed_acl/books/unlabeled.review", UNLABELED)
    return tmp_path


def polarity(root: Path, **kwargs) -> AmazonReviewsDataModule:
    args = dict(data_dir=str(root), domains=["books"], vocab_size=6, val_fraction=0.1, test_fraction=0.1)
    dm = AmazonReviewsDataModule(**{**args, **kwargs})
    dm.setup()
    return dm


def fit(model, dm, root: Path, epochs: int, ckpt_path: Path | None = None) -> Trainer:
    trainer = Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=True,
        default_root_dir=str(root),
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )
    with one_torch_thread():
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return trainer


def features(line: str) -> set[str]:
    return {token.rsplit(":", 1)[0] for token in line.split() if not token.startswith("#label#")}


def label(line: str) -> int:
    return 1 if line.endswith("#label#:positive") else 0


#: Which of the 10 labeled reviews each split holds with ``polarity()``'s fractions and split_seed 0.
SPLIT = dict(zip(("train", "val", "test"), (idx.tolist() for idx in split_indices(10, 0.1, 0.1, 0))))


def rows_as_features(dm: AmazonReviewsDataModule, split: str) -> list[set[str]]:
    """Each row of a split as the set of vocabulary features whose input is 1."""
    x, y = dm.splits[split]
    dense = dm.transform(x[torch.arange(len(y))])
    return [{dm.vocab[j] for j in row.nonzero().flatten().tolist()} for row in dense]


# -- vocabulary -----------------------------------------------------------------------------------
def test_most_frequent_orders_by_document_frequency_then_alphabet():
    names = ["d", "c", "b", "a", "e"]
    df = torch.tensor([1, 2, 3, 2, 0])
    assert most_frequent(df, names, 3) == ["b", "a", "c"]
    assert most_frequent(df, names, 10) == ["b", "a", "c", "d"]  # never a feature absent from training


def test_vocabulary_is_the_training_reviews_most_frequent_features(acl):
    dm = polarity(acl)
    assert dm.summary == {
        "train_reviews": 8,
        "val_reviews": 1,
        "test_reviews": 1,
        "unlabeled_reviews": 2,
        "unlabeled_duplicates_dropped": 0,
        "malformed_skipped": 0,
    }
    training = [LABELED[i] for i in SPLIT["train"]] + UNLABELED  # unlabeled count even when not included
    df = Counter(f for line in training for f in features(line))
    expected = sorted(df, key=lambda f: (-df[f], f))[:6]
    assert dm.vocab == expected and len(dm.vocab) == 6 == dm.input_size


def test_inputs_are_binary_presence_vectors_and_labels_map(acl):
    """Every labeled review is one 0/1 row over the vocabulary, with a 1 for each of its features in
    the vocabulary (counts ignored) and its file's label: positive -> 1, negative -> 0."""
    assert SPLIT == {"train": [0, 1, 3, 4, 5, 7, 8, 9], "val": [6], "test": [2]}  # what the rest relies on
    with pytest.warns(
        UserWarning, match="the vocabulary holds only 10 features, fewer than vocab_size=50; the remaining"
    ):
        dm = polarity(acl, vocab_size=50)  # more than the 10 training features: none is cut
    assert parse_line(POSITIVE[2]) == (["great", "a:b"], "positive")  # "a:b:1": split at the last colon
    assert "a:b" in dm.vocab
    for split, lines in SPLIT.items():
        x, y = dm.splits[split]
        dense = dm.transform(x[torch.arange(len(y))])
        assert dense.dtype == torch.float32 and dense.shape == (len(lines), 50)
        assert set(dense.unique().tolist()) == {0.0, 1.0}  # "great:2" and "awful:4" are 1s too
        assert rows_as_features(dm, split) == [features(LABELED[i]) & set(dm.vocab) for i in lines]
        assert y.tolist() == [label(LABELED[i]) for i in lines]
    assert rows_as_features(dm, "test") == [{"great", "a:b"}]
    assert rows_as_features(dm, "val") == [{"awful", "boring"}]  # NEGATIVE[1], label 0
    # a shuffled training batch keeps each review with its own label
    label_of = {frozenset(features(LABELED[i])): label(LABELED[i]) for i in SPLIT["train"]}
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (8, 50) and yb.dtype == torch.long
    assert [label_of[frozenset(dm.vocab[j] for j in row.nonzero().flatten().tolist())] for row in xb] == yb.tolist()


def test_star_labels_and_unlabeled_reviews(tmp_path):
    write(tmp_path / "processed_stars/dvd/all_balanced.review", STARS)
    write(tmp_path / "processed_acl/dvd/unlabeled.review", UNLABELED)
    dm = AmazonReviewsDataModule(
        str(tmp_path),
        domains="dvd",
        task="stars",
        vocab_size=20,
        val_fraction=0.25,
        test_fraction=0.25,
        include_unlabeled=True,
        unlabeled_files=["processed_acl/{domain}/unlabeled.review"],
    )
    assert dm.num_classes == 5 and dm.input_size == 20
    with pytest.warns(UserWarning, match="holds only 15 features, fewer than vocab_size=20"):
        dm.setup()
    x, y = dm.splits["train"]
    assert len(y) == 10 + 2 and (y == -1).sum() == 2
    labels = torch.cat([dm.splits[s][1] for s in ("train", "val", "test")])
    assert sorted(labels[labels >= 0].tolist()) == [r - 1 for r in range(1, 6) for _ in range(4)]
    for row, label in zip(dm.transform(x[torch.arange(len(y))]), y.tolist()):
        if label >= 0:
            assert row[dm.vocab.index(f"s{label + 1}")] == 1


def test_unlabeled_reviews_identical_to_labeled_ones_are_dropped(acl):
    write(acl / "processed_acl/books/unlabeled.review", UNLABELED + [NEGATIVE[3].replace("negative", "positive")])
    dm = polarity(acl, include_unlabeled=True)
    assert dm.summary["unlabeled_duplicates_dropped"] == 1 and dm.summary["unlabeled_reviews"] == 2


def test_labeled_fraction_keeps_every_unlabeled_review(acl):
    dm = polarity(acl, include_unlabeled=True, labeled_fraction=0.5)
    y = dm.splits["train"][1]
    assert (y == -1).sum() == 2 and (y != -1).sum() == 4


# -- sparse storage -------------------------------------------------------------------------------
def test_sparse_rows_select_and_densify_like_a_dense_matrix():
    generator = torch.Generator().manual_seed(0)
    dense = (torch.rand(50, 30, generator=generator) < 0.1).float()
    dense[[3, 17]] = 0  # empty rows
    lengths = dense.sum(1).long()
    rows = SparseRows.from_lengths(torch.nonzero(dense)[:, 1], lengths, 30)
    idx = torch.tensor([17, 3, 3, 49, 0, 8])
    assert torch.equal(rows[idx].to_dense(), dense[idx])
    assert torch.equal(rows.to_dense(), dense)
    table = torch.arange(30) - 10  # drop columns < 10, shift the rest
    assert torch.equal(rows.remap(table, 20).to_dense(), dense[:, 10:])


# -- malformed lines ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, problem",
    [
        ("great:1 fun:2", "no '#label#"),
        ("great fun:2 #label#:negative", "'great'"),
        ("great:x #label#:negative", "not a positive integer"),
        ("great:1 #label#:3.0", "not 'positive' or 'negative'"),
    ],
)
def test_malformed_line_names_file_and_line(acl, bad, problem):
    path = acl / "processed_acl/books/negative.review"
    write(path, NEGATIVE[:2] + [bad] + NEGATIVE[2:])
    with pytest.raises(DataFileError) as err:
        polarity(acl)
    message = str(err.value)
    assert str(path) in message and "line 3" in message and problem in message and "skip_malformed" in message


@pytest.mark.parametrize(
    "damage, problem",
    [
        (
            lambda data: data[: data.index(b"#label#:negative", 40) + 9],
            "line 2: the file ends in the middle of a review (...'awful:1 boring:1 #label#:n'): it is truncated",
        ),
        (lambda data: data[: data.rindex(b" ")], "line 5: the file ends in the middle of a review"),
        (lambda data: __import__("gzip").compress(data), "line 1: binary data, not review lines"),
        (lambda data: data[:30] + bytes(64) + data[30:], "line 1: binary data, not review lines"),
    ],
)
def test_damaged_review_file_is_named_with_the_fix(acl, damage, problem):
    path = acl / "processed_acl/books/negative.review"
    path.write_bytes(damage(path.read_bytes()))
    for skip_malformed in (False, True):  # skipping malformed lines does not hide a damaged file
        with pytest.raises(DataFileError) as err:
            polarity(acl, skip_malformed=skip_malformed)
        message = str(err.value)
        assert "\n" not in message and str(path) in message and problem in message, message
        assert "delete it, then download or copy it again" in message and "mdredze/datasets/sentiment" in message


def test_skip_malformed_counts_and_warns_once(acl):
    write(acl / "processed_acl/books/negative.review", NEGATIVE + ["oops", "great:1 #label#:maybe"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm = polarity(acl, skip_malformed=True)
    skipped = [w for w in caught if "malformed" in str(w.message)]
    assert len(skipped) == 1 and "skipped 2 malformed" in str(skipped[0].message)
    assert dm.summary["malformed_skipped"] == 2 and dm.summary["train_reviews"] == 8


def test_missing_file_and_bad_settings_say_what_to_do(tmp_path, acl):
    with pytest.raises(DataFileError, match=r"processed_stars/books/all_balanced.review.*processed_stars.tar.gz"):
        AmazonReviewsDataModule(str(tmp_path), task="stars").setup()
    with pytest.raises(ConfigError, match="books, dvd, electronics, kitchen"):
        AmazonReviewsDataModule(str(acl), domains=["music"])
    with pytest.raises(ConfigError, match="val_fraction \\+ test_fraction"):
        AmazonReviewsDataModule(str(acl), val_fraction=0.5, test_fraction=0.5)


def test_a_line_longer_than_any_review_is_refused_unread(acl, monkeypatch):
    """A file without line breaks (another format, or bytes that are not text) is not held in memory
    as one "line": the reader stops at ``MAX_LINE_CHARS`` and names the file."""
    from lightning_rect.data.amazon import parse

    monkeypatch.setattr(parse, "MAX_LINE_CHARS", 1000)
    path = acl / "processed_acl/books/positive.review"
    write(path, POSITIVE[:2] + [" ".join(f"w{i}:1" for i in range(400)) + " #label#:positive"])
    with pytest.raises(DataFileError) as err:
        polarity(acl)
    message = str(err.value)
    assert "\n" not in message and f"{path}, line 3: longer than 1,000 characters, not a review line" in message
    assert "delete it, then download or copy it again" in message


def test_reviews_too_few_for_a_split_are_refused_naming_the_sizes(tmp_path):
    """3 reviews a domain: val_fraction 0.1 rounds to no validation review; refused before training."""
    write(tmp_path / "processed_acl/books/positive.review", POSITIVE[:2])
    write(tmp_path / "processed_acl/books/negative.review", NEGATIVE[:1])
    write(tmp_path / "processed_acl/books/unlabeled.review", UNLABELED)
    with pytest.raises(DataFileError) as err:
        polarity(tmp_path, val_fraction=0.1, test_fraction=0.3)
    message = str(err.value)
    assert "\n" not in message and message.startswith(
        "AmazonReviewsDataModule: the val split is empty (train 2, val 0, test 1 examples, from "
    ), message
    assert f"{tmp_path}: processed_acl/books/positive.review, processed_acl/books/negative.review" in message


def test_vocab_from_a_hostile_or_foreign_file_is_refused_in_one_line(tmp_path):
    """Before, ``vocab_from_checkpoint`` unpickled anything (``weights_only=False``): a planted object
    ran its code. Now the load is safe: refused, nothing runs."""
    from lightning_rect.errors import CheckpointError

    ran = tmp_path / "the planted code ran"

    class Planted:
        def __reduce__(self):
            return os.makedirs, (str(ran),)

    hostile = tmp_path / "hostile.ckpt"
    torch.save({"AmazonReviewsDataModule": {"vocab": ["great"]}, "extra": Planted()}, hostile)
    with pytest.raises(CheckpointError) as err:
        vocab_from_checkpoint(hostile)
    assert not ran.exists()
    message = str(err.value)
    assert "\n" not in message and str(hostile) in message and "safe load refuses" in message, message
    foreign = tmp_path / "notes.ckpt"
    foreign.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        vocab_from_checkpoint(foreign)
    plain = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(DataFileError, match="holds no Amazon vocabulary"):
        vocab_from_checkpoint(plain)


def test_no_unsafe_load_anywhere_in_the_package():
    """Every ``torch.load`` of the package keeps the safe default; none passes ``weights_only=False``."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "lightning_rect").rglob("*.py")
        if re.search(r"weights_only\s*=\s*False", path.read_text())
    ]
    assert offenders == []


# -- vocabulary cache and checkpoints -------------------------------------------------------------
def test_vocabulary_is_cached_and_reused(acl):
    dm = polarity(acl)
    [cache] = list((acl / "vocab").glob("*.json"))
    assert json.loads(cache.read_text())["vocab"] == dm.vocab
    planted = ["zany", "quirky", "great", "awful", "boring", "fun"]
    cache.write_text(json.dumps({"vocab": planted}))
    assert polarity(acl).vocab == planted  # read from the cache, not rebuilt
    assert polarity(acl, vocab_size=3).vocab != planted[:3]  # another size: another cache file
    assert len(list((acl / "vocab").glob("*.json"))) == 2


def test_vocabulary_restored_from_state_dict_reencodes(acl):
    """A checkpoint's vocabulary becomes the inputs, whether it is restored before ``setup()`` or after
    it (as Lightning does); after setup the parsed reviews are re-encoded without reading the files."""
    built = polarity(acl)
    restored = ["boring", "great", "zany"]
    assert restored != built.vocab
    state = {**built.state_dict(), "vocab": restored}

    before_setup = AmazonReviewsDataModule(str(acl), vocab_size=6, val_fraction=0.1, test_fraction=0.1)
    before_setup.load_state_dict(state)
    with pytest.warns(UserWarning, match="holds only 3 features, fewer than vocab_size=6"):
        before_setup.setup()  # the cache holds built.vocab: the checkpoint's wins
    after_setup = polarity(acl)
    half = polarity(acl, labeled_fraction=0.5)
    assert after_setup.vocab == built.vocab and len(half.splits["train"][1]) == 4
    for review_file in acl.rglob("*.review"):
        review_file.unlink()  # re-encoding must not need the files
    for dm in (after_setup, half):
        with pytest.warns(UserWarning, match="holds only 3 features, fewer than vocab_size=6"):
            dm.load_state_dict(state)

    for dm in (before_setup, after_setup):
        assert dm.vocab == restored and dm.state_dict()["vocab"] == restored
        for split, lines in SPLIT.items():
            assert rows_as_features(dm, split) == [features(LABELED[i]) & set(restored) for i in lines]
            assert dm.splits[split][1].tolist() == [label(LABELED[i]) for i in lines]
            assert dm.transform(dm.splits[split][0][torch.arange(len(lines))]).shape == (len(lines), 6)
    assert half.vocab == restored and len(half.splits["train"][1]) == 4  # still the labeled_fraction subset
    with pytest.raises(ConfigError, match="set data.init_args.vocab_size: 6"):  # wider than the inputs
        AmazonReviewsDataModule(str(acl), vocab_size=2).load_state_dict(built.state_dict())


def test_resuming_a_checkpoint_of_another_vocabulary_reads_each_file_once(acl, tmp_path, monkeypatch):
    """``Trainer.fit(ckpt_path=...)`` runs setup() (files read), then restores the vocabulary: the
    reviews are re-encoded with it in memory, and training resumes on the re-encoded splits."""
    model = SparseMLP(6, 2, [4])
    trainer = fit(model, polarity(acl), tmp_path / "first", epochs=1)
    checkpoint = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=False)
    restored = ["boring", "great", "zany"]
    checkpoint["AmazonReviewsDataModule"]["vocab"] = restored  # as if trained on other features
    torch.save(checkpoint, tmp_path / "other_vocab.ckpt")

    reads = Counter()
    read_reviews = corpus.read_reviews

    def counting_read_reviews(path, *args):
        reads[Path(path).name] += 1
        return read_reviews(path, *args)

    monkeypatch.setattr(corpus, "read_reviews", counting_read_reviews)
    dm = AmazonReviewsDataModule(str(acl), vocab_size=6, val_fraction=0.1, test_fraction=0.1)
    with pytest.warns(UserWarning, match="holds only 3 features, fewer than vocab_size=6"):
        trainer = fit(SparseMLP(6, 2, [4]), dm, tmp_path / "resumed", epochs=2, ckpt_path=tmp_path / "other_vocab.ckpt")
    assert reads == {"positive.review": 1, "negative.review": 1, "unlabeled.review": 1}
    assert trainer.current_epoch == 2 and dm.vocab == restored
    assert trainer.train_dataloader.dataset.x is dm.splits["train"][0]  # the Trainer got the re-encoded reviews
    assert rows_as_features(dm, "train") == [features(LABELED[i]) & set(restored) for i in SPLIT["train"]]


def test_encode_reviews_uses_the_given_vocabulary():
    x = encode_reviews(["great:3 new:1 #label#:positive", "awful:1", ""], ["awful", "great"], size=3)
    assert x.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    with pytest.raises(DataFileError, match="review 2"):
        encode_reviews(["great:1", "great:one"], ["great"])


# -- star-rating model ----------------------------------------------------------------------------
def test_expected_stars_and_rmse_by_hand():
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2, 0.2]])
    logits = probs.log() + 0.7  # softmax ignores the shift
    assert torch.allclose(expected_stars(logits), torch.tensor([3.2, 3.0]))
    model = StarRatingMLP(in_features=4, num_classes=5, hidden_sizes=[3])
    model.loss = lambda x, y: (torch.tensor(0.0), logits)
    model._eval_step((torch.zeros(2, 4), torch.tensor([3, 0])))  # true ratings 4 and 1
    by_hand = math.sqrt(((3.2 - 4) ** 2 + (3.0 - 1) ** 2) / 2)  # = 1.5232
    assert math.isclose(model.eval_metrics[0]["rmse"].compute().item(), by_hand, rel_tol=1e-6)
    assert StarRatingMLP.selection_metric == "val/rmse"


@pytest.mark.slow  # two 6-epoch Trainer runs: 1 to 3 s
def test_rectifier_nets_learn_a_synthetic_corpus_and_checkpoint_keeps_vocab(tmp_path):
    root = write_synthetic_corpus(
        tmp_path, reviews_per_class=200, unlabeled_reviews=50, background_size=400, features_per_review=30, noise=0.1
    )
    common = dict(data_dir=str(root), domains=["books"], vocab_size=300, batch_size=10)
    torch.manual_seed(0)
    dm = AmazonReviewsDataModule(task="polarity", **common)
    trainer = fit(SparseMLP(300, 2, [64, 64, 64], lr=0.1), dm, tmp_path / "polarity", epochs=6)
    assert trainer.callback_metrics["val/err"] < 0.1  # chance: 0.5

    dm = AmazonReviewsDataModule(task="stars", **common)
    model = StarRatingMLP(300, 5, [64, 64, 64], lr=0.1)
    trainer = fit(model, dm, tmp_path / "stars", epochs=6)
    rmse = trainer.callback_metrics["val/rmse"]
    assert rmse < 0.6 and "val/err" in trainer.callback_metrics  # chance (always 3 stars): sqrt(2) = 1.41
    ckpt = trainer.checkpoint_callback.best_model_path
    assert vocab_from_checkpoint(ckpt) == dm.vocab
    restored = StarRatingMLP.load_from_checkpoint(ckpt)
    lines = (root / "processed_stars/books/all_balanced.review").read_text().splitlines()[:3]
    stars = restored.predict_step((encode_reviews(lines, dm.vocab, size=300), None), 0)
    assert stars.shape == (3,) and ((1 <= stars) & (stars <= 5)).all()


def test_configs_build_the_amazon_data_and_models(tmp_path):
    from lightning_rect.app.cli import RectCLI

    write_synthetic_corpus(tmp_path, reviews_per_class=5, unlabeled_reviews=5)
    for name, model_class, classes in (("amazon_polarity", SparseMLP, 2), ("amazon_stars", StarRatingMLP, 5)):
        cli = RectCLI(
            run=False,
            args=[
                "--config",
                str(ROOT / "configs" / f"{name}.yaml"),
                f"--data.init_args.data_dir={tmp_path}",
                "--model.init_args.hidden_sizes=[8]",
                "--trainer.logger=false",
            ],
        )
        assert type(cli.model) is model_class and isinstance(cli.datamodule, AmazonReviewsDataModule)
        assert cli.model.hparams.in_features == 5000 and cli.model.hparams.num_classes == classes
