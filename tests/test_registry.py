import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest
from torch import nn

from lightning_rect.activations import ACTIVATIONS
from lightning_rect.errors import ConfigError
from lightning_rect.registry import Registry


def test_register_names_get_and_build():
    reg = Registry("widget")

    @reg.register("b")
    class B:
        def __init__(self, size=1):
            self.size = size

    reg.register("a")(dict)
    assert reg.names() == ["a", "b"]
    assert reg.get("b") is B
    assert reg.build("b", size=3).size == 3
    assert "a" in reg and "zzz" not in reg


def test_duplicate_name_is_an_error():
    reg = Registry("widget")
    reg.register("x")(int)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("x")(float)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        ACTIVATIONS.get("relu6")
    message = str(err.value)
    assert "'relu6'" in message
    for name in ["rectifier", "tanh", "softplus", "sigmoid", "sharp_softplus"]:
        assert name in message


def test_bad_build_arguments_name_the_entry():
    with pytest.raises(ConfigError, match="sharp_softplus"):
        ACTIVATIONS.build("sharp_softplus", beta=2)


def test_unknown_build_arguments_are_listed_with_the_accepted_ones_on_one_line():
    reg = Registry("widget")

    @reg.register("w")
    class W:
        def __init__(self, size=1, *, colour="red"):
            self.size, self.colour = size, colour

    with pytest.raises(ConfigError) as err:
        reg.build("w", size=2, shape="round", weight=3)
    assert str(err.value) == "widget 'w' does not accept arguments shape, weight; it accepts: size, colour"
    reg.register("n")(lambda: None)
    with pytest.raises(ConfigError, match=r"^widget 'n' does not accept argument x; it accepts: no arguments$"):
        reg.build("n", x=1)


def test_entry_point_plugin_is_discovered(tmp_path, monkeypatch):
    """A third-party distribution declares an entry point; the registry finds it without code changes."""
    pkg = tmp_path / "fancy_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent("""
        from torch import nn
        class Cube(nn.Module):
            def forward(self, x):
                return x ** 3
    """)
    )
    dist = tmp_path / "fancy_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fancy-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[lightning_rect.activations]\ncube = fancy_plugin:Cube\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    fresh = Registry("activation", entry_point_group="lightning_rect.activations")
    assert "cube" in fresh.names()
    module = fresh.build("cube")
    assert isinstance(module, nn.Module)
    import torch

    assert module(torch.tensor([2.0])).item() == 8.0
    sys.modules.pop("fancy_plugin", None)


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """Installed plugins without installing anything: ``plugins({name: module source})`` writes each
    module to tmp_path and makes the registry's entry-point discovery return one entry point per
    module (``name = plugin_<name>:Plugin``, group ``lightning_rect.activations``); returns
    ACTIVATIONS with its plugins not yet loaded (built-ins kept; all of it restored afterwards)."""
    import lightning_rect.registry as registry_module

    monkeypatch.syspath_prepend(str(tmp_path))
    found: list[EntryPoint] = []

    def fake_entry_points(group=None):
        return [ep for ep in found if ep.group == group]

    def install(modules: dict[str, str]) -> Registry:
        for name, source in modules.items():
            (tmp_path / f"plugin_{name}.py").write_text(textwrap.dedent(source))
            found.append(EntryPoint(name, f"plugin_{name}:Plugin", "lightning_rect.activations"))
        monkeypatch.setattr(registry_module, "entry_points", fake_entry_points)
        monkeypatch.setattr(ACTIVATIONS, "_entries", dict(ACTIVATIONS._entries))
        monkeypatch.setattr(ACTIVATIONS, "_origins", dict(ACTIVATIONS._origins))
        monkeypatch.setattr(ACTIVATIONS, "_plugins", dict(ACTIVATIONS._plugins))
        monkeypatch.setattr(ACTIVATIONS, "_broken", {}, raising=False)
        monkeypatch.setattr(ACTIVATIONS, "_entry_points_loaded", False)
        return ACTIVATIONS

    yield install
    for ep in found:
        sys.modules.pop(ep.module, None)


GOOD_PLUGIN = """
    import torch
    from torch import nn
    class Plugin(nn.Module):
        def forward(self, x):
            return x ** 3
"""
# Installed, but it needs a package that is not: importing it raises ImportError.
BROKEN_PLUGIN = """
    import lightning_rect_missing_dependency  # noqa: F401
    class Plugin: ...
"""


def test_broken_plugin_is_skipped_with_one_warning_and_the_rest_keeps_working(plugins):
    import torch

    registry = plugins({"broken": BROKEN_PLUGIN, "cube": GOOD_PLUGIN})
    with pytest.warns(RuntimeWarning) as caught:
        names = registry.names()
    [warning] = [w for w in caught if "plugin" in str(w.message)]
    message = str(warning.message)
    assert "broken = plugin_broken:Plugin" in message
    assert "No module named 'lightning_rect_missing_dependency'" in message
    assert "broken" not in names and {"rectifier", "tanh", "cube"} <= set(names)

    # Built-ins and the good plugin beside the broken one still build.
    assert registry.build("rectifier")(torch.tensor([-1.0, 2.0])).tolist() == [0.0, 2.0]
    assert registry.build("cube")(torch.tensor([2.0])).item() == 8.0

    # Asking for the broken name says why it is missing, not "unknown activation".
    with pytest.raises(ConfigError) as err:
        registry.build("broken")
    assert "broken = plugin_broken:Plugin" in str(err.value)
    assert "ImportError" in str(err.value) or "ModuleNotFoundError" in str(err.value)
    assert "No module named 'lightning_rect_missing_dependency'" in str(err.value)
    assert "unknown" not in str(err.value)
    # Unknown names are still reported as unknown.
    with pytest.raises(ConfigError, match="unknown activation 'relu6'"):
        registry.get("relu6")


def test_broken_plugin_warns_once(plugins, recwarn):
    registry = plugins({"broken": BROKEN_PLUGIN})
    registry.names()
    registry.get("rectifier")
    with pytest.raises(ConfigError):
        registry.get("broken")
    assert "broken" not in registry
    assert len([w for w in recwarn if "plugin" in str(w.message)]) == 1


def test_plugin_whose_object_is_missing_is_skipped(plugins):
    """The module imports, but the entry point names an object it does not define."""
    registry = plugins({"typo": "class Plugn: ...\n"})
    with pytest.warns(RuntimeWarning, match="typo = plugin_typo:Plugin"):
        assert "rectifier" in registry.names()
    with pytest.raises(ConfigError, match="AttributeError"):
        registry.get("typo")


# -- clashes: always said in one line, naming both sides ------------------------------------------
SHADOWING_PLUGIN = """
    from torch import nn
    class Plugin(nn.Identity): ...
"""


def test_a_plugin_named_like_a_built_in_is_not_used_and_says_so(plugins):
    registry = plugins({"rectifier": SHADOWING_PLUGIN})
    with pytest.warns(RuntimeWarning) as caught:
        registry.names()
    [message] = [str(w.message) for w in caught if "rectifier" in str(w.message)]
    assert "\n" not in message
    assert "plugin `rectifier = plugin_rectifier:Plugin` (group lightning_rect.activations) is not used" in message
    assert "the built-in lightning_rect.activations.Rectifier" in message and "rename the entry point" in message
    assert registry.get("rectifier").__name__ == "Rectifier"


def test_user_code_and_a_plugin_of_the_same_name_say_which_one_is_used(plugins):
    # The user registers first (plugins load lazily, later): the user's entry is used, and that is said.
    registry = plugins({"swish": SHADOWING_PLUGIN})

    class Swish(nn.Module):
        def forward(self, x):
            return x

    registry.register("swish")(Swish)
    with pytest.warns(
        RuntimeWarning,
        match=r"'swish' registered by user code \(.*Swish\) takes the place of the "
        r"plugin entry point `swish = plugin_swish:Plugin`",
    ):
        assert registry.get("swish") is Swish

    # The plugin is loaded first: registering the name in user code says it takes the plugin's place.
    registry = plugins({"mish": SHADOWING_PLUGIN})
    # the swish plugin above is still installed and the user's Swish still shadows it: said again
    with pytest.warns(RuntimeWarning, match=r"'swish' registered by user code .* takes the place of"):
        assert registry.get("mish").__name__ == "Plugin"
    with pytest.warns(
        RuntimeWarning,
        match=r"'mish' registered by user code .* takes the place of the plugin entry "
        r"point `mish = plugin_mish:Plugin`",
    ):
        registry.register("mish")(Swish)
    assert registry.get("mish") is Swish


def test_user_code_cannot_take_a_built_in_name():
    with pytest.raises(
        ConfigError,
        match=r"^activation 'tanh' is already registered by the built-in "
        r"lightning_rect.activations.Tanh; register .*Mine under another name$",
    ):

        class Mine(nn.Module): ...

        ACTIVATIONS.register("tanh")(Mine)


def test_registering_the_same_class_again_is_harmless():
    reg = Registry("widget")
    source = "class Widget:\n    size = {}\n"
    first, again = {"__name__": "notebook"}, {"__name__": "notebook"}
    exec(source.format(1), first)  # a notebook cell ...
    reg.register("w")(first["Widget"])
    reg.register("w")(first["Widget"])  # ... registered twice
    exec(source.format(2), again)  # ... and the cell run again: the class is defined anew
    reg.register("w")(again["Widget"])
    assert reg.get("w") is again["Widget"] and reg.get("w").size == 2
    with pytest.raises(ConfigError, match="already registered by the user code notebook.Widget"):
        reg.register("w")(dict)  # another object under the same name is still an error


# -- unknown names: a close match and how to add one ---------------------------------------------
def test_a_near_miss_gets_did_you_mean_and_every_unknown_name_says_how_to_add_one():
    with pytest.raises(ConfigError) as err:
        ACTIVATIONS.get("rectifer")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        "unknown activation 'rectifer' (did you mean 'rectifier'?); valid activation names: "
        "rectifier, sharp_softplus, sigmoid, softplus, tanh; "
    )
    assert "@ACTIVATIONS.register('rectifer')" in message and "--import your_module" in message
    assert "entry point (group lightning_rect.activations)" in message

    with pytest.raises(ConfigError) as err:
        ACTIVATIONS.get("relu6")  # nothing close: no guess
    assert "did you mean" not in str(err.value) and "--import your_module" in str(err.value)

    from lightning_rect import NOISE, RECONSTRUCTIONS

    with pytest.raises(ConfigError, match=r"^unknown noise 'maskng' \(did you mean 'masking'\?\).*@NOISE\.register"):
        NOISE.get("maskng")
    with pytest.raises(
        ConfigError,
        match=r"^unknown reconstruction 'sigmod' \(did you mean 'sigmoid'\?\).*"
        r"@RECONSTRUCTIONS\.register.*group lightning_rect\.reconstructions",
    ):
        RECONSTRUCTIONS.get("sigmod")


def test_a_registry_of_ones_own_words_the_hint_without_a_package_name():
    reg = Registry("widget")
    reg.register("sprocket")(dict)
    with pytest.raises(ConfigError) as err:
        reg.get("sprockett")
    assert str(err.value) == (
        "unknown widget 'sprockett' (did you mean 'sprocket'?); valid widget names: sprocket; "
        "to add one, register it in your own module with @registry.register('sprockett') and "
        "import that module first (on the command line: --import your_module)"
    )
