"""What a ``--config`` may be, and what a config may make the CLI import.

- ``check_config_files(args)``: every ``--config`` of the command line, before jsonargparse reads it. A
  remote one (``http://``, ``s3://``, any ``://``) is refused unless ``LIGHTNING_RECT_ALLOW_REMOTE_CONFIG=1``
  is set, and then only over ``https``; a local one must be a text file of at most ``MAX_CONFIG_BYTES``
  (a checkpoint or another binary file is named as such) whose YAML expands to at most ``MAX_YAML_NODES``
  nodes (an alias bomb of 1 KB would otherwise grow to gigabytes while jsonargparse walks it).
- ``cap_yaml_loading()``: the same caps for every YAML jsonargparse reads (a class given as a file, a
  command-line value), through the loader class it uses.
- ``ImportGuard``: while the CLI runs, a module of the current folder is imported only when named by
  ``--import`` on the command line (or when that folder is on ``PYTHONPATH``, the user's own setting): a
  ``class_path`` (in a config, from wherever it came, or on the command line) cannot make the CLI run
  ``./evil.py`` before its type is checked.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from lightning_rect.errors import ConfigError

#: The largest config file (or YAML value) read: configs are a few KB.
MAX_CONFIG_BYTES = 1_000_000
#: The most YAML nodes a config may expand to, each alias counted as the whole node it repeats.
MAX_YAML_NODES = 100_000
#: Set to 1 to let ``--config`` name an ``https://`` URL (never plain http, never other protocols).
REMOTE_OPT_IN = "LIGHTNING_RECT_ALLOW_REMOTE_CONFIG"


class ConfigTooBig(ConfigError):
    """A config (or a YAML value) over the size or alias-expansion cap."""


def remote_configs_allowed() -> bool:
    return os.environ.get(REMOTE_OPT_IN, "") == "1"


def config_values(args: Sequence[str]) -> Iterator[str]:
    """The values of ``--config X``, ``--config=X`` and ``-c X`` on a command line."""
    args = [str(a) for a in args]
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            yield args[i + 1]
        elif arg.startswith("--config="):
            yield arg.removeprefix("--config=")


def check_config_files(args: Sequence[str]) -> None:
    """Refuse, in one line, a ``--config`` that is remote (without the opt-in), too big, binary or an alias bomb."""
    for value in config_values(args):
        if "://" in value:
            check_remote(value)
            continue
        path = Path(value)
        if not path.is_file():
            continue  # missing: the parser's own line names it
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigTooBig(
                f"--config {value} is {size / 1e6:.1f} MB, more than the {MAX_CONFIG_BYTES // 1000} KB "
                "a config may be; pass a YAML config of a few KB (a data set or a checkpoint is "
                "given by its path: data.init_args.data_dir, --ckpt_path)"
            )
        data = path.read_bytes()
        if data[:4] == b"PK\x03\x04" or b"\x00" in data:
            if data[:4] == b"PK\x03\x04":
                raise ConfigError(
                    f"--config {value} is a zip archive such as a PyTorch checkpoint, not a YAML config; "
                    f"pass a .yaml file (a checkpoint goes in --ckpt_path {value})"
                )
            raise ConfigError(f"--config {value} is a binary file, not a YAML config; pass a .yaml text file")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"--config {value} is not a UTF-8 text file (byte {err.start} is 0x{data[err.start]:02x}); "
                "pass a YAML config saved as UTF-8"
            ) from None
        check_yaml(text, f"--config {value}")


def check_remote(value: str) -> None:
    scheme = value.partition("://")[0].lower()
    if not remote_configs_allowed():
        raise ConfigError(
            f"--config {value}: a config from a URL is not read (it could import and run code); "
            f"download it, read it, then pass the local file; or set {REMOTE_OPT_IN}=1 to allow "
            "https:// configs"
        )
    if scheme != "https":
        raise ConfigError(
            f"--config {value}: only https:// configs are read (with {REMOTE_OPT_IN}=1), never "
            f"{scheme}://; download it and pass the local file"
        )


def check_yaml(text: str, what: str) -> None:
    """Parse ``text`` once with the caps (a syntax error is left to the parser's own line)."""
    import yaml

    try:
        yaml.load(text, Loader=capped_loader(what))
    except ConfigTooBig:
        raise
    except (yaml.YAMLError, RecursionError, ValueError):
        pass


def expanded_size(root, limit: int) -> int:
    """Nodes of the YAML node graph ``root`` with every alias expanded; stops counting past ``limit``
    (iterative, memoized: a bomb is measured in the time its few distinct nodes take)."""
    import yaml

    sizes: dict[int, int] = {}
    stack: list[tuple[object, bool]] = [(root, False)]
    on_path: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            children = _children(node, yaml)
            sizes[key] = min(limit + 1, 1 + sum(sizes[id(c)] for c in children))
            continue
        if key in sizes:
            continue
        if key in on_path:  # an alias to an enclosing node: infinite once expanded
            return limit + 1
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node, yaml) if id(child) not in sizes)
    return sizes[id(root)]


def _children(node, yaml) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


_LOADERS: dict[tuple[type, str], type] = {}


def capped_loader(what: str = "a YAML value", base: type | None = None) -> type:
    """A YAML loader class (``base``: jsonargparse's, else PyYAML's safe one) with the size and expansion caps."""
    import yaml

    base = base or getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    if (base, what) in _LOADERS:
        return _LOADERS[(base, what)]

    class CappedLoader(base):  # type: ignore[misc, valid-type]
        def __init__(self, stream) -> None:
            size = len(stream) if isinstance(stream, (str, bytes)) else 0
            if size > MAX_CONFIG_BYTES:
                raise ConfigTooBig(
                    f"{what} is {size / 1e6:.1f} MB of YAML, more than the {MAX_CONFIG_BYTES // 1000} KB "
                    "a config may be; pass a config of a few KB"
                )
            super().__init__(stream)

        def get_single_data(self):
            node = self.get_single_node()
            if node is None:
                return None
            if expanded_size(node, MAX_YAML_NODES) > MAX_YAML_NODES:
                raise ConfigTooBig(
                    f"{what}: its YAML aliases (*name) expand to more than {MAX_YAML_NODES} values "
                    "(an alias bomb, or an alias inside itself), so it was not read; write the values "
                    "out, or use fewer aliases"
                )
            return self.construct_document(node)

    _LOADERS[(base, what)] = CappedLoader
    return CappedLoader


def cap_yaml_loading() -> None:
    """Every YAML that jsonargparse loads goes through ``capped_loader`` (its loader class is replaced once)."""
    try:
        from jsonargparse import _loaders_dumpers as loaders
    except ImportError:  # pragma: no cover - another jsonargparse layout: the --config checks still apply
        return
    default = loaders.get_yaml_default_loader()
    if getattr(default, "_lightning_rect_capped", False):
        return
    capped = capped_loader("a config or command-line value (YAML)", base=default)
    capped._lightning_rect_capped = True  # type: ignore[attr-defined]  # a marker of our own on the class
    loaders.yaml_default_loader = capped  # type: ignore[assignment]  # jsonargparse's is set to None, unannotated


def set_remote_reading() -> None:
    """jsonargparse reads ``://`` configs (Lightning turns fsspec reading on) only with the opt-in."""
    try:
        from jsonargparse import set_parsing_settings

        set_parsing_settings(
            config_read_mode_fsspec_enabled=remote_configs_allowed(), config_read_mode_urls_enabled=False
        )
    except (ImportError, TypeError, ValueError):  # pragma: no cover - older jsonargparse
        pass


# -- imports a config may cause ---------------------------------------------------------------------
class RefusedImport(ImportError):
    """A module of the current folder that a config or option named, without ``--import``."""


class ImportGuard(importlib.abc.MetaPathFinder):
    """On ``sys.meta_path`` while the CLI runs: a top-level module that would be imported from the current
    folder (``python -m`` puts it first on the path) is refused unless ``allow``-ed (``--import``)."""

    def __init__(self) -> None:
        self.allowed: set[str] = set()
        self.refused: list[RefusedImport] = []
        self.suspended = 0
        self.start = Path.cwd().resolve()  # jsonargparse reads a config from inside the config's folder

    def allow(self, name: str) -> None:
        self.allowed.add(name.partition(".")[0])

    def find_spec(self, fullname: str, path=None, target=None):
        if path is not None or self.suspended or fullname in self.allowed:
            return None  # submodules follow their package; --import'ed modules are the user's choice
        # the working folder, and the folder jsonargparse works in while it reads a config (the config's own)
        folders = {self.start, Path.cwd().resolve()}
        if not any(_resolved(entry) in folders or not Path(entry or ".").is_absolute() for entry in sys.path):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname)
        origin = _location(spec)
        if origin is None or _resolved(origin.parent) not in folders:
            return None
        if _resolved(origin.parent) in {_resolved(e) for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e}:
            return None  # a folder the user put on PYTHONPATH is theirs to import from, as an installed package
        where = "the current folder" if _resolved(origin.parent) == self.start else "the config's folder"
        refused = RefusedImport(
            f"{fullname} ({origin}) is a module of {where}, and a config or option names it (class_path "
            f"{fullname}.*); it was not imported: code of the working folder runs only when named on the command "
            f"line with --import {fullname}",
            name=fullname,
        )
        self.refused.append(refused)
        raise refused

    @contextmanager
    def suspend(self) -> Iterator[None]:
        self.suspended += 1
        try:
            yield
        finally:
            self.suspended -= 1

    @contextmanager
    def installed(self) -> Iterator[ImportGuard]:
        sys.meta_path.insert(0, self)
        try:
            yield self
        finally:
            if self in sys.meta_path:
                sys.meta_path.remove(self)

    def refusal_in(self, text: str) -> ConfigError | None:
        """The refusal of a module that ``text`` (a parser error, a parsed config) names as ``module.*``; a
        refused import that nothing names was a library's probe, which took the ImportError in its stride."""
        found = next((r for r in self.refused if f"{r.name}." in text), None)
        return ConfigError(str(found)) if found is not None else None


def _resolved(entry) -> Path | None:
    try:
        return Path(entry or ".").resolve()
    except (OSError, RuntimeError, TypeError):
        return None


def _location(spec) -> Path | None:
    """The file or folder a spec imports: ``x.py``, the package folder ``x/``, or a namespace folder."""
    if spec is None:
        return None
    if spec.origin and spec.origin not in ("built-in", "frozen", "namespace"):
        origin = Path(spec.origin)
        return origin.parent if spec.submodule_search_locations and origin.name.startswith("__init__.") else origin
    locations = list(spec.submodule_search_locations or [])
    return Path(locations[0]) if locations else None
