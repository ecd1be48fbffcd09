"""Is loading sparse Amazon reviews ever the bottleneck? Data module alone vs. training SparseMLP on it.

    python benchmarks/amazon_loading.py                      # paper size: 5000 inputs, 3 x 5000 units
    python benchmarks/amazon_loading.py --hidden 1000 1000   # smaller net, e.g. on a laptop CPU

Writes a synthetic corpus in the real ``processed_acl`` format (Zipf-distributed features, the
size of one Blitzer domain by default), then prints:
  - setup time: parsing + vocabulary (cold, no cache) and with the vocabulary cache;
  - loader samples/s: iterating the training loader (batch 10, densified batches), nothing else;
  - training samples/s: the same loader feeding SparseMLP (forward, backward, SGD step).
The loader must be many times faster than training for loading not to matter.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from lightning_rect.data import AmazonReviewsDataModule
from lightning_rect.models import SparseMLP

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the corpus writer is a test helper
from tests.helpers.amazon_corpus import write_synthetic_corpus  # noqa: E402


def loader_rate(dm: AmazonReviewsDataModule, device: torch.device, min_seconds: float = 2.0) -> float:
    """Samples per second of the training loader alone (batches moved to ``device``), whole epochs."""
    loader = dm.train_dataloader()
    seen, epoch, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        loader.sampler.set_epoch(epoch)
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            seen += len(y)
        epoch += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def training_rate(
    dm: AmazonReviewsDataModule, model: SparseMLP, device: torch.device, steps: int, warmup: int = 3
) -> float:
    """Samples per second of SGD steps on batches from the same loader (after ``warmup`` steps)."""
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=model.hparams.lr)
    batches = iter(dm.train_dataloader())
    seen, start = 0, 0.0
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, seen = time.perf_counter(), 0
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(dm.train_dataloader())
            x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss, _ = model.loss(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reviews-per-class", type=int, default=1000, help="labeled reviews per class (Blitzer: 1000)")
    parser.add_argument("--unlabeled", type=int, default=4000, help="unlabeled reviews (books: ~4500)")
    parser.add_argument("--vocab-size", type=int, default=5000)
    parser.add_argument("--hidden", type=int, nargs="+", default=[5000, 5000, 5000])
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        write_synthetic_corpus(
            root,
            reviews_per_class=args.reviews_per_class,
            unlabeled_reviews=args.unlabeled,
            background_size=50_000,
            features_per_review=50,
        )
        print(
            f"corpus: {2 * args.reviews_per_class} labeled + {args.unlabeled} unlabeled reviews "
            f"written in {time.perf_counter() - start:.1f} s"
        )

        common = dict(data_dir=root, vocab_size=args.vocab_size, batch_size=args.batch_size)
        for label in ("setup, cold (parse + build vocabulary)", "setup, vocabulary from cache"):
            dm = AmazonReviewsDataModule(**common)
            start = time.perf_counter()
            dm.setup()
            print(f"{label}: {time.perf_counter() - start:.2f} s")
        x, y = dm.splits["train"]
        print(
            f"train split: {len(y)} reviews, {x.nnz()} stored indices ({4 * x.nnz() / 2**20:.1f} MiB), "
            f"density {x.nnz() / (len(y) * args.vocab_size):.2%} of {args.vocab_size} inputs"
        )

        loading = loader_rate(dm, device)
        print(
            f"loader alone:   {loading:12,.0f} samples/s  (whole epochs for 2 s, batch {args.batch_size}, to {device})"
        )

        torch.manual_seed(0)
        model = SparseMLP(args.vocab_size, 2, args.hidden, lr=0.01)
        training = training_rate(dm, model, device, args.steps)
        print(
            f"training:       {training:12,.0f} samples/s  (SparseMLP {args.vocab_size}-"
            f"{'-'.join(map(str, args.hidden))}-2 on {device}, {torch.get_num_threads()} CPU threads)"
        )
        print(
            f"loader / training = {loading / training:,.0f}x: loading takes ~{100 * training / loading:.2f}% "
            "of a training step"
        )


if __name__ == "__main__":
    main()
