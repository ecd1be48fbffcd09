"""Amazon reviews: parsing the Blitzer et al. formats, vocabulary, sparse batches, star-rating model."""

import json
import math
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from lightning import Trainer

from lightning_rect.data.amazon import (AmazonReviewsDataModule, SparseRows, encode_reviews, most_frequent,
                                        vocab_from_checkpoint, write_synthetic_corpus)
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
UNLABELED = ["great:1 boring:1 zany:1 #label#:positive", "zany:2 quirky:1"]  # labels optional, ignored
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


def features(line: str) -> set[str]:
    return {token.rsplit(":", 1)[0] for token in line.split() if not token.startswith("#label#")}


# -- vocabulary -----------------------------------------------------------------------------------
def test_most_frequent_orders_by_document_frequency_then_alphabet():
    names = ["d", "c", "b", "a", "e"]
    df = torch.tensor([1, 2, 3, 2, 0])
    assert most_frequent(df, names, 3) == ["b", "a", "c"]
    assert most_frequent(df, names, 10) == ["b", "a", "c", "d"]  # never a feature absent from training


def test_vocabulary_is_the_training_reviews_most_frequent_features(acl):
    dm = polarity(acl)
    assert dm.summary == {"train_reviews": 8, "val_reviews": 1, "test_reviews": 1, "unlabeled_reviews": 2,
                          "unlabeled_duplicates_dropped": 0, "malformed_skipped": 0}
    train_idx, _, _ = dm._split(10)
    labeled = POSITIVE + NEGATIVE
    training = [labeled[i] for i in train_idx.tolist()] + UNLABELED  # unlabeled count even when not included
    df = Counter(f for line in training for f in features(line))
    expected = sorted(df, key=lambda f: (-df[f], f))[:6]
    assert dm.vocab == expected and len(dm.vocab) == 6 == dm.input_size


def test_inputs_are_binary_presence_vectors_and_labels_map(acl):
    dm = polarity(acl, vocab_size=50)
    x, y = dm.splits["train"]
    train_idx, _, _ = dm._split(10)
    labeled = POSITIVE + NEGATIVE
    assert y.tolist() == [1 if i < 5 else 0 for i in train_idx.tolist()]
    dense = dm.transform(x[torch.arange(len(y))])
    assert dense.dtype == torch.float32 and dense.shape == (8, 50)
    for row, i in zip(dense, train_idx.tolist()):
        on = {dm.vocab[j] for j in torch.nonzero(row).flatten().tolist()}
        assert on == features(labeled[i]) and set(row.unique().tolist()) <= {0.0, 1.0}
    assert "a:b" in dm.vocab or 2 not in train_idx.tolist()
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (8, 50) and yb.dtype == torch.long


def test_star_labels_and_unlabeled_reviews(tmp_path):
    write(tmp_path / "processed_stars/dvd/all_balanced.review", STARS)
    write(tmp_path / "processed_acl/dvd/unlabeled.review", UNLABELED)
    dm = AmazonReviewsDataModule(str(tmp_path), domains="dvd", task="stars", vocab_size=20, val_fraction=0.25,
                                 test_fraction=0.25, include_unlabeled=True,
                                 unlabeled_files=["processed_acl/{domain}/unlabeled.review"])
    assert dm.num_classes == 5 and dm.input_size == 20
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
@pytest.mark.parametrize("bad, problem", [("great:1 fun:2", "no '#label#"), ("great fun:2 #label#:negative", "'great'"),
                                          ("great:x #label#:negative", "not a positive integer"),
                                          ("great:1 #label#:3.0", "not 'positive' or 'negative'")])
def test_malformed_line_names_file_and_line(acl, bad, problem):
    path = acl / "processed_acl/books/negative.review"
    write(path, NEGATIVE[:2] + [bad] + NEGATIVE[2:])
    with pytest.raises(DataFileError) as err:
        polarity(acl)
    message = str(err.value)
    assert str(path) in message and "line 3" in message and problem in message and "skip_malformed" in message


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
    dm = polarity(acl)
    other = AmazonReviewsDataModule(str(acl), vocab_size=6, val_fraction=0.1, test_fraction=0.1, cache_vocab=False)
    other.load_state_dict({**dm.state_dict(), "vocab": ["boring", "great"]})
    other.setup()
    assert other.vocab == ["boring", "great"]
    assert other.transform(other.splits["train"][0][torch.arange(8)]).shape == (8, 6)


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
    model._loss = lambda x, y: (torch.tensor(0.0), logits, [torch.zeros(2, 3)])
    model._eval_step((torch.zeros(2, 4), torch.tensor([3, 0])))  # true ratings 4 and 1
    by_hand = math.sqrt(((3.2 - 4) ** 2 + (3.0 - 1) ** 2) / 2)  # = 1.5232
    assert math.isclose(model.eval_rmse.compute().item(), by_hand, rel_tol=1e-6)
    assert StarRatingMLP.selection_metric == "val/rmse"


@pytest.fixture
def one_thread():
    """Tiny nets gain nothing from 2 threads, and on a shared, busy machine thread hand-offs dominate."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fit(model, dm, root: Path, epochs: int) -> Trainer:
    trainer = Trainer(max_epochs=epochs, logger=False, enable_checkpointing=True, default_root_dir=str(root),
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(model, datamodule=dm)
    return trainer


def test_rectifier_nets_learn_a_synthetic_corpus_and_checkpoint_keeps_vocab(tmp_path, one_thread):
    root = write_synthetic_corpus(tmp_path, reviews_per_class=200, unlabeled_reviews=50, background_size=400,
                                  features_per_review=30, noise=0.1)
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
    from lightning_rect.cli import RectCLI

    write_synthetic_corpus(tmp_path, reviews_per_class=5, unlabeled_reviews=5)
    for name, model_class, classes in (("amazon_polarity", SparseMLP, 2), ("amazon_stars", StarRatingMLP, 5)):
        cli = RectCLI(run=False, args=["--config", str(ROOT / "configs" / f"{name}.yaml"),
                                       f"--data.init_args.data_dir={tmp_path}", "--model.init_args.hidden_sizes=[8]",
                                       "--trainer.logger=false"])
        assert type(cli.model) is model_class and isinstance(cli.datamodule, AmazonReviewsDataModule)
        assert cli.model.hparams.in_features == 5000 and cli.model.hparams.num_classes == classes
