"""The image encoder E_v (a timm ViT) and the BERT-style text stacks (transformers' BLIP text model).

The text stacks are ``BlipTextModel`` / ``BlipTextLMHeadModel``, the transformers port of BLIP's
``med.py``: one encoder serves as the report encoder E_t (``encoder_hidden_states=None``) and, with
its cross-attention layers, as the image-grounded encoder E_{v→t}; the decoder is causal with
cross-attention to the image. Plain ``BertModel`` cannot do the second job: it only enables
cross-attention in causal (decoder) mode.

Weights come only from local files: ``image_weights`` (a ViT state dict) and ``text_model_dir``
(a BERT-style checkout such as SciBERT). Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kg.errors import InputError, MissingResourceError
from model.config import MotorConfig


class ImageEncoder(nn.Module):
    """E_v: a Vision Transformer returning every token.

    ``forward(images (B, C, H, W)) -> (B, 1 + patches, vision_width)``, ``[CLS]`` first, after the
    final layer norm. With ``views: all`` a study is ``num_views`` images, ``(B, V, C, H, W)``:
    each view goes through the ViT, the V token features of each position are concatenated
    (B, 1 + patches, V · width) and ``view_proj`` maps them back to width (the reference code's
    ``iu_proj``), so everything after E_v sees one study as one token sequence.
    """

    def __init__(self, config: MotorConfig) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.image_size = config.image_size
        self.in_chans = config.in_chans
        self.vit = VisionTransformer(
            img_size=config.image_size, patch_size=config.patch_size, in_chans=config.in_chans,
            embed_dim=config.vision_width, depth=config.vision_layers, num_heads=config.vision_heads,
            num_classes=0, drop_path_rate=config.drop_path_rate,
        )
        self.width = config.vision_width
        self.views = getattr(config, "views_per_study", None)
        if self.views is not None:
            self.view_proj = nn.Linear(self.views * config.vision_width, config.vision_width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) — or (B, V, C, H, W) with ``views: all`` — normalised images → (B, 1 + patches,
        width) token features."""
        image = (self.in_chans, self.image_size, self.image_size)
        if self.views is None:
            if images.dim() != 4 or tuple(images.shape[1:]) != image:
                raise InputError(f"expected images of shape (B, {', '.join(map(str, image))}); "
                                 f"got {tuple(images.shape)}", field="image")
            return self.vit.forward_features(images)
        if images.dim() != 5 or tuple(images.shape[1:]) != (self.views, *image):
            raise InputError(f"views: all expects images of shape (B, {self.views}, {', '.join(map(str, image))}); "
                             f"got {tuple(images.shape)}", field="image")
        batch = images.shape[0]
        tokens = self.vit.forward_features(images.flatten(0, 1))  # (B·V, T, width)
        tokens = tokens.reshape(batch, self.views, tokens.shape[1], self.width)
        return self.view_proj(tokens.permute(0, 2, 1, 3).reshape(batch, tokens.shape[2], self.views * self.width))

    def load_weights(self, path: str | Path) -> None:
        """Initialise from a local ViT checkpoint in timm's naming.

        ``.safetensors`` files are read with safetensors, anything else with
        ``torch.load(weights_only=True)`` (never unpickled); a ``{"model": ...}`` or
        ``{"state_dict": ...}`` wrapper is unwrapped. Positional embeddings are resampled to this
        image size and a 3-channel patch embedding is adapted to ``in_chans``; classifier heads
        are dropped.

        Raises:
            MissingResourceError: ``path`` does not exist.
            InputError: the checkpoint does not fit this ViT (names the missing tensors).
        """
        from timm.models._manipulate import adapt_input_conv
        from timm.models.vision_transformer import checkpoint_filter_fn

        state = _read_state_dict(path)
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        patch = state.get("patch_embed.proj.weight")
        if patch is not None and patch.shape[1] != self.in_chans:
            state["patch_embed.proj.weight"] = adapt_input_conv(self.in_chans, patch)
        state = checkpoint_filter_fn(state, self.vit)
        try:
            result = self.vit.load_state_dict(state, strict=False)
        except RuntimeError as err:
            raise InputError(f"ViT weights do not fit image encoder: {err}", file=path) from None
        problems = list(result.missing_keys) + [k for k in result.unexpected_keys if not k.startswith("head")]
        if problems:
            raise InputError(f"ViT weights do not fit the image encoder; mismatched: {', '.join(problems[:8])}", file=path)


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise MissingResourceError(f"image encoder weights not found: {path} (set image_weights to a local file)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise InputError(f"not a tensor checkpoint readable with weights_only=True: {err}", file=path) from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError("expected a mapping of parameter names to tensors", file=path)
    return state


# ---------------------------------------------------------------------------- text stacks
def text_config(
    config: MotorConfig,
    vocab_size: int,
    token_ids: dict[str, int],
    *,
    layers: int | None = None,
    cross_attention: bool = True,
) -> Any:
    """The ``BlipTextConfig`` of a text stack of ``config``'s sizes.

    Args:
        vocab_size: tokenizer length. token_ids: :func:`model.tokenizer.special_token_ids`.
        layers: depth (default ``config.text_layers``).
        cross_attention: build cross-attention layers to the image (E_t/E_{v→t}, decoder); the
            SK encoder has none.
    """
    from transformers import BlipTextConfig

    return BlipTextConfig(
        vocab_size=vocab_size, hidden_size=config.text_width, encoder_hidden_size=config.vision_width,
        intermediate_size=config.text_intermediate, num_hidden_layers=layers or config.text_layers,
        num_attention_heads=config.text_heads, max_position_embeddings=config.max_position_embeddings,
        hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.dropout,
        bos_token_id=token_ids["dec"], eos_token_id=token_ids["sep"], sep_token_id=token_ids["sep"],
        pad_token_id=token_ids["pad"], is_decoder=cross_attention, label_smoothing=config.label_smoothing,
    )


def build_text_encoder(text_cfg: Any) -> nn.Module:
    """A ``BlipTextModel`` (no pooler): ``(B, L) ids → (B, L, text_width)``."""
    from transformers.models.blip.modeling_blip_text import BlipTextModel

    return BlipTextModel(text_cfg, add_pooling_layer=False)


def build_text_decoder(text_cfg: Any) -> nn.Module:
    """A causal ``BlipTextLMHeadModel`` with cross-attention to the image."""
    from transformers.models.blip.modeling_blip_text import BlipTextLMHeadModel

    return BlipTextLMHeadModel(text_cfg)


def tie_decoder_to_encoder(decoder: nn.Module, encoder: nn.Module) -> None:
    """Share everything but the causal self-attention between decoder and encoder (BLIP pretraining).

    The decoder's embeddings, cross-attention and feed-forward sublayers become the encoder's
    modules, and its output projection is the shared word-embedding matrix.
    """
    decoder.bert.embeddings = encoder.embeddings
    for dec_layer, enc_layer in zip(decoder.bert.encoder.layer, encoder.encoder.layer):
        dec_layer.crossattention = enc_layer.crossattention
        dec_layer.intermediate = enc_layer.intermediate
        dec_layer.output = enc_layer.output
    decoder.cls.predictions.decoder.weight = encoder.embeddings.word_embeddings.weight


class LocalBert:
    """A BERT-style checkout on disk (``config.json`` + weights), read without any network access.

    Attributes:
        config: its ``BertConfig``. state: its ``BertModel`` state dict.
    """

    def __init__(self, directory: str | Path) -> None:
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise MissingResourceError(
                f"text model directory {directory} has no config.json: pass a local BERT-style checkout "
                "(e.g. SciBERT) as text_model_dir, or leave it unset for randomly initialised text encoders"
            )
        from transformers import BertModel

        try:
            bert = BertModel.from_pretrained(str(directory), local_files_only=True)
        except OSError as err:
            raise MissingResourceError(f"cannot read BERT weights from {directory}: {err}") from None
        self.directory = directory
        self.config = bert.config
        self.state = {k: v.detach().clone() for k, v in bert.state_dict().items() if not k.startswith("pooler.")}

    def sizes(self) -> dict[str, int]:
        """MotorConfig text fields implied by the checkout."""
        return {
            "text_width": self.config.hidden_size, "text_layers": self.config.num_hidden_layers,
            "text_heads": self.config.num_attention_heads, "text_intermediate": self.config.intermediate_size,
        }

    def vocabulary(self) -> dict[str, int] | None:
        """The checkout's own token → id table (``vocab.txt`` or ``tokenizer.json``), ``None`` if it has none."""
        from model.tokenizer import load_tokenizer

        if not ((self.directory / "vocab.txt").is_file() or (self.directory / "tokenizer.json").is_file()):
            return None
        return dict(load_tokenizer(self.directory).get_vocab())

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Refuse a tokenizer whose ids are not the checkout's: its embedding rows would mean other words.

        The checkout's vocabulary must map into ``tokenizer`` unchanged (the tokenizer may add
        tokens after it, as ``[ENC]`` and ``[DEC]``). A checkout without a vocabulary file is not
        checked.

        Raises:
            InputError: a token of the checkout has another id (or none) in ``tokenizer``.
        """
        own = self.vocabulary()
        if own is None:
            return
        theirs = tokenizer.get_vocab()
        differing = [token for token, index in own.items() if theirs.get(token) != index]
        if differing:
            raise InputError(
                f"the tokenizer does not use this checkout's vocabulary ({len(differing)} of {len(own)} tokens "
                f"differ, e.g. {differing[0]!r}): its word-embedding rows would be paired with other words. "
                "Load the checkout's own tokenizer (model.tokenizer.load_tokenizer(text_model_dir); in a "
                "pretraining config leave tokenizer.path unset or point it at the checkout)",
                file=self.directory, field="text_model_dir",
            )

    @torch.no_grad()
    def initialise(self, model: nn.Module) -> None:
        """Copy the checkout's weights into a ``BlipTextModel`` of the same width.

        Layers beyond the checkout's depth and cross-attention layers keep their random
        initialisation; token rows beyond the checkout's vocabulary ([ENC], [DEC]) too. BERT's
        token-type embedding (always type 0 here) is folded into the position embeddings: both
        are added before the embedding layer norm, so the sum is unchanged.
        """
        own = model.state_dict()
        state = dict(self.state)
        token_type = state.pop("embeddings.token_type_embeddings.weight", None)
        positions = state.get("embeddings.position_embeddings.weight")
        if token_type is not None and positions is not None:
            state["embeddings.position_embeddings.weight"] = positions + token_type[0]
        for name, value in state.items():
            if name not in own:
                continue
            target = own[name]
            if target.shape == value.shape:
                target.copy_(value)
            elif name in ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight"):
                rows = min(target.shape[0], value.shape[0])
                target[:rows].copy_(value[:rows])
            else:
                raise InputError(f"tensor {name} has shape {tuple(value.shape)}, expected {tuple(target.shape)}",
                                 file=self.directory)
