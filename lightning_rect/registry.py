"""One small generic registry for the named building blocks (activations, reconstructions, noise).

Usage::

    ACTIVATIONS = Registry("activation", entry_point_group="lightning_rect.activations")

    @ACTIVATIONS.register("rectifier")
    class Rectifier(nn.Module): ...

    ACTIVATIONS.names()                     # ['rectifier', ...]
    ACTIVATIONS.build("sharp_softplus", a=3)

Third-party packages add entries without editing this package by declaring an entry point in
their own ``pyproject.toml``::

    [project.entry-points."lightning_rect.activations"]
    swish = "my_pkg.acts:Swish"

Entry points are loaded lazily, the first time a registry is asked for its names or an entry.
A plugin that fails to load (its module does not import, the object is missing) is skipped with
one warning naming the entry point and the error: built-ins and the other plugins keep working,
and asking for the broken name raises a ``ConfigError`` that repeats the entry point and the error.

An unknown name is one line: the closest valid name (``did you mean 'rectifier'?``), the valid ones,
and how to add one: register it in your own module and import that module first (the command line
does so with ``--import your_module``), or declare an entry point.

Name clashes are always said in one line, naming both sides (built-in, plugin entry point, or user
code): a plugin entry named like a built-in or like an earlier plugin is not used (a warning); a
name registered in user code takes the place of a plugin's (a warning); a name registered in user
code that a built-in or other user code already holds is a ``ConfigError``. Registering the same
object again, or the same definition again (a notebook cell run twice defines the class anew), is
harmless: the newest definition is kept.
"""

from __future__ import annotations

import difflib
import inspect
import sys
import warnings
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from lightning_rect.errors import ConfigError

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Named entries (classes or factories) of one kind, built by name from configs.

    Entries come from this package (built-ins), from installed plugins (the entry point group
    ``entry_point_group``) and from user code (``@REGISTRY.register("name")``); a clash between
    them is one line naming both sides, and an unknown name lists the valid ones.

    Args:
        kind: what the entries are, in messages ("activation").
        entry_point_group: the entry point group plugins declare entries under; None: no plugins.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T] = {}
        #: name -> who registered it, for clash messages: "built-in", "plugin" or "user code"
        self._origins: dict[str, str] = {}
        #: name -> the entry point a plugin's entry came from
        self._plugins: dict[str, EntryPoint] = {}
        #: plugins whose entry point failed to load: name -> "why", for the error when it is asked for
        self._broken: dict[str, str] = {}
        self._entry_points_loaded = entry_point_group is None

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers a class or factory under ``name`` (clashes: see the module docstring)."""

        def decorator(obj: T) -> T:
            self._add(name, obj, "built-in" if _qualname(obj).startswith("lightning_rect.") else "user code")
            return obj

        return decorator

    def _describe(self, name: str) -> str:
        """Who holds ``name``: 'the built-in lightning_rect.activations.Rectifier', 'the plugin entry point ...'."""
        if self._origins[name] == "plugin":
            return f"the plugin entry point {_entry_point(self.entry_point_group, self._plugins[name])}"
        return f"the {self._origins[name]} {_qualname(self._entries[name])}"

    def _add(self, name: str, obj: T, origin: str, plugin: EntryPoint | None = None) -> None:
        held = self._entries.get(name)
        if held is not None and _same_definition(held, obj):  # a cell run twice, a module reloaded
            self._entries[name] = obj
            return
        if held is not None and origin == "plugin":
            warnings.warn(
                f"{self.kind} plugin {_entry_point(self.entry_point_group, plugin)} is not used: {name!r} "
                f"is already {self._describe(name)}; rename the entry point",
                RuntimeWarning,
                stacklevel=4,
            )
            return
        if held is not None and self._origins[name] != "plugin":
            raise ConfigError(
                f"{self.kind} {name!r} is already registered by {self._describe(name)}; "
                f"register {_qualname(obj)} under another name"
            )
        if held is not None:  # user code over a plugin's entry: the user's code is what they asked for
            warnings.warn(
                f"{self.kind} {name!r} registered by user code ({_qualname(obj)}) takes the place of "
                f"{self._describe(name)}",
                RuntimeWarning,
                stacklevel=3,
            )
        self._entries[name], self._origins[name] = obj, origin
        if plugin is not None:
            self._plugins[name] = plugin

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or self.entry_point_group is None:  # no group: loaded from the start
            return
        self._entry_points_loaded = True  # set first: a failing plugin must not be retried forever
        for ep in entry_points(group=self.entry_point_group):
            if ep.name in self._broken:
                continue
            if (
                ep.name in self._entries
                and self._origins[ep.name] != "plugin"
                and ep.value.replace(":", ".") != _qualname(self._entries[ep.name])
            ):
                # Said without importing the plugin: the entry in place wins anyway.
                if self._origins[ep.name] == "built-in":
                    warnings.warn(
                        f"{self.kind} plugin {_entry_point(self.entry_point_group, ep)} is not used: "
                        f"{ep.name!r} is {self._describe(ep.name)}; rename the entry point",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                else:
                    user = _qualname(self._entries[ep.name])
                    warnings.warn(
                        f"{self.kind} {ep.name!r} registered by user code ({user}) takes the place of the "
                        f"plugin entry point {_entry_point(self.entry_point_group, ep)}",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                continue
            try:
                obj = ep.load()
            except Exception as err:  # any error importing a third-party module: skip that plugin only
                why = _broken_plugin(self.entry_point_group, ep, err)
                self._broken[ep.name] = why
                warnings.warn(f"skipping {self.kind} plugin: {why}", RuntimeWarning, stacklevel=3)
                continue
            self._add(ep.name, obj, "plugin", ep)

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def get(self, name: str) -> T:
        self._load_entry_points()
        try:
            return self._entries[name]
        except KeyError:
            if name in self._broken:
                raise ConfigError(
                    f"{self.kind} {name!r} is a plugin that failed to load: {self._broken[name]}"
                ) from None
            raise ConfigError(self._unknown(name)) from None

    def _unknown(self, name: str) -> str:
        """One line: the unknown name, the closest valid one, the valid ones, and how to add one."""
        names = self.names()
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        owner = _public_name(self) or "registry"
        plugin = (
            f", or declare an entry point (group {self.entry_point_group}) in an installed package"
            if self.entry_point_group
            else ""
        )
        return (
            f"unknown {self.kind} {name!r}{guess}; valid {self.kind} names: {', '.join(names)}; to add one, "
            f"register it in your own module with @{owner}.register({name!r}) and import that module first "
            f"(on the command line: --import your_module){plugin}"
        )

    def build(self, name: str, **kwargs: Any) -> Any:
        """Instantiate the entry ``name`` with keyword arguments; bad arguments name the entry."""
        factory = self.get(name)
        allowed = _keyword_names(factory)
        unknown = sorted(set(kwargs) - set(allowed)) if allowed is not None else []
        if unknown and allowed is not None:  # (unknown is empty without allowed names)
            raise ConfigError(
                f"{self.kind} {name!r} does not accept argument{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(unknown)}; it accepts: {', '.join(allowed) or 'no arguments'}"
            )
        try:
            return factory(**kwargs)
        except TypeError as err:
            why = " ".join(str(err).split())  # one line
            raise ConfigError(f"{self.kind} {name!r} does not accept arguments {kwargs}: {why}") from None


def _keyword_names(factory: Any) -> list[str] | None:
    """The keyword arguments ``factory`` takes, in order; None when unknown (``**kwargs``, no signature)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _broken_plugin(group: str | None, ep: EntryPoint, err: Exception) -> str:
    """``entry point `name = value` (group ...) failed to load: ImportError: ...``"""
    return f"entry point `{ep.name} = {ep.value}` (group {group}) failed to load: {type(err).__name__}: {err}"


def _entry_point(group: str | None, ep: EntryPoint | None) -> str:
    return f"`{ep.name} = {ep.value}` (group {group})" if ep is not None else "(unknown)"


def _public_name(registry: Registry) -> str | None:
    """``ACTIVATIONS`` for the registry ``lightning_rect`` exports under that name (for the how-to-add hint)."""
    package = sys.modules.get("lightning_rect")
    return next((name for name in dir(package) if getattr(package, name) is registry), None) if package else None


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _same_definition(a: Any, b: Any) -> bool:
    """The same object, or the same definition made again (same module and qualified name)."""
    return a is b or (hasattr(a, "__qualname__") and hasattr(b, "__qualname__") and _qualname(a) == _qualname(b))
