"""The repository's ``configs/`` and ``callbacks/`` presets, shipped inside the package.

``configs`` and ``callbacks`` here are links to the repository's top-level folders, so a wheel
carries the same files a checkout has. Two uses:

- ``--config configs/digits.yaml`` (or just ``--config digits``) works from any folder: a path that
  does not exist there but names a bundled file is read from the package, with a note on stderr;
- ``lightning-rect configs DIR`` writes the files out, for editing.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
FOLDERS = ("configs", "callbacks")


def bundled_files() -> dict[str, Path]:
    """``{"configs/digits.yaml": path, "callbacks/wandb.yaml": path, ...}``."""
    return {
        f"{folder}/{p.relative_to(ROOT / folder).as_posix()}": p
        for folder in FOLDERS
        for p in sorted((ROOT / folder).rglob("*.yaml"))
    }


def find_bundled(name: str) -> Path | None:
    """The bundled file that ``name`` means: ``configs/digits.yaml``, ``./configs/digits.yaml`` or ``digits``."""
    wanted = Path(name).as_posix().removeprefix("./")
    files = bundled_files()
    if wanted in files:
        return files[wanted]
    matches = [p for key, p in files.items() if key.startswith("configs/") and p.stem == wanted]
    return matches[0] if len(matches) == 1 else None


def resolve_config_args(argv: list[str]) -> list[str]:
    """``argv`` with each ``--config``/``-c`` value that is not a file here replaced by the bundled file it names."""
    out, expect_path = [], False
    for arg in argv:
        if expect_path:
            arg, expect_path = _resolved(arg), False
        elif arg in ("--config", "-c"):
            expect_path = True
        elif arg.startswith("--config="):
            arg = "--config=" + _resolved(arg.removeprefix("--config="))
        out.append(arg)
    return out


def _resolved(value: str) -> str:
    if Path(value).exists():
        return value
    found = find_bundled(value)
    if found is None:
        return value
    print(f"note: {value} is not in this folder; using the copy shipped with lightning_rect ({found})", file=sys.stderr)
    return str(found)


def write_configs(dest: str | Path) -> tuple[list[Path], list[Path]]:
    """Copy every bundled file into ``dest/configs`` and ``dest/callbacks``; files already there are kept.
    Returns (written, kept)."""
    written, kept = [], []
    for key, source in bundled_files().items():
        target = Path(dest) / key
        if target.exists():
            kept.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        written.append(target)
    return written, kept


def main(argv: list[str]) -> None:
    """``lightning-rect configs [DIR]``."""
    if any(a in ("-h", "--help") for a in argv) or len(argv) > 1:
        print(
            "usage: lightning-rect configs [DIR]\n\nWrites the bundled configs/ and callbacks/ presets into DIR "
            "(default: the current folder); files that already exist are kept."
        )
        sys.exit(0 if len(argv) <= 1 else 2)
    dest = Path(argv[0] if argv else ".")
    written, kept = write_configs(dest)
    print(
        f"wrote {len(written)} files under {dest / 'configs'} and {dest / 'callbacks'}"
        + (f"; kept {len(kept)} that already existed" if kept else "")
    )
