"""The table of data sets: one entry per data set, holding what the rest of the project asks about it.

Adding a data set touches its module (an ``InMemoryDataModule`` subclass, exported from
``lightning_rect/data/__init__.py``), its configs in ``configs/`` (``<name>.yaml`` and
``<name>_pretrain.yaml``) and one entry of ``CATALOG`` below. The experiment runner (which data
sets ``reproduce`` accepts, which folders a finished run's reuse checks, which reconstruction a
DAE gets, the noise of a test error), the reports and the tests read it from here; the folder
names come from the data modules themselves, so they are written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lightning_rect.data.cifar10 import CIFAR_FOLDER
from lightning_rect.data.mnist import MNIST_FOLDER
from lightning_rect.data.nistp import EMNIST_FOLDER
from lightning_rect.data.norb import VARIANTS as NORB_VARIANTS
from lightning_rect.reconstruction import paper_reconstruction


@dataclass(frozen=True)
class DataSet:
    """Facts about one data set.

    Args:
        title: its name in tables and figures.
        config: the fine-tuning config in ``configs/``; the pre-training config is ``<name>_pretrain.yaml``.
        semi_config: the config of the semi-supervised runs (``labeled_fraction`` set per run);
            default: ``config``.
        data_folders: the folders under ``data_dir`` that hold its files (what a finished run's reuse
            checks for changes); none for data that ship with a package (digits).
        test_size: test examples (for the noise of a difference of two test errors); None where it
            depends on the settings.
        reconstruction: DAE reconstruction by activation (``"*"``: every other activation) where the
            inputs need their own (NORB's inputs in [-1, 1] only a ``linear`` reconstruction reaches);
            None: the paper's for the activation's output range (``reconstruction.paper_reconstruction``:
            softplus, or cross-entropy for tanh-like units), as for images in [0, 1].
        stream: an epoch is a stream of fresh examples (NISTP): fewer labels do not mean fewer
            steps, so the semi-supervised experiment does not lengthen training.
        reproduced: one of the paper's image benchmarks that ``reproduce`` runs.
    """

    title: str
    config: str
    semi_config: str = ""
    data_folders: tuple[str, ...] = ()
    test_size: int | None = None
    reconstruction: Mapping[str, str] | None = None
    stream: bool = False
    reproduced: bool = True

    def __post_init__(self) -> None:
        if not self.semi_config:
            object.__setattr__(self, "semi_config", self.config)

    def reconstruction_for(self, activation: str) -> str:
        """The DAE reconstruction of ``activation`` units on this data set's inputs."""
        if self.reconstruction is None:
            return paper_reconstruction(activation)
        return self.reconstruction.get(activation, self.reconstruction["*"])

    @property
    def pretrain_config(self) -> str:
        return self.config.replace(".yaml", "_pretrain.yaml")

    @property
    def uses_data_dir(self) -> bool:
        """Whether ``--data.init_args.data_dir`` applies (digits ship with scikit-learn)."""
        return bool(self.data_folders)

    @property
    def configs(self) -> tuple[str, ...]:
        """Every config of this data set, each once."""
        return tuple(dict.fromkeys((self.config, self.pretrain_config, self.semi_config)))


CATALOG: dict[str, DataSet] = {
    "digits": DataSet("digits (8x8)", "digits.yaml", test_size=300),
    "mnist": DataSet("MNIST", "mnist.yaml", data_folders=(MNIST_FOLDER,), test_size=10_000),
    "cifar10": DataSet("CIFAR10", "cifar10.yaml", data_folders=(CIFAR_FOLDER,), test_size=5_000),
    "nistp": DataSet("NISTP", "nistp.yaml", data_folders=(EMNIST_FOLDER,), test_size=20_000, stream=True),
    "norb": DataSet(
        "NORB",
        "norb.yaml",
        "norb_semi.yaml",
        test_size=58_320,
        reconstruction={"*": "linear"},
        data_folders=tuple(variant["folder"] for variant in NORB_VARIANTS.values()),
    ),
    # Not among the paper's image benchmarks: run by their configs, not by `reproduce`. Folders are
    # relative to the Amazon configs' data_dir (data/amazon); the test split depends on the domains.
    # Binary inputs, rectifier layers scaled into [0, 1]: sigmoid reconstruction with cross-entropy.
    "amazon_polarity": DataSet(
        "Amazon reviews, polarity",
        "amazon_polarity.yaml",
        data_folders=("processed_acl",),
        reconstruction={"*": "scaled_sigmoid"},
        reproduced=False,
    ),
    # the stars configs pre-train on processed_acl's unlabeled reviews too
    "amazon_stars": DataSet(
        "Amazon reviews, stars",
        "amazon_stars.yaml",
        data_folders=("processed_stars", "processed_acl"),
        reconstruction={"*": "scaled_sigmoid"},
        reproduced=False,
    ),
}
