"""Random character distortions in the spirit of NISTP (Bengio et al. 2011, "Deep learners benefit
more from out-of-distribution examples"), applied to a whole batch at once.

Every image in a batch gets its own random parameters, so the work is a handful of batched tensor
ops (pooling, one ``grid_sample``, two grouped convolutions) that run on whatever device the images
are on. ``torchvision.transforms.v2`` draws one set of parameters per call, i.e. per batch, which is
why these are written with plain torch ops instead.

All randomness comes from the ``torch.Generator`` passed in, so a (seed, device) pair reproduces a
batch exactly. Images are white ink on black (EMNIST's convention), values in [0, 1].

The distortions, in the order applied (``strength`` scales every magnitude; 0 leaves images as they are):

=============  ===========  ================================================================
distortion     probability  magnitude at strength 1
=============  ===========  ================================================================
thickness      0.5          blend towards a 3x3 dilation (thicker) or erosion (thinner), t in [-1, 1]
affine         1            rotation +-15 deg, slant (horizontal shear) +-0.3, scale 0.85..1.15,
                            aspect +-10%, shift +-2 px
elastic        0.5          smooth random displacement field (4x4 control grid), up to ~1.5 px rms
occlusion      0.2          a rectangle (6..14 px a side) of another character of the batch laid over
blur           0.3          Gaussian, sigma 0.3..1.2 px
contrast       0.5          background raised to 0..0.3, ink lowered to 0.5..1
noise          0.5          Gaussian pixel noise, std 0..0.1
=============  ===========  ================================================================
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_BLUR_RADIUS = 3


def distort(images: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Float images ``(n, 1, H, W)`` in [0, 1] -> distorted images of the same shape, in [0, 1]."""
    n = images.shape[0]
    if n == 0 or strength == 0:
        return images.clone()
    device = images.device

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand((n, *shape), generator=generator, device=device)

    def chosen(probability: float) -> torch.Tensor:
        return uniform(0.0, 1.0) < min(1.0, probability)

    x = thickness(images, uniform(-1.0, 1.0) * strength * chosen(0.5))
    x = warp(x, generator, strength, elastic=chosen(0.5))
    x = occlude(x, generator, chosen(0.2 * strength))
    x = blur(x, torch.where(chosen(0.3), uniform(0.3, 1.2) * strength, torch.zeros(n, device=device)))
    contrast = chosen(0.5)
    ink = torch.where(contrast, uniform(1 - 0.5 * strength, 1.0), 1.0)
    background = torch.where(contrast, uniform(0.0, 0.3 * strength), 0.0)
    x = background.view(n, 1, 1, 1) + (ink - background).view(n, 1, 1, 1) * x
    std = uniform(0.0, 0.1 * strength) * chosen(0.5)
    x = x + std.view(n, 1, 1, 1) * torch.randn(x.shape, generator=generator, device=device)
    return x.clamp_(0.0, 1.0)


def thickness(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per image: ``t > 0`` blends towards the 3x3 dilation (thicker strokes), ``t < 0`` towards the erosion."""
    dilated = F.max_pool2d(x, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
    t = t.view(-1, 1, 1, 1)
    return torch.where(t > 0, x + t * (dilated - x), x - t * (eroded - x))


def warp(x: torch.Tensor, generator: torch.Generator, strength: float, elastic: torch.Tensor) -> torch.Tensor:
    """One resampling for the random affine map plus, where ``elastic``, a smooth displacement field."""
    n, _, height, width = x.shape
    device = x.device

    def uniform(bound: float) -> torch.Tensor:
        return (2 * torch.rand(n, generator=generator, device=device) - 1) * bound * strength

    angle = uniform(math.radians(15))
    slant = uniform(0.3)
    scale = 1 + uniform(0.15)
    aspect = 1 + uniform(0.1)
    shift_x, shift_y = uniform(2 * 2 / width), uniform(2 * 2 / height)  # 2 px in [-1, 1] coordinates
    cos, sin = torch.cos(angle), torch.sin(angle)
    # theta maps output coordinates to input coordinates: rotation @ slant @ diag(scale)
    sx, sy = 1 / (scale * aspect), aspect / scale
    theta = torch.stack(
        [
            torch.stack([cos * sx, (cos * slant - sin) * sy, shift_x], dim=-1),
            torch.stack([sin * sx, (sin * slant + cos) * sy, shift_y], dim=-1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
    field = torch.randn((n, 2, 4, 4), generator=generator, device=device)
    field = F.interpolate(field, size=(height, width), mode="bicubic", align_corners=False)
    pixels = 1.5 * strength * elastic.view(n, 1, 1, 1)  # rms displacement in pixels
    per_pixel = 2 / torch.tensor([width, height], device=device, dtype=x.dtype).view(1, 2, 1, 1)  # in [-1, 1] units
    grid = grid + (field * pixels * per_pixel).permute(0, 2, 3, 1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def occlude(x: torch.Tensor, generator: torch.Generator, chosen: torch.Tensor) -> torch.Tensor:
    """Where ``chosen``, lay a random rectangle of the next image in the batch over the image (max of the two)."""
    n, _, height, width = x.shape
    device = x.device

    def integers(low: int, high: int) -> torch.Tensor:
        return torch.randint(low, high + 1, (n, 1, 1), generator=generator, device=device)

    w, h = integers(6, 14), integers(6, 14)
    left, top = integers(0, width - 6), integers(0, height - 6)
    cols = torch.arange(width, device=device).view(1, 1, width)
    rows = torch.arange(height, device=device).view(1, height, 1)
    mask = (cols >= left) & (cols < left + w) & (rows >= top) & (rows < top + h) & chosen.view(n, 1, 1)
    other = x.roll(1, dims=0)
    return torch.where(mask.unsqueeze(1), torch.maximum(x, other), x)


def blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one ``sigma`` per image (0: unchanged), as two grouped convolutions."""
    n, _, height, width = x.shape
    offsets = torch.arange(-_BLUR_RADIUS, _BLUR_RADIUS + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(offsets.view(1, -1) ** 2) / (2 * sigma.clamp(min=1e-3).view(-1, 1) ** 2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    out = x.reshape(1, n, height, width)
    out = F.conv2d(out, kernel.view(n, 1, 1, -1), padding=(0, _BLUR_RADIUS), groups=n)
    out = F.conv2d(out, kernel.view(n, 1, -1, 1), padding=(_BLUR_RADIUS, 0), groups=n)
    return out.view(n, 1, height, width)
