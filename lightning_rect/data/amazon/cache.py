"""The chosen vocabulary, cached as JSON under ``<data_dir>/vocab/`` so later runs reuse it as is."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

from lightning_rect.files import write_atomically


class VocabularyCache:
    """One JSON file per data setting; ``enabled=False`` makes reads miss and writes do nothing.

    The file name carries a digest of everything the vocabulary depends on (task, domains,
    vocab_size, split, skip_malformed, and each file's path, size and modification time), so
    changed files or settings get a new file instead of a stale vocabulary.
    """

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled

    @classmethod
    def for_setting(
        cls,
        data_dir: str | Path,
        task: str,
        domains: Sequence[str],
        vocab_size: int,
        split: Sequence[float],
        skip_malformed: bool,
        files: Sequence[Path],
        enabled: bool = True,
    ) -> VocabularyCache:
        root = Path(data_dir)
        key = {
            "domains": sorted(domains),
            "vocab_size": vocab_size,
            "task": task,
            "split": list(split),
            "skip": skip_malformed,
            "files": sorted(
                [str(f.relative_to(root) if f.is_relative_to(root) else f), f.stat().st_size, f.stat().st_mtime_ns]
                for f in files
            ),
        }
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        return cls(root / "vocab" / f"{task}-{'+'.join(sorted(domains))}-{vocab_size}-{digest}.json", enabled)

    def read(self) -> list[str] | None:
        if not self.enabled or not self.path.is_file():
            return None
        try:
            return list(json.loads(self.path.read_text())["vocab"])
        except (OSError, ValueError, KeyError, TypeError):
            warnings.warn(f"ignoring unreadable vocabulary cache {self.path}; it will be rebuilt", stacklevel=2)
            return None

    def write(self, vocab: list[str], **about: object) -> None:
        """Store ``vocab`` (and ``about``, for whoever reads the file); a failure only warns."""
        if not self.enabled:
            return
        try:
            write_atomically(self.path, json.dumps({**about, "vocab": vocab}))  # ranks writing at once: one whole file
        except OSError as err:
            warnings.warn(
                f"could not cache the vocabulary in {self.path} ({err}); it will be rebuilt next run", stacklevel=2
            )
