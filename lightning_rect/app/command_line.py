"""Options the command reads from the command line only, before LightningCLI parses the rest."""

from __future__ import annotations

from collections.abc import Sequence


def take_option(args: Sequence[str], name: str) -> tuple[list[str], list[str | None]]:
    """``args`` without every ``NAME VALUE`` / ``NAME=VALUE`` (anywhere, any number), and the values in
    order; None for a ``NAME`` given without one (last, or followed by another option)."""
    rest: list[str] = []
    values: list[str | None] = []
    i = 0
    while i < len(args):
        arg = str(args[i])
        if arg.startswith(name + "="):
            values.append(arg.removeprefix(name + "="))
        elif arg == name:
            given = i + 1 < len(args) and not str(args[i + 1]).startswith("-")
            values.append(str(args[i + 1]) if given else None)
            i += 1 if given else 0
        else:
            rest.append(args[i])
        i += 1
    return rest, values
