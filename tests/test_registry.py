import sys
import textwrap

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


def test_entry_point_plugin_is_discovered(tmp_path, monkeypatch):
    """A third-party distribution declares an entry point; the registry finds it without code changes."""
    pkg = tmp_path / "fancy_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from torch import nn
        class Cube(nn.Module):
            def forward(self, x):
                return x ** 3
    """))
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
