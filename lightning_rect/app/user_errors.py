"""What the CLI prints when it stops: one line naming the field or file and the fix, exit code 2.

``user_error`` maps an exception to a ``LightningRectError`` when the user can fix it: our own
errors (also when jsonargparse wrapped them while instantiating), an argument parser error, a folder
that cannot be made. Anything else is a bug and keeps its traceback. ``parser_message`` words a
parser error from its chain of causes (``RectCLI.parse_arguments`` calls it with the parser's options
in hand): the key, what is wrong, the valid choices or a close match, never the usage.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import importlib
import inspect
import re
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

from lightning_rect.errors import ConfigError, LightningRectError
from lightning_rect.files import CAUSES, storage_error

SUBCOMMANDS = ("fit", "validate", "test", "predict")
#: The longest file or folder name most file systems take.
MAX_NAME_BYTES = 255
TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "NoneType": "null"}


class Stopped(LightningRectError):
    """The run was stopped by a signal; ``exit_code`` is the shell's 128 + the signal's number."""

    def __init__(self, message: str, signum: int = signal.SIGTERM) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


#: The longest run of characters without a space echoed in a line (a value pasted or read whole is cut).
LONGEST_WORD = 200
#: The longest line printed: its start (the field, the problem) and its end (the fix) are kept.
LONGEST_LINE = 1500


def one_line(message: object) -> str:
    """``message`` on one line: its lines joined with "; ", each value over ``LONGEST_WORD`` characters cut
    (``...`` and its length), the line kept under ``LONGEST_LINE`` characters (its start and its end)."""
    text = re.sub(
        rf"\S{{{LONGEST_WORD + 1},}}",
        lambda m: f"{m.group(0)[:LONGEST_WORD]}...({len(m.group(0))} characters)",
        str(message),
    )
    line = "; ".join(part.strip() for part in text.splitlines() if part.strip())
    if len(line) > LONGEST_LINE:
        cut = len(line) - LONGEST_LINE
        line = f"{line[: LONGEST_LINE * 2 // 3]} ... ({cut} characters left out) ... {line[-LONGEST_LINE // 3 :]}"
    return line


def user_error(err: BaseException) -> LightningRectError | None:
    """The user-fixable problem behind ``err`` as a ``LightningRectError``, or None for a bug."""
    from lightning_rect.app.config_files import RefusedImport

    chain = list(_chain(err))
    found = next((cause for cause in chain if isinstance(cause, LightningRectError)), None)
    if found is None and (refused := next((c for c in chain if isinstance(c, RefusedImport)), None)) is not None:
        found = ConfigError(str(refused))
    if found is None and any(isinstance(cause, argparse.ArgumentError) for cause in chain):
        found = ConfigError(parser_message(err, [], []))
    too_long = next((c for c in chain if isinstance(c, OSError) and c.errno == errno.ENAMETOOLONG), None)
    if found is None and too_long is not None:
        found = ConfigError(long_name_message(str(too_long.filename or "a path")))
    unwritable = next((c for c in chain if isinstance(c, OSError) and c.errno in CAUSES), None)
    if found is None and unwritable is not None:  # a folder the run cannot make (read-only, full, no permission)
        found = storage_error(
            unwritable.filename or "a file",
            unwritable,
            "point trainer.logger.init_args.save_dir (and trainer.default_root_dir) at a folder on another disk",
        )
    return found


def long_name_message(path: str) -> str:
    """A path with a part longer than file systems allow (255 bytes): which part, and the fix."""
    parts = [part for part in Path(path).parts if len(part.encode()) > MAX_NAME_BYTES]
    part = parts[0] if parts else Path(path).name
    return (
        f"cannot make {path}: its part {part!r} is {len(part.encode())} bytes, more than the {MAX_NAME_BYTES} a "
        "file or folder name may be; shorten it (the run's name: trainer.logger.init_args.name)"
    )


def _chain(err: BaseException | None) -> Iterator[BaseException]:
    """``err`` and its causes and contexts (jsonargparse wraps errors raised while instantiating)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _first_line(err: BaseException) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), "")


# -- argument parser errors ----------------------------------------------------------------------
def parser_message(err: BaseException, options: Sequence[str], args: Sequence[str]) -> str:
    """The one relevant line of a jsonargparse error. Its causes run from the outermost key to the leaf
    (what is wrong); ``Parser key "k"`` and ``Problem with given class_path 'c'`` on the way give the
    key. ``options``: the parser's option names (for close matches); ``args``: the command line."""
    chain = list(_chain(err))
    leaf, class_path = _first_line(chain[-1]), None
    keys: list[str] = []
    for cause in chain:
        if match := re.match(r'Parser key "([^"]+)"', _first_line(cause)):
            keys += [match.group(1)] if keys[-1:] != [match.group(1)] else []
        elif match := re.match(r"Problem with given class_path '([^']+)'", _first_line(cause)):
            class_path, keys = match.group(1), keys + ["init_args"]
    key = ".".join(keys)
    configs = [value for name, value in _options(args) if name == "config"]

    if yaml_error := next(
        (c for c in chain if type(c).__module__.startswith("yaml") and hasattr(c, "problem_mark")), None
    ):
        return _yaml_message(yaml_error, configs)
    if match := re.search(r"Option '([^']+)' is not accepted before subcommand '([^']+)'", leaf):
        name, subcommand = match.groups()
        return (
            f"{name} comes from a --config given before the subcommand {subcommand!r}, which takes it: "
            f"give that --config after `{subcommand}`"
        )
    if match := re.search(r"Option '([^']+)' is not accepted|does not accept option '([^']+)'", leaf):
        name = match.group(1) or match.group(2)
        valid = init_parameters(class_path) if class_path else list(options)
        owner = f"{class_path.rpartition('.')[2]} has no argument {name!r}" if class_path else "no such option"
        return f"{_source(name, args, configs)}{f'{key}.{name}' if key else name}: {owner}{_suggestion(name, valid)}"
    if match := re.search(r"unrecognized arguments: (\S+)", leaf):
        given = match.group(1)
        name = given.split("=")[0].lstrip("-")
        subcommand = next((a for a in args if a in SUBCOMMANDS), None)
        if subcommand is not None and given in args[: list(args).index(subcommand)]:
            return (
                f"--{name} is given before the subcommand {subcommand!r}, which takes it: put it after `{subcommand}`"
            )
        hint = _suggestion(name, options).replace("did you mean ", "did you mean --")
        listing = f"`{subcommand} --help`" if subcommand else "`--help`"
        return f"--{name}: no such option{hint} ({listing} lists them)"
    if match := re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", leaf):
        given, choices = match.group(1), re.findall(r"'([^']*)'", match.group(2))
        what = "subcommand" if "subcommand" in leaf else (key or "value")
        return f"unknown {what} {given!r}{close_match(given, choices)} (choose from {', '.join(choices)})"
    if match := re.match(r"Expected a (.+?)(?:\. Got value: (.*))?$", leaf):
        hint, value = match.group(1), match.group(2)
        if value is None:
            value = next((m.group(1) for c in chain if (m := re.search(r"Given value: (.*)", str(c)))), "?")
        if "dot import path" in hint:
            return (
                f"{key}: {value!r} is not a class this package knows{close_match(value, _class_names())}; "
                "pass a class name such as SparseMLP or DigitsDataModule, or a full import path"
            )
        choices = re.findall(r"'([^']*)'", hint) if "Literal" in hint else []
        wanted = "one of " + ", ".join(choices) if choices else re.sub(r"<class '([^']+)'>", r"\1", hint)
        wanted = TYPE_NAMES.get(wanted, wanted)
        return f"{key or 'value'}: expected {wanted}, got {value}{close_match(value, choices)}"
    if key == "config" or leaf.startswith("File does not exist"):
        return (
            f"--config: {leaf[0].lower() + leaf[1:]}; pass a YAML file, or the name of a bundled config such as "
            "configs/digits.yaml (`lightning-rect configs .` writes them out)"
        )
    return f"{key}: {leaf}" if key and leaf else one_line(chain[0])


def _options(args: Sequence[str]) -> Iterator[tuple[str, str]]:
    """``(key, value)`` of every ``--key=value`` and ``--key value`` on the command line."""
    for i, arg in enumerate(args):
        key, eq, value = arg[2:].partition("=")
        if arg.startswith("--") and (eq or (i + 1 < len(args) and not args[i + 1].startswith("--"))):
            yield key, value if eq else args[i + 1]


def _suggestion(name: str, valid: Sequence[str]) -> str:
    """'; did you mean X?' (also for the last part of a dotted key), or the valid names when few."""
    if found := close_match(name, valid):
        return found
    tails = {v.rpartition(".")[2]: v for v in valid if v.rpartition(".")[0] == name.rpartition(".")[0]}
    if tail := difflib.get_close_matches(name.rpartition(".")[2], list(tails), n=1, cutoff=0.75):
        return f"; did you mean {tails[tail[0]]}?"
    return f"; valid: {', '.join(valid)}" if valid and len(valid) <= 20 else ""


def _source(name: str, args: Sequence[str], configs: Sequence[str]) -> str:
    """'<file>: ' when ``name`` is set in one of the --config files rather than on the command line."""
    if any(re.search(rf"\.{re.escape(name)}(=|$)", a) for a in args):
        return ""
    for path in configs:
        try:
            if re.search(rf"^\s*{re.escape(name)}\s*:", Path(path).read_text(), re.MULTILINE):
                return f"{path}: "
        except OSError:
            continue
    return ""


def _yaml_message(err, configs: Sequence[str]) -> str:
    """'<file>: YAML syntax error at line L, column C: ...' for the --config file that does not parse."""
    import yaml

    where = "a command-line value (YAML): "
    for path in configs:
        try:
            yaml.safe_load(Path(path).read_text())
        except yaml.MarkedYAMLError as found:
            err, where = found, f"{path}: "
            break
        except (OSError, yaml.YAMLError):
            continue
    mark, context_mark = err.problem_mark, err.context_mark
    opened = f" ({err.context} from line {context_mark.line + 1})" if err.context and context_mark else ""
    return (
        f"{where}YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {err.problem}{opened}; "
        "fix the brackets, quotes or indentation there"
    )


def _class_names() -> list[str]:
    import lightning_rect.data
    import lightning_rect.models

    return [
        name for module in (lightning_rect.models, lightning_rect.data) for name in dir(module) if name[:1].isupper()
    ]


def close_match(name: str, valid: Sequence[str]) -> str:
    """ "; did you mean X?" for the closest of ``valid``, or ""."""
    found = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f"; did you mean {found[0]}?" if found else ""


def init_parameters(class_path: str) -> list[str]:
    """The ``__init__`` parameters of the class at ``class_path`` (what its ``init_args`` may hold)."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        return [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    except (ImportError, AttributeError, ValueError, TypeError):
        return []
