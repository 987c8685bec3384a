"""Shared pieces of the MedViLL tests: a tiny configuration (timm's ``test_resnet`` at 64 px)."""
from __future__ import annotations

from model.medvill_config import MedVillConfig

#: Visual features kept of the 2 × 2 = 4 positions of ``test_resnet``'s last map at 64 px.
TINY_K = 3


def tiny_medvill_config(**changes) -> MedVillConfig:
    """A MedViLL of a few hundred thousand parameters, without dropout, for CPU tests."""
    defaults = dict(
        backbone="test_resnet", image_size=64, num_visual_tokens=TINY_K, text_width=64, text_layers=2, text_heads=2,
        text_intermediate=128, max_text_len=64, max_position_embeddings=64, dropout=0.0,
    )
    return MedVillConfig(**{**defaults, **changes})
