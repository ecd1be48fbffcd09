"""What the CLI prints when it stops: one line naming the field or file and the fix, exit code 2.

``user_error`` maps an exception to a ``LightningRectError`` when it is a problem the user can fix:
our own errors (bad value, unknown registry name, damaged data file, bad checkpoint, a full or
read-only disk), also when jsonargparse wrapped them while instantiating; an argument parser error;
a folder that cannot be made. Anything else is a bug and keeps its traceback. Parser errors are
worded by ``parser_message``, which ``RectCLI.parse_arguments`` calls with the parser's options in
hand: the relevant line first (file, key, the valid choices, a close match for a misspelled key),
without the usage, which ``--help`` prints. ``Stopped`` is a run stopped from outside (SIGTERM, Ctrl-C).
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import re
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

from lightning_rect.errors import ConfigError, LightningRectError, StorageError
from lightning_rect.files import CAUSES, storage_error

SUBCOMMANDS = ("fit", "validate", "test", "predict")


class Stopped(LightningRectError):
    """The run was stopped by a signal; ``exit_code`` is the shell's 128 + the signal's number."""

    def __init__(self, message: str, signum: int = signal.SIGTERM) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


def one_line(message: object) -> str:
    """``message`` on one line: its lines joined with "; "."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def user_error(err: BaseException) -> LightningRectError | None:
    """The user-fixable problem behind ``err`` as a ``LightningRectError``, or None for a bug."""
    chain = list(_chain(err))
    found = next((cause for cause in chain if isinstance(cause, LightningRectError)), None)
    if found is None and any(isinstance(cause, argparse.ArgumentError) for cause in chain):
        found = ConfigError(parser_message(err, [], []))
    return found or _unwritable(chain)


def _chain(err: BaseException | None) -> Iterator[BaseException]:
    """``err`` and its causes and contexts (jsonargparse wraps errors raised while instantiating)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _unwritable(chain: list[BaseException]) -> StorageError | None:
    """A folder the run cannot make or enter (read-only, full, no permission)."""
    cause = next((c for c in chain if isinstance(c, OSError) and c.errno in CAUSES), None)
    return storage_error(cause.filename or "a file", cause, "point trainer.logger.init_args.save_dir (and "
                         "trainer.default_root_dir) at a folder on another disk") if cause is not None else None


def _options(args: Sequence[str]) -> Iterator[tuple[str, str]]:
    """``(key, value)`` of every ``--key=value`` and ``--key value`` in ``args``."""
    args = list(args)
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        key, eq, value = arg[2:].partition("=")
        if eq:
            yield key, value
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            yield key, args[i + 1]


# -- argument parser errors ----------------------------------------------------------------------
def parser_message(err: BaseException, options: Sequence[str], args: Sequence[str]) -> str:
    """The one relevant line of a jsonargparse error, from its chain of causes: outermost first, the
    leaf (what is wrong) last; ``Parser key "k"`` and ``Problem with given class_path 'c'`` on the way
    give the key. ``options``: the parser's option names (for close matches); ``args``: the command line."""
    chain = list(_chain(err))
    leaf = next((line for line in str(chain[-1]).splitlines() if line.strip()), "").strip()
    keys, class_path = [], None
    for cause in chain:
        first = str(cause).lstrip().splitlines()[0] if str(cause).strip() else ""
        if match := re.match(r'Parser key "([^"]+)"', first):
            if not keys or keys[-1] != match.group(1):
                keys.append(match.group(1))
        elif match := re.match(r"Problem with given class_path '([^']+)'", first):
            class_path = match.group(1)
            keys.append("init_args")
    key = ".".join(keys)

    yaml_error = next((cause for cause in chain if _is_yaml_error(cause)), None)
    if yaml_error is not None:
        return _yaml_message(yaml_error, _config_files(args))
    if match := re.search(r"Option '([^']+)' is not accepted|does not accept option '([^']+)'", leaf):
        name = match.group(1) or match.group(2)
        full = f"{key}.{name}" if key else name
        valid = init_parameters(class_path) if class_path else list(options)
        owner = f"{class_path.rpartition('.')[2]} has no argument {name!r}" if class_path else "no such option"
        return f"{_source(name, args)}{full}: {owner}{_suggestion(name, valid)}"
    if match := re.search(r"unrecognized arguments: (\S+)", leaf):
        name = match.group(1).split("=")[0].lstrip("-")
        valid = list(options)
        hint = _suggestion(name, valid).replace("did you mean ", "did you mean --")
        return f"--{name}: no such option{hint} (`{_subcommand(args) or ''} --help` lists them)"
    if match := re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", leaf):
        choices = re.findall(r"'([^']*)'", match.group(2))
        what = "subcommand" if "subcommand" in leaf else (key or "value")
        given = match.group(1)
        return f"unknown {what} {given!r}{close_match(given, choices)} (choose from {', '.join(choices)})"
    if match := re.match(r"Expected a (.+?)(?:\. Got value: (.*))?$", leaf):
        wanted, value = _type_name(match.group(1)), match.group(2)
        if value is None:
            value = next((m.group(1) for c in chain for m in [re.search(r"Given value: (.*)", str(c))] if m), "?")
        choices = re.findall(r"'([^']*)'", match.group(1)) if "Literal" in match.group(1) else []
        if "dot import path" in match.group(1):
            return (f"{key}: {value!r} is not a class this package knows{close_match(value, _class_names())}; "
                    "pass a class name such as SparseMLP or DigitsDataModule, or a full import path")
        return f"{key or 'value'}: expected {wanted}, got {value}{close_match(value, choices)}"
    if key == "config" or leaf.startswith("File does not exist"):
        return (f"--config: {leaf[0].lower() + leaf[1:]}; pass a YAML file, or the name of a bundled config such as "
                "configs/digits.yaml (`lightning-rect configs .` writes them out)")
    return f"{key}: {leaf}" if key and leaf else one_line(chain[0])


def _subcommand(args: Sequence[str]) -> str | None:
    return next((a for a in args if a in SUBCOMMANDS), None)


def _suggestion(name: str, valid: Sequence[str]) -> str:
    """'; did you mean X?', or the valid names when none is close (a short list only)."""
    found = close_match(name, valid)
    if found or not valid:
        return found
    # compare the last parts too: trainer.max_epohs against trainer.max_epochs
    tails = {v.rpartition(".")[2]: v for v in valid}
    tail = difflib.get_close_matches(name.rpartition(".")[2], list(tails), n=1, cutoff=0.75)
    if tail and tails[tail[0]].rpartition(".")[0] == name.rpartition(".")[0]:
        return f"; did you mean {tails[tail[0]]}?"
    return f"; valid: {', '.join(valid)}" if len(valid) <= 20 else ""


def _source(name: str, args: Sequence[str]) -> str:
    """'<file>: ' when ``name`` is not on the command line but in one of its --config files."""
    if any(re.search(rf"\.{re.escape(name)}(=|$)", a) for a in args):
        return ""
    for path in _config_files(args):
        try:
            if re.search(rf"^\s*{re.escape(name)}\s*:", Path(path).read_text(), re.MULTILINE):
                return f"{path}: "
        except OSError:
            continue
    return ""


def _config_files(args: Sequence[str]) -> list[str]:
    return [value for key, value in _options(args) if key == "config"]


def _is_yaml_error(err: BaseException) -> bool:
    return type(err).__module__.startswith("yaml") and hasattr(err, "problem_mark")


def _yaml_message(err: BaseException, files: Sequence[str]) -> str:
    """'<file>: YAML syntax error at line L, column C: ...' for the --config file that does not parse."""
    import yaml

    for path in files:
        try:
            yaml.safe_load(Path(path).read_text())
        except yaml.MarkedYAMLError as found:
            err, where = found, f"{path}: "
            break
        except (OSError, yaml.YAMLError):
            continue
    else:
        where = "a command-line value (YAML): "
    mark, context, context_mark = err.problem_mark, err.context, err.context_mark
    opened = f" ({context} from line {context_mark.line + 1})" if context and context_mark is not None else ""
    return (f"{where}YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {err.problem}{opened}; "
            "fix the brackets, quotes or indentation there")


def _type_name(hint: str) -> str:
    names = {"<class 'int'>": "an integer", "<class 'float'>": "a number", "<class 'bool'>": "true or false",
             "<class 'str'>": "a string", "<class 'NoneType'>": "null"}
    if hint in names:
        return names[hint]
    if "Literal" in hint:
        return "one of " + ", ".join(re.findall(r"'([^']*)'", hint))
    return re.sub(r"<class '([^']+)'>", r"\1", hint)


def _class_names() -> list[str]:
    import lightning_rect.data
    import lightning_rect.models

    modules = (lightning_rect.models, lightning_rect.data)
    return [name for module in modules for name in dir(module) if name[:1].isupper()]


def close_match(name: str, valid: Sequence[str]) -> str:
    """ "; did you mean X?" for the closest of ``valid``, or ""."""
    found = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f"; did you mean {found[0]}?" if found else ""


def init_parameters(class_path: str) -> list[str]:
    """The ``__init__`` parameters of the class at ``class_path`` (what its ``init_args`` may hold)."""
    import importlib

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        return [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    except (ImportError, AttributeError, ValueError, TypeError):
        return []
