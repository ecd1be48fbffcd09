"""Bad inputs and faults, as a new user meets them, in one table.

Every case runs the CLI's ``main`` in this process (no interpreter start-up) next to one finished
run (``runs/digits/version_0``: digits, hidden_sizes [8], 1 epoch of 20 batches) and must end with exit code 2,
one line on stderr that names the field or file and the fix, no traceback, and no change to any
file of that earlier run (checksums of everything under ``runs/`` before and after).

Cases that get as far as training (divergence, NaN inputs) may add their own new run folder; all
others must leave ``runs/`` exactly as it was, new folders included.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import sys
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT
from helpers.disk_faults import FullDisk
from helpers.http_files import FileServer
from helpers.image_files import truncate, write_cifar, write_emnist, write_mnist
from helpers.norb_files import write_norb

from lightning_rect.data.norb import VARIANTS

DIGITS = str(ROOT / "configs" / "digits.yaml")
EARLY = str(ROOT / "callbacks" / "early_stopping.yaml")
PRETRAIN = str(ROOT / "configs" / "digits_pretrain.yaml")
TINY = ["--model.init_args.hidden_sizes=[8]", "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"]
REDOWNLOAD = "delete it, then download or copy it again"

Setup = Callable[[Path, Path], list[str]]  # (work dir, this case's own folder) -> extra arguments


@dataclass
class Case:
    id: str
    args: list[str]
    expected: tuple[str, ...]  # substrings of the one line on stderr
    setup: Setup | None = None  # writes this case's inputs, returns extra arguments
    fault: Callable[[pytest.MonkeyPatch, Path], None] | None = None  # injected before the run
    trains: bool = False  # gets as far as training: may add its own run folder
    around: Callable[[Path, Path], AbstractContextManager[list[str]]] | None = None  # held during the run; extra args
    absent: tuple[str, ...] = ()  # must not appear in the line
    marks: list = field(default_factory=list)


# -- inputs ---------------------------------------------------------------------------------------
def finished(work: Path) -> Path:
    return work / "runs" / "digits" / "version_0"


def best_checkpoint(work: Path) -> Path:
    [best] = finished(work).glob("checkpoints/best-*.ckpt")
    return best


def data_dir(
    write: Callable[[Path], None], damage: Callable[[Path], None] | None = None, data_class: str = "", *extra: str
) -> Setup:
    """A copy of a data set's tiny fixture in the case's folder, damaged by ``damage``."""

    def setup(work: Path, here: Path) -> list[str]:
        write(here)
        if damage is not None:
            damage(here)
        return [f"--data={data_class}", f"--data.init_args.data_dir={here}", *extra]

    return setup


def mnist_raw(name: str) -> Callable[[Path], Path]:
    return lambda root: root / "MNIST" / "raw" / name


def write_amazon(root: Path) -> None:
    folder = root / "processed_acl" / "books"
    folder.mkdir(parents=True)
    for label in ("positive", "negative"):
        lines = [f"w{i}:1 {label}_{i % 3}:2 common:1 #label#:{label}\n" for i in range(10)]
        (folder / f"{label}.review").write_text("".join(lines))
    (folder / "unlabeled.review").write_text("w1:1 common:2\n")


AMAZON = (
    "lightning_rect.data.AmazonReviewsDataModule",
    "--data.init_args.vocab_size=20",
    "--data.init_args.cache_vocab=false",
)


def replace_line(relative: str, number: int, text: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        path = root / relative
        lines = path.read_text().splitlines(keepends=True)
        lines[number - 1] = text
        path.write_text("".join(lines))

    return damage


def write_file(name: str, content: bytes | str) -> Setup:
    """Writes ``name`` into the case's folder; its path is the one extra argument."""

    def setup(work: Path, here: Path) -> list[str]:
        path = here / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return [str(path)]

    return setup


def torch_file(obj: object) -> Setup:
    def setup(work: Path, here: Path) -> list[str]:
        torch.save(obj, here / "plain.pt")
        return [str(here / "plain.pt")]

    return setup


def dae_checkpoint(work: Path, here: Path) -> list[str]:
    """A StackedDAE checkpoint (never trained: only its kind matters)."""
    from lightning_rect import StackedDAE

    model = StackedDAE(64, hidden_sizes=[8])
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(here / "dae.ckpt")
    return [str(here / "dae.ckpt")]


def empty_last_checkpoint(work: Path, here: Path) -> list[str]:
    """An unfinished run whose only resume point was cut to 0 bytes (a kill during the write)."""
    folder = work / "runs" / "digits" / "version_7" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "last.ckpt").write_bytes(b"")
    return []


def refuse_writes(code: int) -> Callable[[pytest.MonkeyPatch, Path], None]:
    """No new folder under ``runs/`` can be made: a read-only (EROFS) or full (ENOSPC) file system, or no
    permission (EACCES). Injected: tests run as root here, which chmod cannot stop, and need no mount."""

    def fault(monkeypatch: pytest.MonkeyPatch, work: Path) -> None:
        runs = str(work / "runs")
        for name in ("makedirs", "mkdir"):
            monkeypatch.setattr(os, name, refusing(getattr(os, name), runs, code))

    return fault


def refusing(make: Callable, root: str, code: int) -> Callable:
    def make_unless_under_root(path, *args, **kwargs):
        if os.path.abspath(path).startswith(root) and not os.path.isdir(path):
            raise OSError(code, os.strerror(code), str(path))
        return make(path, *args, **kwargs)

    return make_unless_under_root


def full_disk(code: int, only: str) -> Callable[[pytest.MonkeyPatch, Path], None]:
    """Every atomic write of a file whose path holds ``only`` fails half-way with ``code`` (ENOSPC, EROFS)."""

    def fault(monkeypatch: pytest.MonkeyPatch, work: Path) -> None:
        FullDisk(code, free_bytes=100, only=only).install(monkeypatch)

    return fault


def norb_killed_conversion(work: Path, here: Path) -> list[str]:
    """The NORB fixture, and the hidden temporary file that a conversion killed while writing its cache left."""
    from lightning_rect.data.norb import cache_name

    write_norb(here)
    (here / "norb" / f".{cache_name('jittered_cluttered', 32)}.0badc0de.tmp").write_bytes(b"PK half a cache")
    return ["--data=NORBDataModule", f"--data.init_args.data_dir={here}", "--data.init_args.val_size=2"]


@contextmanager
def served_code(work: Path, here: Path):
    """A checkpoint on 127.0.0.1 whose unpickling would run code (it would make ``here/code_ran``)."""
    import io

    buffer = io.BytesIO()
    torch.save({"state_dict": {}, "payload": MakesFolder(here / "code_ran")}, buffer)
    with FileServer({"/evil.ckpt": buffer.getvalue()}) as server:
        yield [f"--ckpt_path={server.url}/evil.ckpt"]
    assert not (here / "code_ran").exists()


class MakesFolder:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


@contextmanager
def resumed_elsewhere(work: Path, here: Path):
    """An unfinished run (a copy of the finished one without results.json) that another process holds."""
    from lightning_rect.app.run_lock import run_lock

    run = work / "runs" / "digits" / "version_7"
    shutil.copytree(finished(work), run)
    (run / "results.json").unlink()
    with run_lock(run):
        yield ["--ckpt_path=last"]


@contextmanager
def served_config(work: Path, here: Path):
    """A config on 127.0.0.1 (plain http) that names a module of the current folder; no request may reach it."""
    with FileServer({"/x.yaml": b"trainer:\n  callbacks:\n    - class_path: cwd_code.Callback\n"}) as server:
        yield ["--config", f"{server.url}/x.yaml"]
        assert not server.requests, server.requests


def opt_in_to_remote_configs(monkeypatch: pytest.MonkeyPatch, work: Path) -> None:
    monkeypatch.setenv("LIGHTNING_RECT_ALLOW_REMOTE_CONFIG", "1")


@contextmanager
def code_in_current_folder(work: Path, here: Path):
    """``cwd_code.py`` in the working folder, which ``python -m`` puts first on the path, and a config naming
    it; importing it would make ``here/code_ran``."""
    module = work / "cwd_code.py"
    module.write_text(f"import os\nos.mkdir({str(here / 'code_ran')!r})\nclass Callback:\n    pass\n")
    (here / "callbacks.yaml").write_text("trainer:\n  callbacks:\n    - class_path: cwd_code.Callback\n")
    sys.path.insert(0, str(work))
    try:
        yield ["--config", str(here / "callbacks.yaml")]
    finally:
        sys.path.remove(str(work))
        module.unlink()
        sys.modules.pop("cwd_code", None)
    assert not (here / "code_ran").exists()


def alias_bomb() -> str:
    """1 KB of YAML whose aliases expand to 10^12 values."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 12)]
    return "\n".join(lines) + "\nmodel:\n  init_args:\n    hidden_sizes: *a11\n"


def damaged_checkpoint(damage: Callable[[dict], None], name: str = "damaged.ckpt") -> Setup:
    """A copy of the finished run's best checkpoint, damaged; ``--ckpt_path`` to it."""

    def setup(work: Path, here: Path) -> list[str]:
        checkpoint = torch.load(best_checkpoint(work), map_location="cpu", weights_only=True)
        damage(checkpoint)
        torch.save(checkpoint, here / name)
        return [f"--ckpt_path={here / name}"]

    return setup


def bytes_changed_on_disk(option: str, name: str = "flipped.ckpt") -> Setup:
    """A copy of the finished run's best checkpoint with bytes inside its largest tensor changed (a bad
    disk or copy): still a readable archive of finite-looking floats; ``--<option>`` to it."""

    def setup(work: Path, here: Path) -> list[str]:
        import zipfile

        data = bytearray(best_checkpoint(work).read_bytes())
        with zipfile.ZipFile(best_checkpoint(work)) as archive:
            largest = max(archive.infolist(), key=lambda info: info.file_size)
        header = largest.header_offset
        start = header + 30 + int.from_bytes(data[header + 26 : header + 28], "little")
        start += int.from_bytes(data[header + 28 : header + 30], "little")  # past the local header
        middle = start + largest.file_size // 2
        data[middle : middle + 8] = bytes(b ^ 0x55 for b in data[middle : middle + 8])
        (here / name).write_bytes(bytes(data))
        return [f"--{option}={here / name}"]

    return setup


def set_hidden_sizes(sizes: list[int]) -> Callable[[dict], None]:
    return lambda checkpoint: checkpoint["hyper_parameters"].__setitem__("hidden_sizes", sizes)


def option_to_file(option: str, name: str, content: bytes | str) -> Setup:
    """``--<option>=<the case's file name>``, holding ``content``."""

    def setup(work: Path, here: Path) -> list[str]:
        return [f"--{option}={write_file(name, content)(work, here)[0]}"]

    return setup


# -- the table ------------------------------------------------------------------------------------
def fit(*args: str, config: str = DIGITS) -> list[str]:
    return ["fit", "--config", config, *TINY, *args]


def run_test(*args: str) -> list[str]:
    """``test`` with the digits config and no model setting of its own (the checkpoint's are used)."""
    return ["test", "--config", DIGITS, "--trainer.enable_progress_bar=false", *args]


CASES = [
    # range checks and registry names (the checks that already were one line)
    Case("l1-negative", fit("--model.init_args.l1=-0.5"), ("l1 must be a finite number >= 0",)),
    Case("l1-nan", fit("--model.init_args.l1=.nan"), ("l1 must be a finite number >= 0", "nan")),
    Case("lr-zero", fit("--model.init_args.lr=0"), ("lr must be a finite number > 0",)),
    Case("threads-zero", fit("--threads", "0"), ("--threads 0: give a positive number of threads",)),
    Case("threads-not-a-number", fit("--threads=two"), ("--threads two: give a positive number of threads",)),
    Case("threads-without-a-value", fit("--threads"), ("--threads (nothing): give a positive number",)),
    Case(
        "threads-before-another-option",
        fit("--threads", "--trainer.max_epochs=1"),
        ("--threads (nothing): give a positive number",),
    ),
    Case("momentum-negative", fit("--model.init_args.momentum=-1"), ("momentum must be a finite number >= 0",)),
    Case(
        "fused-sgd-with-momentum",
        fit("--model.init_args.fused_sgd=true", "--model.init_args.momentum=0.9"),
        ("fused_sgd performs plain SGD only, and momentum=0.9 asks for another update",),
    ),
    Case("hidden-sizes-empty", fit("--model.init_args.hidden_sizes=[]"), ("hidden_sizes must list at least one",)),
    Case("hidden-sizes-zero", fit("--model.init_args.hidden_sizes=[8,0]"), ("hidden_sizes must be positive",)),
    Case("labeled-fraction-zero", fit("--data.init_args.labeled_fraction=0"), ("labeled_fraction must be in (0, 1]",)),
    Case(
        "labeled-fraction-above-one",
        fit("--data.init_args.labeled_fraction=1.5"),
        ("labeled_fraction must be in (0, 1]",),
    ),
    Case("batch-size-zero", fit("--data.init_args.batch_size=0"), ("data batch_size must be an integer >= 1",)),
    Case(
        "eval-batch-size-zero",
        fit("--data.init_args.eval_batch_size=0"),
        ("data eval_batch_size must be an integer >= 1",),
    ),
    Case(
        "sharpness-zero",
        fit("--model.init_args.activation=sharp_softplus", '--model.init_args.activation_args={"a": 0}'),
        ("a (sharp_softplus sharpness) must be a finite number > 0",),
    ),
    Case(
        "unknown-activation",
        fit("--model.init_args.activation=relu6"),
        ("unknown activation 'relu6'", "rectifier, sharp_softplus, sigmoid, softplus, tanh"),
    ),
    Case(
        "unknown-reconstruction",
        fit("--model.init_args.reconstruction=mse", config=PRETRAIN),
        ("unknown reconstruction 'mse'; valid reconstruction names: linear,",),
    ),
    Case(
        "unknown-noise",
        fit("--model.init_args.noise=gaussian", config=PRETRAIN),
        ("unknown noise 'gaussian'; valid noise names: masking, salt_and_pepper",),
    ),
    Case(
        "noise-level-one", fit("--model.init_args.noise_level=1.0", config=PRETRAIN), ("noise_level must be in [0, 1)",)
    ),
    Case(
        "noise-level-negative",
        fit("--model.init_args.noise_level=-0.1", config=PRETRAIN),
        ("noise_level must be in [0, 1)",),
    ),
    Case(
        "epochs-per-layer-zero",
        fit("--model.init_args.epochs_per_layer=0", config=PRETRAIN),
        ("epochs_per_layer must be an integer >= 1",),
    ),
    Case(
        "early-stopping-twice",
        ["fit", "--config", DIGITS, "--model.init_args.hidden_sizes=[8]", "--config", EARLY, "--config", EARLY],
        ("two EarlyStopping callbacks with the same settings", "leave out --config callbacks/early_stopping.yaml"),
    ),
    Case(
        "max-epochs-zero",
        ["fit", "--config", DIGITS, "--model.init_args.hidden_sizes=[8]", "--trainer.max_epochs=0"],
        ("trainer.max_epochs=0 trains nothing",),
    ),
    Case(
        "cifar-val-size-zero",
        fit("--data=CIFAR10DataModule", "--data.init_args.val_size=0"),
        ("CIFAR10 val_size must be an integer >= 1",),
    ),
    Case(
        "nistp-distortion-strength",
        fit("--data=NISTPDataModule", "--data.init_args.distortion_strength=3"),
        ("NISTP distortion_strength must be in [0, 2]",),
    ),
    Case(
        "amazon-unknown-domain",
        fit("--data=AmazonReviewsDataModule", "--data.init_args.domains=[music]"),
        ("domains must be distinct names from books, dvd, electronics, kitchen",),
    ),
    Case(
        "missing-mnist",
        fit(),
        ("MNIST files not found in", "download: true"),
        setup=lambda work, here: ["--data=MNISTDataModule", f"--data.init_args.data_dir={here / 'nowhere'}"],
    ),
    # item 9: parser errors, the relevant line first
    Case(
        "misspelled-key",
        fit("--model.init_args.hiden_sizes=[8]"),
        ("hiden_sizes", "did you mean hidden_sizes?"),
        absent=("usage:",),
    ),
    Case("misspelled-key-l1x", fit("--model.init_args.l1x=3"), ("l1x", "did you mean l1?"), absent=("usage:",)),
    Case(
        "misspelled-key-in-config-file",
        ["fit", "--config", DIGITS, *TINY, "--config"],
        ("typo.yaml", "hiden_sizes", "did you mean hidden_sizes?"),
        setup=write_file("typo.yaml", "model:\n  init_args:\n    hiden_sizes: [8]\n"),
    ),
    Case(
        "yaml-syntax-error",
        ["fit", "--config", DIGITS, *TINY, "--config"],
        ("broken.yaml", "line 3"),
        setup=write_file("broken.yaml", "model:\n  init_args:\n    lr: [0.1\n    l1: 0\n"),
        absent=("usage:",),
    ),
    Case("nan-for-an-integer", fit("--data.init_args.batch_size=nan"), ("batch_size", "nan"), absent=("usage:",)),
    Case(
        "bad-literal",
        fit("--model.init_args.optimizer=adagrad"),
        ("optimizer", "adagrad", "sgd", "adam"),
        absent=("usage:",),
    ),
    Case(
        "bad-literal-norb-variant",
        fit("--data=NORBDataModule", "--data.init_args.variant=tiny"),
        ("variant", "tiny", "jittered_cluttered", "small"),
        absent=("usage:",),
    ),
    Case("missing-config-file", ["fit", "--config", "no_such_config.yaml"], ("no_such_config.yaml",)),
    Case(
        "unknown-subcommand",
        ["fitt", "--config", DIGITS],
        ("unknown subcommand 'fitt'; did you mean fit?",),
        absent=("usage:",),
    ),
    Case(
        "misspelled-trainer-option",
        fit("--trainer.max_epohs=3"),
        ("did you mean --trainer.max_epochs?",),
        absent=("usage:",),
    ),
    Case(
        "unknown-model-class",
        fit("--model=SparseMLPX"),
        ("'SparseMLPX'", "did you mean SparseMLP?"),
        absent=("usage:",),
    ),
    # item 6: damaged data files, each a damaged copy of its data set's tiny fixture
    Case(
        "mnist-truncated",
        fit(),
        ("train-images-idx3-ubyte is truncated", REDOWNLOAD),
        setup=data_dir(
            write_mnist, lambda root: truncate(mnist_raw("train-images-idx3-ubyte")(root), -100), "MNISTDataModule"
        ),
    ),
    Case(
        "mnist-wrong-magic",
        fit(),
        ("t10k-labels-idx1-ubyte has the wrong magic number 0x00000803", REDOWNLOAD),
        setup=data_dir(
            write_mnist,
            lambda root: shutil.copy(
                mnist_raw("t10k-images-idx3-ubyte")(root), mnist_raw("t10k-labels-idx1-ubyte")(root)
            ),
            "MNISTDataModule",
        ),
    ),
    Case(
        "cifar-not-a-pickle",
        fit(),
        ("data_batch_2 is not a pickle", REDOWNLOAD),
        setup=data_dir(
            write_cifar,
            lambda root: (root / "cifar-10-batches-py" / "data_batch_2").write_text("oops"),
            "CIFAR10DataModule",
            "--data.init_args.val_size=5",
        ),
    ),
    Case(
        "cifar-truncated",
        fit(),
        ("test_batch is truncated", REDOWNLOAD),
        setup=data_dir(
            write_cifar,
            lambda root: truncate(root / "cifar-10-batches-py" / "test_batch", 2000),
            "CIFAR10DataModule",
            "--data.init_args.val_size=5",
        ),
    ),
    Case(
        "norb-truncated",
        fit(),
        ("training-03-dat.mat is truncated", REDOWNLOAD, "cs.nyu.edu"),
        setup=data_dir(
            write_norb,
            lambda root: truncate(root / "norb" / f"{VARIANTS['jittered_cluttered']['train'][2]}-dat.mat", -500),
            "NORBDataModule",
            "--data.init_args.val_size=2",
        ),
    ),
    Case(
        "emnist-truncated",
        fit(),
        ("emnist-byclass-train-labels-idx1-ubyte is truncated", REDOWNLOAD),
        setup=data_dir(
            write_emnist,
            lambda root: truncate(root / "EMNIST" / "raw" / "emnist-byclass-train-labels-idx1-ubyte", 50),
            "NISTPDataModule",
            "--data.init_args.train_size=20",
            "--data.init_args.val_size=10",
            "--data.init_args.test_size=10",
        ),
    ),
    Case(
        "amazon-malformed-line",
        fit(),
        ("negative.review, line 4", "skip_malformed"),
        setup=data_dir(write_amazon, replace_line("processed_acl/books/negative.review", 4, "great fun:2\n"), *AMAZON),
    ),
    Case(
        "amazon-truncated",
        fit(),
        ("negative.review, line 10", "it is truncated", REDOWNLOAD),
        setup=data_dir(write_amazon, replace_line("processed_acl/books/negative.review", 10, "w9:1 negat"), *AMAZON),
    ),
    # items 7 and 3-4: checkpoints and the run folder
    Case(
        "ckpt-path-junk",
        fit(),
        ("junk.ckpt", "not a PyTorch checkpoint"),
        absent=("weights_only",),
        setup=option_to_file("ckpt_path", "junk.ckpt", b"\x00" * 100),
    ),
    Case(
        "ckpt-path-text",
        fit(),
        ("notes.ckpt", "not a PyTorch checkpoint"),
        absent=("weights_only",),
        setup=option_to_file("ckpt_path", "notes.ckpt", "hello"),
    ),
    Case("ckpt-path-missing", fit("--ckpt_path=missing.ckpt"), ("--ckpt_path 'missing.ckpt' does not exist",)),
    Case(
        "test-with-junk-checkpoint",
        ["test", "--config", DIGITS, "--model.init_args.hidden_sizes=[8]"],
        ("junk.ckpt", "not a PyTorch checkpoint"),
        absent=("weights_only",),
        setup=option_to_file("ckpt_path", "junk.ckpt", b"PK\x03\x04 truncated zip"),
    ),
    Case("ckpt-path-folder", fit("--ckpt_path=runs/digits/version_0"), ("is a folder", "best-epoch=0.ckpt")),
    Case("ckpt-path-last-all-finished", fit("--ckpt_path=last"), ("every run under", "has finished")),
    Case(
        "ckpt-path-last-no-runs",
        fit("--ckpt_path=last", "--trainer.logger.init_args.name=elsewhere"),
        ("no last.ckpt under",),
    ),
    Case(
        "ckpt-path-last-empty",
        fit("--ckpt_path=last"),
        ("last.ckpt", "empty"),
        setup=empty_last_checkpoint,
        absent=("EOFError",),
    ),
    Case(
        "ckpt-path-of-a-dae",
        fit(),
        ("StackedDAE", "pretrained"),
        setup=lambda work, here: [f"--ckpt_path={dae_checkpoint(work, here)[0]}"],
    ),
    Case("pretrained-missing", fit("--model.init_args.pretrained=missing.ckpt"), ("missing.ckpt", "does not exist")),
    Case(
        "pretrained-folder",
        fit(),
        ("is a folder", "pass the .ckpt file inside"),
        setup=lambda work, here: [f"--model.init_args.pretrained={finished(work) / 'checkpoints'}"],
    ),
    Case(
        "pretrained-folder-in-config-file",
        ["fit", "--config", DIGITS, *TINY, "--config"],
        ("is a folder",),
        setup=lambda work, here: write_file(
            "pretrained.yaml", f"model:\n  init_args:\n    pretrained: {finished(work) / 'checkpoints'}\n"
        )(work, here),
    ),
    Case(
        "pretrained-junk",
        fit(),
        ("not a PyTorch checkpoint",),
        setup=option_to_file("model.init_args.pretrained", "junk.ckpt", "hello"),
    ),
    Case(
        "pretrained-plain-torch-file",
        fit(),
        ("not a Lightning checkpoint",),
        setup=lambda work, here: [f"--model.init_args.pretrained={torch_file({'weights': 1})(work, here)[0]}"],
    ),
    Case(
        "pretrained-of-a-classifier",
        fit(),
        ("written by SparseMLP, not by StackedDAE",),
        setup=lambda work, here: [f"--model.init_args.pretrained={best_checkpoint(work)}"],
    ),
    Case("save-dir-read-only", fit(), ("read-only", "save_dir"), fault=refuse_writes(errno.EROFS)),
    Case("save-dir-full", fit(), ("no space left", "save_dir"), fault=refuse_writes(errno.ENOSPC)),
    Case("save-dir-no-permission", fit(), ("permission denied", "save_dir"), fault=refuse_writes(errno.EACCES)),
    # faults: disks that refuse a file half-way, a run folder in use, a remote checkpoint that would run code
    Case(
        "norb-cache-disk-full",
        fit(),
        ("cannot write", "norb", "no space left on the device", "cache_dir"),
        setup=norb_killed_conversion,
        fault=full_disk(errno.ENOSPC, "norb"),
    ),
    Case(
        "norb-cache-read-only",
        fit(),
        ("cannot write", "norb", "read-only", "cache_dir"),
        setup=norb_killed_conversion,
        fault=full_disk(errno.EROFS, "norb"),
    ),
    Case(
        "firing-rates-disk-full",
        fit(),
        ("cannot write", "firing_rates.json", "no space left on the device"),
        fault=full_disk(errno.ENOSPC, "firing_rates"),
        trains=True,
    ),
    Case(
        "metrics-csv-disk-full",
        fit(),
        ("cannot write", "metrics.csv", "no space left on the device"),
        fault=full_disk(errno.ENOSPC, "metrics.csv"),
        trains=True,
    ),
    Case("run-folder-in-use", fit(), ("version_7 is in use by pid", "nothing was changed"), around=resumed_elsewhere),
    Case(
        "ckpt-path-remote-code",
        fit(),
        ("evil.ckpt", "a safe load refuses"),
        around=served_code,
        absent=("weights_only",),
    ),
    # item 8: divergence and non-finite inputs
    Case(
        "divergence",
        fit("--model.init_args.hidden_sizes=[16,16]", "--model.init_args.lr=1e6"),
        ("training diverged", "no finite loss was seen", "--model.init_args.lr=0.1"),
        trains=True,
    ),
    Case(
        "nan-training-inputs",
        fit("--data=helpers.bad_data.NaNDigits"),
        ("NaNDigits: 1 train input value(s) are not finite", "check or replace the file before training"),
    ),
    Case(
        "nan-validation-inputs",
        fit("--data=helpers.bad_data.NaNDigits", "--data.init_args.split=val"),
        ("NaNDigits: 1 val input value(s) are not finite",),
    ),
    # issue 32 item 1: configs from elsewhere, and the code they could make the CLI import
    Case(
        "config-from-a-url",
        fit(),
        ("a config from a URL is not read", "LIGHTNING_RECT_ALLOW_REMOTE_CONFIG=1"),
        around=served_config,
    ),
    Case(
        "config-from-a-url-plain-http-opted-in",
        fit(),
        ("only https:// configs are read", "never http://"),
        around=served_config,
        fault=opt_in_to_remote_configs,
    ),
    Case(
        "class-path-of-the-current-folder",
        fit(),
        ("cwd_code", "a module of the current folder", "--import cwd_code"),
        around=code_in_current_folder,
    ),
    Case(
        "class-path-of-the-current-folder-on-the-command-line",
        fit("--trainer.callbacks+=cwd_code.Callback"),
        ("cwd_code", "--import cwd_code"),
        around=code_in_current_folder,
    ),
    # item 2: resource bombs
    Case(
        "yaml-alias-bomb",
        ["fit", "--config", DIGITS, *TINY, "--config"],
        ("bomb.yaml", "aliases (*name) expand to more than 100000 values"),
        setup=write_file("bomb.yaml", alias_bomb()),
    ),
    Case(
        "yaml-alias-bomb-on-the-command-line",
        fit("--model.init_args.activation_args={" + alias_bomb().partition("\nmodel:")[0].replace("\n", ", ") + "}"),
        ("command-line value (YAML): its YAML aliases (*name) expand to more than 100000 values",),
    ),
    Case(
        "config-of-megabytes",
        ["fit", "--config", DIGITS, *TINY, "--config"],
        ("big.yaml is 2.0 MB", "1000 KB"),
        setup=write_file("big.yaml", "model:\n  init_args:\n    optimizer: " + "x" * 2_000_000 + "\n"),
    ),
    Case(
        "long-value-is-cut",
        ["fit", "--config", DIGITS, *TINY, "--config"],
        ("optimizer", "xxx...(300000 characters)"),
        setup=write_file("long.yaml", "model:\n  init_args:\n    optimizer: " + "x" * 300_000 + "\n"),
    ),
    Case(
        "hidden-sizes-beyond-memory",
        fit("--model.init_args.hidden_sizes=[2000000000]"),
        ("hidden_sizes=[2000000000]", "parameters", "GB of memory available"),
    ),
    # item 7: damaged checkpoints, and settings that do not fit one
    Case(
        "ckpt-key-missing",
        fit(),
        ("damaged.ckpt", "head.weight missing", "does not fit the model"),
        setup=damaged_checkpoint(lambda c: c["state_dict"].pop("head.weight")),
    ),
    Case(
        "ckpt-key-added",
        run_test(),
        ("damaged.ckpt", "extra.weight not in the model"),
        setup=damaged_checkpoint(lambda c: c["state_dict"].__setitem__("extra.weight", torch.zeros(3))),
    ),
    Case(
        "ckpt-bytes-changed-on-disk",
        run_test(),
        ("flipped.ckpt", "is damaged", "fails its checksum"),
        setup=bytes_changed_on_disk("ckpt_path"),
    ),
    Case(
        "pretrained-bytes-changed-on-disk",
        fit(),
        ("flipped.ckpt", "is damaged", "fails its checksum"),
        setup=bytes_changed_on_disk("model.init_args.pretrained"),
    ),
    Case(
        "ckpt-without-optimizer-state",
        fit(),
        ("damaged.ckpt", "holds no optimizer state", "test --ckpt_path"),
        setup=damaged_checkpoint(lambda c: c.pop("optimizer_states")),
    ),
    Case(
        "ckpt-hparams-over-other-weights",
        run_test(),
        ("damaged.ckpt", "[8, 64] in the checkpoint, [16, 64] in the model", "hidden_sizes"),
        setup=damaged_checkpoint(set_hidden_sizes([16])),
    ),
    Case(
        "test-hidden-sizes-unlike-the-checkpoint",
        run_test("--model.init_args.hidden_sizes=[16]"),
        ("best-epoch=0.ckpt", "hidden_sizes=[16] on the command line, [8] in the checkpoint"),
        setup=lambda work, here: [f"--ckpt_path={best_checkpoint(work)}"],
    ),
    Case(
        "ckpt-nan-weights-fit",
        fit(),
        ("damaged.ckpt", "holds NaN or infinite weights", "earlier checkpoint"),
        setup=damaged_checkpoint(lambda c: c["state_dict"]["head.weight"].fill_(float("nan"))),
        absent=("last good checkpoint",),
    ),
    Case(
        "ckpt-nan-weights-test",
        run_test(),
        ("damaged.ckpt", "holds NaN or infinite weights"),
        setup=damaged_checkpoint(lambda c: c["state_dict"]["head.bias"].fill_(float("inf"))),
    ),
    # item 8: config values Lightning or the file system refused with a traceback
    Case("max-epochs-negative", fit("--trainer.max_epochs=-5"), ("trainer.max_epochs=-5", "-1 for no limit")),
    Case("max-steps-negative", fit("--trainer.max_steps=-5"), ("trainer.max_steps=-5", "-1 for no limit")),
    Case(
        "profiler-not-a-profiler",
        fit("--trainer.profiler=torch.nn.Identity"),
        ("trainer.profiler='torch.nn.Identity' is not a profiler", "SimpleProfiler"),
    ),
    Case(
        "config-is-binary",
        ["fit", "--config", DIGITS, *TINY, "--config"],
        ("noise.yaml is a binary file",),
        setup=write_file("noise.yaml", bytes(range(256)) * 4),
    ),
    Case(
        "config-is-a-checkpoint",
        ["fit", "--config", DIGITS, *TINY],
        ("best-epoch=0.ckpt is a zip archive such as a PyTorch checkpoint", "--ckpt_path"),
        setup=lambda work, here: ["--config", str(best_checkpoint(work))],
    ),
    Case(
        "logger-name-too-long",
        fit("--trainer.logger.init_args.name=" + "n" * 300),
        ("trainer.logger.init_args.name is 300 bytes long", "shorten it"),
    ),
    Case(
        "save-dir-part-too-long",
        fit("--trainer.logger.init_args.save_dir=runs/" + "d" * 300),
        ("is 300 bytes, more than the 255", "shorten it"),
    ),
]


# -- running one case -----------------------------------------------------------------------------
def snapshot(root: Path) -> dict[str, str]:
    """Checksum of every file under ``root``; folders as "<folder>"."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<folder>"
        for p in sorted(root.rglob("*"))
    }


def run_main(args: list[str], capsys, monkeypatch) -> tuple[int, str]:
    from lightning_rect.app.cli import main

    monkeypatch.setattr(sys, "argv", sys.argv[:1])  # LightningCLI warns about pytest's own arguments
    try:
        main(args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except Exception:  # noqa: BLE001 - shown as the traceback a user would see
        code = 1
        print(traceback.format_exc(), file=sys.stderr)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder with one finished run, ``runs/digits/version_0``."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    from lightning_rect.app.cli import main

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr(sys, "argv", sys.argv[:1])
        main(fit("--trainer.limit_train_batches=20", "--trainer.enable_model_summary=false"))
    assert (finished(folder) / "results.json").is_file()
    return folder


# ~0.3 s a case (a LightningCLI parser is built for each) plus the finished run: 20-25 s in all on
# the shared 2-core machine, more than `make quick` should spend
@pytest.mark.slow
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_ends_in_one_line(case: Case, work: Path, monkeypatch, capsys):
    monkeypatch.chdir(work)
    here = work / "inputs" / case.id
    here.mkdir(parents=True)
    before = snapshot(work / "runs")
    try:
        with ExitStack() as held:
            args = list(case.args) + (case.setup(work, here) if case.setup is not None else [])
            args += held.enter_context(case.around(work, here)) if case.around is not None else []
            checked = snapshot(work / "runs")  # a setup may add an unfinished run of its own
            if case.fault is not None:
                case.fault(monkeypatch, work)
            capsys.readouterr()
            code, stderr = run_main(args, capsys, monkeypatch)
            after = snapshot(work / "runs")
            monkeypatch.undo()
        temporaries = [str(p.relative_to(work)) for p in work.rglob("*") if ".tmp" in p.name]
    finally:
        monkeypatch.undo()
        restore(work / "runs", before)
    lines = [line for line in stderr.strip().splitlines() if not re.search(r"\d+%\|", line)]  # no progress bars
    assert "Traceback" not in stderr, stderr[-4000:]
    assert code == 2, stderr[-4000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-4000:]
    assert len(lines[0]) <= 1600, lines[0][:2000]  # a value read whole is cut, never echoed whole
    for expected in case.expected:
        assert expected in lines[0], lines[0]
    for absent in case.absent:
        assert absent not in lines[0], lines[0]
    changed = sorted(path for path, digest in checked.items() if after.get(path) != digest)
    assert not changed, f"files of an earlier run changed or removed: {changed}"
    new = sorted(set(after) - set(checked))
    if case.trains:  # a run that started training keeps its own new folder
        earlier = {Path(path).parts[:2] for path in checked}
        new = [path for path in new if Path(path).parts[0] != "digits" or Path(path).parts[:2] in earlier]
    assert not new, f"left behind: {new}"
    assert not temporaries, f"temporary files left: {temporaries}"


def restore(runs: Path, before: dict[str, str]) -> None:
    """Every case starts from the same ``runs/``: remove what a case (or its setup) added."""
    for path in sorted(runs.rglob("*"), key=lambda p: -len(p.parts)):
        if str(path.relative_to(runs)) not in before:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.mark.parametrize(
    "lr, advice",
    [
        (1e6, "--model.init_args.lr=0.1,"),
        (0.1, "--model.init_args.lr=0.01,"),
        (0.05, "--model.init_args.lr=0.01,"),
        (0.002, "--model.init_args.lr=0.001,"),
        (1e-4, "try the grid's values"),
        (1e-7, "try the grid's values"),
    ],
)
def test_the_suggested_lr_is_the_next_lower_value_of_the_papers_grid(lr, advice):
    from lightning_rect.callbacks.divergence import lr_advice

    assert advice in lr_advice(lr)


def zip_of_text() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "subcommand, content, problem",
    [
        ("fit", b"", "is empty (0 bytes)"),
        ("validate", b"\x00" * 100, "is not a PyTorch checkpoint"),
        ("test", b"PK\x03\x04" + bytes(60), "is not a PyTorch checkpoint"),
        ("predict", zip_of_text(), "is unreadable"),
    ],
    ids=["fit-empty", "validate-zeros", "test-truncated-zip", "predict-zip-of-text"],
)
def test_a_bad_ckpt_path_is_read_by_the_one_loader_before_lightning(
    cli_in_process, tmp_path, subcommand, content, problem
):
    """Lightning never meets the file (its own reading would suggest ``weights_only=False``): every
    subcommand names it in one line."""
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    code, stderr = cli_in_process(subcommand, "--config", DIGITS, f"--ckpt_path={path}")
    [line] = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2 and line.startswith(f"error: --ckpt_path {str(path)!r} {problem}"), stderr[-2000:]
    assert "weights_only" not in line and "Traceback" not in stderr


def test_the_table_holds_at_least_90_cases():
    assert len(CASES) >= 90 and len({c.id for c in CASES}) == len(CASES)


# -- the same through a real process: stderr as a user sees it ------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "args, expected",
    [  # one parser error; the in-process table covers the rest
        (["fit", "--config", DIGITS, "--model.init_args.hiden_sizes=[8]"], "did you mean hidden_sizes?"),
    ],
)
def test_a_real_process_prints_the_line_last_and_no_usage(run_cli, args, expected):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1], proc.stderr[-3000:]
    assert sum(line.startswith("error:") for line in lines) == 1
    assert "Traceback" not in proc.stderr and "usage:" not in proc.stderr


def test_help_still_prints_the_usage(capsys, monkeypatch):
    from lightning_rect.app.cli import main

    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out
