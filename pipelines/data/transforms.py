"""Image transforms of the dataset adapters: resize, optional light augmentation, tensor in [0, 1].

Training augmentation is deliberately mild and never flips: reports name the patient's left and
right, so a mirrored image would contradict its text. It applies, in order:

* a random affine warp: rotation within ±``degrees``, translation within ±``translate`` of the
  size, scaling within ``scale``;
* brightness and contrast jitter by factors in ``1 ± brightness`` and ``1 ± contrast``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.transforms import v2


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the training augmentation (see the module docstring)."""

    degrees: float = 5.0
    translate: float = 0.04
    scale: tuple[float, float] = (0.95, 1.05)
    brightness: float = 0.1
    contrast: float = 0.1


def build_transform(
    image_size: int, in_chans: int = 1, augment: AugmentConfig | None = None
) -> Callable[[Image.Image], torch.Tensor]:
    """A transform from a PIL image to a ``float32`` tensor ``(in_chans, image_size, image_size)`` in [0, 1].

    Args:
        image_size: output height and width in pixels (the image is resized, not cropped).
        in_chans: 1 for grayscale, 3 to repeat the gray channel for RGB encoders.
        augment: training augmentation, or ``None`` for evaluation.
    """
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
    # Grayscale first: three equal channels for in_chans=3; brightness/contrast keep them equal.
    steps: list[Callable] = [v2.Grayscale(num_output_channels=in_chans), v2.Resize((image_size, image_size), antialias=True)]
    if augment is not None:
        steps += [
            v2.RandomAffine(degrees=augment.degrees, translate=(augment.translate, augment.translate),
                            scale=augment.scale),
            v2.ColorJitter(brightness=augment.brightness, contrast=augment.contrast),
        ]
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(steps)
