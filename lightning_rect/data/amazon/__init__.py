"""Amazon multi-domain reviews (Blitzer et al. 2007) as binary bag-of-features vectors.

One module per concern: ``files`` (where the files are), ``parse`` (review lines -> feature ids
and labels), ``corpus`` (the split reviews before a vocabulary is chosen), ``vocabulary`` (the
most frequent features; the vocabulary a checkpoint carries), ``cache`` (the vocabulary on disk),
``storage`` (compressed rows, densified per minibatch) and ``datamodule`` (the LightningDataModule).
"""

from lightning_rect.data.amazon.datamodule import AmazonReviewsDataModule
from lightning_rect.data.amazon.files import DEFAULT_FILES, DOMAINS, NUM_CLASSES
from lightning_rect.data.amazon.parse import encode_reviews, parse_line
from lightning_rect.data.amazon.storage import Densify, SparseRows
from lightning_rect.data.amazon.vocabulary import most_frequent, vocab_from_checkpoint

__all__ = [
    "AmazonReviewsDataModule",
    "DEFAULT_FILES",
    "DOMAINS",
    "Densify",
    "NUM_CLASSES",
    "SparseRows",
    "encode_reviews",
    "most_frequent",
    "parse_line",
    "vocab_from_checkpoint",
]
