import torch

from lightning_rect.data.base import fixed_split, labeled_subset
from lightning_rect.data.batches import Affine, EpochShuffle, InMemoryBatches
from lightning_rect.data.digits import DigitsDataModule


def epoch_ids(batches: InMemoryBatches, epoch: int) -> torch.Tensor:
    batches.sampler.set_epoch(epoch)
    return torch.cat([yb for _, yb in batches])


def make(n=103, batch=10, shuffle=True, rank=0, world=1, seed=0):
    x = torch.arange(n).float().unsqueeze(1)
    y = torch.arange(n)  # the label is the example's index
    return InMemoryBatches(x, y, batch, EpochShuffle(n, shuffle, seed, rank, world))


def test_every_example_exactly_once_per_epoch_in_a_new_order():
    batches = make()
    first, second = epoch_ids(batches, 0), epoch_ids(batches, 1)
    assert torch.equal(first.sort().values, torch.arange(103))
    assert torch.equal(second.sort().values, torch.arange(103))
    assert not torch.equal(first, second)
    assert torch.equal(first, epoch_ids(make(), 0))  # the order depends only on (seed, epoch)
    assert len(batches) == 11 and [len(y) for _, y in batches][-1] == 3


def test_two_ranks_shard_the_epoch_and_together_cover_it():
    r0, r1 = make(rank=0, world=2), make(rank=1, world=2)
    a, b = epoch_ids(r0, 3), epoch_ids(r1, 3)
    assert len(r0) == len(r1)  # equal batch counts, as DDP training needs
    assert len(a) == len(b) == 52
    union = torch.cat([a, b])
    assert set(union.tolist()) == set(range(103))
    assert len(set(a.tolist()) & set(b.tolist())) <= 1  # only the wrap-around padding example repeats


def test_evaluation_shards_are_disjoint_and_unpadded():
    a = epoch_ids(make(shuffle=False, rank=0, world=2, batch=7), 0)
    b = epoch_ids(make(shuffle=False, rank=1, world=2, batch=7), 0)
    assert sorted(torch.cat([a, b]).tolist()) == list(range(103))


def test_affine_transform_scales_and_flattens():
    out = Affine(scale=2 / 255, offset=-1)(torch.tensor([[[0, 255]]], dtype=torch.uint8))
    assert out.dtype == torch.float32 and out.shape == (1, 2)
    assert torch.allclose(out, torch.tensor([[-1.0, 1.0]]))


def test_labeled_subset_is_class_balanced_and_seeded():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    keep = labeled_subset(y, 0.1, seed=1)
    assert torch.bincount(y[keep]).tolist() == [5, 3, 2]
    assert torch.equal(keep, labeled_subset(y, 0.1, seed=1))
    assert not torch.equal(keep, labeled_subset(y, 0.1, seed=2))


def test_digits_split_is_fixed_disjoint_and_scaled():
    dm = DigitsDataModule()
    dm.setup("fit")
    sizes = {k: len(v[1]) for k, v in dm.splits.items()}
    assert sizes == {"train": 1197, "val": 300, "test": 300}
    assert 0.0 <= min(v[0].min().item() for v in dm.splits.values())
    assert max(v[0].max().item() for v in dm.splits.values()) == 1.0
    assert set(torch.cat([v[1] for v in dm.splits.values()]).tolist()) == set(range(10))
    other = DigitsDataModule(seed=5)
    other.setup("fit")
    assert torch.equal(other.splits["test"][0], dm.splits["test"][0])  # split ignores the run seed
    parts = fixed_split(1797, [1197, 300, 300], seed=0)
    assert len(set(torch.cat(parts).tolist())) == 1797  # disjoint index sets




def test_digits_labeled_fraction_shrinks_only_training():
    dm = DigitsDataModule(labeled_fraction=0.1)
    dm.setup("fit")
    assert 110 <= len(dm.splits["train"][1]) <= 130
    assert len(dm.splits["val"][1]) == 300
