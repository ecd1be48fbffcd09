import math

import pytest
import torch

from lightning_rect.activations import ACTIVATIONS, SignFlip
from lightning_rect.encoder import Encoder, l1_penalty
from lightning_rect.errors import ConfigError

POINTS = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0])


def values_and_grads(name, **kwargs):
    x = POINTS.clone().requires_grad_(True)
    y = ACTIVATIONS.build(name, **kwargs)(x)
    y.sum().backward()
    return y.detach(), x.grad


def test_rectifier_values_gradients_and_exact_zeros():
    y, g = values_and_grads("rectifier")
    assert torch.equal(y, torch.tensor([0.0, 0.0, 0.0, 0.5, 2.0]))
    assert torch.equal(g, torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0]))


def test_tanh_sigmoid_softplus_against_formulas():
    y, g = values_and_grads("tanh")
    assert torch.allclose(y, torch.tensor([math.tanh(v) for v in POINTS.tolist()]))
    assert torch.allclose(g, 1 - y**2)
    y, g = values_and_grads("sigmoid")
    assert torch.allclose(y, 1 / (1 + torch.exp(-POINTS)))
    assert torch.allclose(g, y * (1 - y))
    y, g = values_and_grads("softplus")
    assert torch.allclose(y, torch.log1p(torch.exp(POINTS)))
    assert torch.allclose(g, torch.sigmoid(POINTS))
    assert (y > 0).all()  # never exactly zero: no exact sparsity


def test_sharp_softplus_a1_is_softplus_and_formula_holds():
    y1, _ = values_and_grads("sharp_softplus", a=1.0)
    assert torch.allclose(y1, torch.log1p(torch.exp(POINTS)))
    y3, g3 = values_and_grads("sharp_softplus", a=3.0)
    assert torch.allclose(y3, torch.log1p(torch.exp(3 * POINTS)) / 3)
    assert torch.allclose(g3, torch.sigmoid(3 * POINTS))


def test_sharp_softplus_approaches_the_rectifier():
    x = torch.linspace(-3, 3, 601)
    gaps = [(ACTIVATIONS.build("sharp_softplus", a=a)(x) - torch.relu(x)).abs().max().item() for a in [1, 2, 6, 50]]
    assert all(b < a for a, b in zip(gaps, gaps[1:]))
    assert gaps[0] == pytest.approx(math.log(2), rel=1e-4)  # the gap is log(2)/a, at x = 0
    assert gaps[-1] == pytest.approx(math.log(2) / 50, rel=1e-3)


@pytest.mark.parametrize("a", [0, -1, float("nan")])
def test_sharp_softplus_refuses_non_positive_a(a):
    with pytest.raises(ConfigError, match="a .*> 0"):
        ACTIVATIONS.build("sharp_softplus", a=a)


def test_sign_flip_flips_exactly_half_of_the_units():
    flip = SignFlip(6)
    out = flip(torch.ones(2, 6))
    assert torch.equal(out[0], torch.tensor([1.0, 1, 1, -1, -1, -1]))
    enc_plain = Encoder(4, [6], "rectifier", sign_flip=False)
    enc_flip = Encoder(4, [6], "rectifier", sign_flip=True)
    enc_flip.load_state_dict(enc_plain.state_dict())
    x = torch.randn(5, 4)
    plain, flipped = enc_plain(x)[0], enc_flip(x)[0]
    assert torch.equal(flipped[:, :3], plain[:, :3])
    assert torch.equal(flipped[:, 3:], -plain[:, 3:])


def test_sign_flip_works_with_any_activation():
    enc = Encoder(4, [4], "tanh", sign_flip=True)
    h = enc(torch.ones(1, 4))[0]
    ref = torch.tanh(enc.layers[0].linear(torch.ones(1, 4)))
    assert torch.allclose(h, ref * torch.tensor([1.0, 1, -1, -1]))


def test_encoder_returns_every_hidden_output_once():
    enc = Encoder(8, [5, 4, 3])
    hidden = enc(torch.randn(7, 8))
    assert [tuple(h.shape) for h in hidden] == [(7, 5), (7, 4), (7, 3)]
    assert torch.allclose(hidden[1], enc.layers[1](hidden[0]))
    # per-example sum over units, averaged over the 7 examples and the 3 layers
    assert l1_penalty(hidden).item() == pytest.approx(sum(h.abs().sum().item() for h in hidden) / (7 * 3), rel=1e-5)


def test_encoder_refuses_empty_hidden_sizes():
    with pytest.raises(ConfigError, match="hidden_sizes"):
        Encoder(8, [])


# -- what an activation says about itself --------------------------------------------------------
@pytest.mark.parametrize("name", ["rectifier", "tanh", "softplus", "sigmoid", "sharp_softplus"])
def test_every_activation_states_an_output_range_that_holds(name):
    from lightning_rect.activations import output_range

    cls = ACTIVATIONS.get(name)
    assert "output_range" in vars(cls) and isinstance(vars(cls).get("exact_zeros"), bool), name
    low, high = output_range(name)
    y = ACTIVATIONS.build(name)(torch.linspace(-30, 30, 6001, dtype=torch.float64))
    assert ((y >= low) & (y <= high)).all(), name
    assert y.min() < low + 0.01 and (math.isinf(high) or y.max() > high - 0.01), name  # and it is the tightest one
    assert bool((y == 0).any()) is cls.exact_zeros or name == "tanh", name  # tanh(0) = 0 alone


class Softsign(torch.nn.Module):
    """A user's symmetric activation: outputs in (-1, 1), like tanh, under another name."""

    output_range = (-1.0, 1.0)
    exact_zeros = False

    def forward(self, x):
        return torch.nn.functional.softsign(x)


@pytest.fixture
def softsign(monkeypatch):
    monkeypatch.setattr(ACTIVATIONS, "_entries", dict(ACTIVATIONS._entries))
    monkeypatch.setattr(ACTIVATIONS, "_origins", dict(ACTIVATIONS._origins))
    ACTIVATIONS.register("softsign")(Softsign)
    return "softsign"


@pytest.mark.parametrize("sign_flip", [False, True])
def test_the_dae_target_of_an_activation_follows_its_output_range_not_its_name(softsign, sign_flip):
    from lightning_rect import StackedDAE
    from lightning_rect.reconstruction import paper_reconstruction

    assert paper_reconstruction(softsign) == paper_reconstruction("tanh") == "sigmoid"
    assert paper_reconstruction("rectifier") == paper_reconstruction("softplus") == "softplus"
    clean = torch.tensor([[-0.8, 0.0, 0.5]])
    for name in (softsign, "tanh"):  # signed outputs in (-1, 1) map onto (0, 1), keeping their sign
        dae = StackedDAE(3, None, [3, 3], activation=name, reconstruction="sigmoid", sign_flip=sign_flip, l1=0.0)
        assert torch.allclose(dae._target(clean, 1), torch.tensor([[0.1, 0.5, 0.75]])), name
        assert torch.equal(dae._target(clean, 0), clean.clamp(0, 1)), name  # the data, not a layer's outputs
    rectifier = StackedDAE(3, None, [3, 3], reconstruction="sigmoid", sign_flip=sign_flip, l1=0.0)
    assert torch.equal(rectifier._target(clean, 1), clean.abs() if sign_flip else clean.clamp(0, 1))
