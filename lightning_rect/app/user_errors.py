"""What the CLI prints when it stops: one line naming the field or file and the fix, exit code 2.

``user_error`` maps an exception to a ``LightningRectError`` when it is a problem the user can fix:

- our own errors (bad value, unknown registry name, damaged data file, bad checkpoint), also when
  jsonargparse wrapped them while instantiating;
- argument parser errors (jsonargparse raises them instead of exiting, see ``parser_kwargs``):
  the relevant line first (file, key, the valid choices, a close match for a misspelled key),
  without the usage, which ``--help`` prints;
- ``--ckpt_path`` to a missing file, a folder or a file that is not a checkpoint (checked before
  anything is built, ``check_command_line``, or recognised when Lightning fails to read it),
  without torch's advice to load an unknown file unsafely;
- a folder that cannot be written (read-only, no space left, no permission).

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import inspect
import pickle
import re
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from lightning_rect.checkpoint import check_checkpoint_file
from lightning_rect.errors import CheckpointError, ConfigError, LightningRectError, StorageError
from lightning_rect.app.resume import SPECIAL_CKPT_PATHS

#: ``--ckpt_path`` values that name no file: Lightning's, ours (``last``: the newest unfinished run), none.
NOT_A_FILE = {*SPECIAL_CKPT_PATHS, "null", "None", ""}
_SUBCOMMANDS = ("fit", "validate", "test", "predict")
_UNWRITABLE = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
               errno.EROFS: "the file system is read-only", errno.ENOSPC: "no space left on the device",
               errno.EDQUOT: "the disk quota is exhausted"}


def parser_kwargs(description: str) -> dict:
    """``LightningCLI(parser_kwargs=...)``: parser errors raise (``user_error`` words them) instead of
    printing the whole usage and exiting."""
    return {"description": description, "exit_on_error": False,
            **{name: {"exit_on_error": False} for name in _SUBCOMMANDS}}


def one_line(message: object) -> str:
    """``message`` on one line: its lines joined with "; "."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


# -- before anything is built -------------------------------------------------------------------
def check_command_line(args: Sequence[str]) -> None:
    """Refuse a ``--ckpt_path`` or ``pretrained`` on the command line that is missing or a folder, before
    the run folder is made (Lightning looks at ``ckpt_path`` only once training is set up)."""
    for key, value in _options(args):
        if key == "ckpt_path" or key.endswith(".ckpt_path"):
            if value not in NOT_A_FILE and "://" not in value:
                check_checkpoint_file("--ckpt_path", value)
        elif key.startswith("model.") and key.endswith(".pretrained") and value not in ("", "null", "None"):
            check_checkpoint_file(f"--{key}", value, example="the best-epoch=<N>.ckpt of a *_pretrain.yaml run "
                                                             "(its results.json names it)")


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


# -- after a failure ----------------------------------------------------------------------------
def user_error(err: BaseException) -> LightningRectError | None:
    """The user-fixable problem behind ``err`` as a ``LightningRectError``, or None for a bug."""
    for cause in _chain(err):
        if isinstance(cause, LightningRectError):
            return cause
    for translate in (_parser_error, _checkpoint_read_error, _unwritable):
        found = translate(err)
        if found is not None:
            return found
    return None


def _chain(err: BaseException | None) -> Iterator[BaseException]:
    """``err`` and its causes and contexts (jsonargparse wraps errors raised while instantiating)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


# ---- unreadable checkpoints
def _frames(err: BaseException) -> Iterator:
    tb = err.__traceback__
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def _checkpoint_read_error(err: BaseException) -> CheckpointError | None:
    """Lightning failed to read the ``--ckpt_path`` file: say what the file is, not how to load it unsafely."""
    path = None
    for frame in (frame for cause in _chain(err) for frame in _frames(cause)):
        name, filename = frame.f_code.co_name, frame.f_code.co_filename
        if name in ("_parse_ckpt_path", "resume_start", "_restore_modules_and_callbacks") or (
                "checkpoint_connector" in filename and name.startswith(("resume", "restore"))):
            found = frame.f_locals.get("ckpt_path") or frame.f_locals.get("checkpoint_path")
            path = str(found) if found else path
            if path is not None:
                break
    if path is None:
        return None
    if not Path(path).is_file():
        try:
            check_checkpoint_file("--ckpt_path", path)
        except CheckpointError as missing:
            return missing
    what = next((found for cause in _chain(err) if (found := _unreadable_checkpoint(cause, Path(path)))), None)
    if what is None:
        return None
    return CheckpointError(f"--ckpt_path {path!r} {what}; pass a .ckpt file written by a fit of this project "
                           "(runs/<name>/version_<N>/checkpoints/), or --ckpt_path last to resume the newest "
                           "unfinished run")


def _unreadable_checkpoint(err: BaseException, path: Path) -> str | None:
    """What is wrong with a checkpoint file torch could not load, or None if ``err`` is not about that
    (a bug while restoring a loaded checkpoint keeps its traceback)."""
    message = str(err)
    if path.is_file() and path.stat().st_size == 0:
        return "is empty (0 bytes): a write that never finished"
    if isinstance(err, EOFError) or "truncated" in message:
        return "is truncated: a write that never finished, or a partial copy"
    if isinstance(err, zipfile.BadZipFile) or "PytorchStreamReader" in message or "zip archive" in message:
        return "is truncated or corrupt (not a complete zip archive, as torch.save writes them)"
    if isinstance(err, pickle.UnpicklingError):
        return "is not a PyTorch checkpoint (it cannot be unpickled as one)"
    return None


# ---- folders that cannot be written
def _unwritable(err: BaseException) -> StorageError | None:
    """A file or folder the run cannot write (or, for a permission error, access)."""
    for cause in _chain(err):
        if isinstance(cause, OSError) and cause.errno in _UNWRITABLE:
            target = cause.filename or "a file"
            folder = Path(target) if cause.filename and Path(target).is_dir() else Path(target).parent
            save_dir = "trainer.logger.init_args.save_dir (and trainer.default_root_dir)"
            if cause.errno in (errno.ENOSPC, errno.EDQUOT):
                return StorageError(f"cannot write {target}: {_UNWRITABLE[cause.errno]}; free space on the disk of "
                                    f"{folder}, or point {save_dir} at a folder on another disk")
            if cause.errno == errno.EROFS:
                return StorageError(f"cannot write {target}: {_UNWRITABLE[cause.errno]}; point {save_dir} at a "
                                    "folder on a writable disk")
            return StorageError(f"cannot access {target}: {_UNWRITABLE[cause.errno]}; give your user access to "
                                f"{folder}, or (for the run's files) point {save_dir} at a folder you can write")
    return None


# ---- argument parser errors
def _parser_error(err: BaseException) -> ConfigError | None:
    chain = list(_chain(err))
    if not any(isinstance(cause, argparse.ArgumentError) for cause in chain):
        return None
    return ConfigError(parser_message(chain))


def parser_message(chain: list[BaseException]) -> str:
    """The one relevant line of a jsonargparse error, from its chain of causes: outermost first, the
    leaf (what is wrong) last; ``Parser key "k"`` and ``Problem with given class_path 'c'`` on the way
    give the key."""
    parser = _parser_in(chain)
    args = [str(a) for a in getattr(parser, "args", None) or []]
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
        valid = init_parameters(class_path) if class_path else _option_names(parser, args)
        owner = f"{class_path.rpartition('.')[2]} has no argument {name!r}" if class_path else "no such option"
        return f"{_source(name, args)}{full}: {owner}{_suggestion(name, valid)}"
    if match := re.search(r"unrecognized arguments: (\S+)", leaf):
        name = match.group(1).split("=")[0].lstrip("-")
        valid = _option_names(parser, args)
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


def _parser_in(chain: list[BaseException]):
    """The outermost jsonargparse parser on the way to the error (its ``args`` are the command line)."""
    from jsonargparse import ArgumentParser

    for cause in chain:
        for frame in _frames(cause):
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, ArgumentParser):
                return candidate
    return None


def _subcommand(args: Sequence[str]) -> str | None:
    return next((a for a in args if a in _SUBCOMMANDS), None)


def _option_names(parser, args: Sequence[str]) -> list[str]:
    """Every option of the subcommand's parser (``trainer.max_epochs``, ``model``, ...)."""
    subcommands = getattr(parser, "_subcommands_action", None)
    name = _subcommand(args)
    if subcommands is not None and name is not None:
        parser = subcommands._name_parser_map.get(name, parser)
    return [action.dest for action in getattr(parser, "_actions", []) if isinstance(action.dest, str)]


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
