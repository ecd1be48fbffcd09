"""jsonargparse's keyword that keeps ``None`` values in a dump or a saved config: ``skip_none`` until
4.49, ``skip_unset`` since (the old name now warns). The range in pyproject.toml admits both. Read from
the installed version: jsonargparse wraps ``dump`` and ``save`` in ``**kwargs`` functions, so their
signatures do not tell."""

from __future__ import annotations

import functools
from importlib.metadata import version


@functools.cache
def keeping_none() -> dict[str, bool]:
    """The keyword argument that makes a parser's ``dump`` or ``save`` keep ``None`` values."""
    major, minor = (int(part) for part in version("jsonargparse").split(".")[:2])
    renamed = (major, minor) >= (4, 49)
    return {"skip_unset" if renamed else "skip_none": False}
