"""Where the Amazon review files are: domains, tasks, default file names, and the missing-file error."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_rect.errors import ConfigError, DataFileError

DOMAINS = ("books", "dvd", "electronics", "kitchen")
SOURCE_URL = "https://www.cs.jhu.edu/~mdredze/datasets/sentiment/"
NUM_CLASSES = {"polarity": 2, "stars": 5}

#: The tarballs ``download=True`` fetches, by the top-level folder each unpacks to. No checksum or
#: size is published for them (the source page gives only "19 M" and "33 M"), so a download is
#: verified by the size the server announces and a full read of the gzipped tar, which must hold
#: the folder's ``books`` files.
ARCHIVES: dict[str, dict[str, Any]] = {
    "processed_acl": {
        "url": SOURCE_URL + "processed_acl.tar.gz",
        "checksum": None,
        "size": None,
        "required": ("processed_acl/books/positive.review", "processed_acl/books/negative.review"),
    },
    "processed_stars": {
        "url": SOURCE_URL + "processed_stars.tar.gz",
        "checksum": None,
        "size": None,
        "required": ("processed_stars/books/all_balanced.review",),
    },
}

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


def check_domains(domains: Sequence[str] | str) -> list[str]:
    domains = [domains] if isinstance(domains, str) else list(domains)
    unknown = [d for d in domains if d not in DOMAINS]
    if not domains or unknown or len(set(domains)) != len(domains):
        raise ConfigError(f"domains must be distinct names from {', '.join(DOMAINS)}; got {domains!r}")
    return domains


def review_files(data_dir: str | Path, templates: Sequence[str], domain: str) -> list[Path]:
    """The files ``templates`` name for ``domain``; a DataFileError saying where to get the first missing one."""
    root = Path(data_dir)
    paths = [root / t.format(domain=domain) for t in templates]
    for path in paths:
        if not path.is_file():
            where = (
                f"Download {path.relative_to(root).parts[0]}.tar.gz from {SOURCE_URL} and unpack it into "
                f"{root.resolve()}"
                if path.is_relative_to(root)
                else f"Get the files from {SOURCE_URL}"
            )
            raise DataFileError(
                f"Amazon reviews file not found: {path.resolve()}. {where} (or set "
                "data.init_args.download: true, or data_dir / labeled_files / unlabeled_files)."
            )
    return paths


def download_archives(data_dir: str | Path, templates: Sequence[str], domains: Sequence[str]) -> None:
    """Fetch and unpack into ``data_dir`` each archive of ``ARCHIVES`` that a missing file of
    ``templates`` (for ``domains``) comes from; templates outside those folders are left alone."""
    from functools import partial

    from lightning_rect.data.download import Remote, check_tar, fetch, unpack_archive

    root = Path(data_dir)
    needed = []
    for template in templates:
        folder = Path(template).parts[0]
        if (
            folder in ARCHIVES
            and folder not in needed
            and any(not (root / template.format(domain=d)).is_file() for d in domains)
        ):
            needed.append(folder)
    for folder in needed:
        spec = ARCHIVES[folder]
        checksum = tuple(spec["checksum"]) if spec["checksum"] else None
        archive = fetch(
            Remote(
                url=spec["url"],
                checksum=checksum,
                size=spec["size"],
                check=partial(check_tar, required=spec["required"]),
                by_hand=f"`tar -xzf {root / (folder + '.tar.gz')} -C {root}`",
            ),
            root,
        )
        unpack_archive(archive, root)
