"""Import BLIP- or MOTOR-style PyTorch checkpoints into this project's model, saved as safetensors.

The reference BLIP / MOTOR code saves ``torch.save({"model": state_dict, ...})``. Its text stacks
already use the BERT names of this project's encoders (``text_encoder.encoder.layer.0.attention``,
``...crossattention``, ``text_decoder.bert...``, ``text_decoder.cls.predictions...``); what differs
is where the towers live and how the ITC queues are laid out. :data:`RULES` is the whole mapping,
applied to every source key in order, the first matching rule winning:

=========================================  =====================================  ==================
source key (regex)                         this project's key                     value
=========================================  =====================================  ==================
``visual_encoder_m.X``                     ``momentum.image_encoder.vit.X``
``visual_encoder.X`` (timm ViT names)      ``image_encoder.vit.X``                ViT fitted (below)
``text_encoder_m.X``                       ``momentum.text_encoder.X``
``vision_proj_m.X`` / ``text_proj_m.X``    ``momentum.vision_proj.X`` / ...
``iu_proj.X`` / ``iu_proj_m.X``            ``(momentum.)image_encoder.view_proj.X``
``image_queue`` / ``image_feat_queue``     ``itc_queue.image``                    transposed
``text_queue`` / ``text_feat_queue``       ``itc_queue.text``                     transposed
``idx_queue``                              ``itc_queue.index``                    flattened
``ptr_queue`` / ``queue_ptr``              ``itc_queue.ptr``                      as a scalar
``*.position_ids``                         dropped (a constant buffer of BERT)
``text_encoder.X``, ``text_decoder.X``,    unchanged
``vision_proj.X``, ``text_proj.X``,
``itm_head.X``, ``temp``
this project's own top-level names         unchanged (``torch.save(model.state_dict())``)
=========================================  =====================================  ==================

BLIP stores a queue column-wise, ``(embed_dim, queue_size)``; this project row-wise. The ITC queue
counts as full after import when both feature queues were imported (BLIP uses its whole queue
from the first step); without ``idx_queue`` (BLIP pretraining keeps none) every queued entry gets
index -1, an unknown study that is never a positive. MOTOR's own knowledge modules
(``tag_encoder.*``, ``cross_attn.*``, ``cross_attn_m.*``, ``create_knowledge.*``) are mapped onto
E_gk, E_{gk→v}, E_sk, E_{sk→v} and the SK report queue by :mod:`model.convert_motor` (its table
says what maps where; the few tensors without a counterpart are listed as missing); the report's
``sources`` names, for every key whose name or layout changed, the source keys it came from.
``iu_proj.*`` / ``iu_proj_m.*`` (the reference's two-view projection for IU-Xray) map to
``image_encoder.view_proj.*`` / ``momentum.image_encoder.view_proj.*`` of a model with
``views: all`` (and are unexpected in a one-view model).

Keys no rule matches, and keys mapped to a name the model does not have, are *unexpected*. ViT
tensors are fitted where timm knows how: the positional embedding is resampled to the configured
image size and an RGB patch embedding is reduced to ``in_chans``. Tensors whose shapes still
differ (e.g. a word embedding of another vocabulary) are *mismatched* and keep the model's
initialisation, as do *missing* ones. A momentum encoder of which the checkpoint holds nothing is
copied from its (loaded) online encoder, as at the start of pretraining; the GK node table is
initialised from the loaded word embeddings when the checkpoint has no GK encoder.

Nothing is unpickled: ``.safetensors`` files are read with safetensors, anything else with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from kg.atomic import write_json_atomic
from kg.errors import InputError, MissingResourceError
from model.config import MotorConfig

#: How a value is reshaped on its way in (see :data:`RULES`).
TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "transpose": lambda t: t.t().contiguous(),  # (embed_dim, size) → (size, embed_dim)
    "flatten": lambda t: t.reshape(-1),  # (1, size) → (size,)
    "scalar": lambda t: t.reshape(()),  # (1,) → ()
}

#: ``(source regex, target template or None to drop, transform name or None)``; first match wins.
RULES: tuple[tuple[str, str | None, str | None], ...] = (
    (r"^visual_encoder_m\.(.+)$", r"momentum.image_encoder.vit.\1", None),
    (r"^visual_encoder\.(.+)$", r"image_encoder.vit.\1", None),
    (r"^text_encoder_m\.(.+)$", r"momentum.text_encoder.\1", None),
    (r"^(vision_proj|text_proj)_m\.(.+)$", r"momentum.\1.\2", None),
    (r"^(image_queue|image_feat_queue)$", "itc_queue.image", "transpose"),
    (r"^(text_queue|text_feat_queue)$", "itc_queue.text", "transpose"),
    (r"^idx_queue$", "itc_queue.index", "flatten"),
    (r"^(ptr_queue|queue_ptr)$", "itc_queue.ptr", "scalar"),
    (r"^iu_proj_m\.(.+)$", r"momentum.image_encoder.view_proj.\1", None),
    (r"^iu_proj\.(.+)$", r"image_encoder.view_proj.\1", None),
    (r"^.*\.position_ids$", None, None),
    (r"^((text_encoder|text_decoder|vision_proj|text_proj|itm_head)\..+|temp)$", r"\1", None),
    (r"^((image_encoder|momentum|gk_encoder|gk_image_encoder|sk_encoder|sk_image_encoder|label_scorer"
     r"|itc_queue|report_queue)\..+)$", r"\1", None),
)
_COMPILED = tuple((re.compile(pattern), target, transform) for pattern, target, transform in RULES)
_VIT_PREFIXES = ("image_encoder.vit.", "momentum.image_encoder.vit.")
# Queue contents refill during training: a queue the checkpoint lacks is not reported missing.
_QUEUE_PREFIXES = ("itc_queue.", "report_queue.")
REPORT_FILE = "conversion.json"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


@dataclass
class ConversionReport:
    """What a conversion did, key by key (this project's names unless said otherwise).

    Attributes:
        mapped: model keys filled from the checkpoint.
        missing: model keys the checkpoint did not provide (they keep their initialisation);
            queues and momentum encoders copied from the online ones are not listed.
        unexpected: source keys with no rule, or mapped to a name the model does not have.
        mismatched: ``{"key", "source_key", "source_shape", "model_shape"}`` of tensors whose
            shape could not be fitted.
        dropped: source keys a rule drops on purpose (constant buffers, duplicates, parts the
            reference does not use).
        sources: what maps where: model key → the source keys it was made from, for every mapped
            key whose name or layout differs from its source's (renamed towers, queues, the
            reference's knowledge modules).
        momentum_copied: momentum encoders (``momentum.<name>``) copied from their online encoder.
        out_dir: where the converted model was saved (``None`` before saving).
    """

    mapped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    sources: dict[str, list[str]] = field(default_factory=dict)
    momentum_copied: list[str] = field(default_factory=list)
    out_dir: str | None = None

    @property
    def clean(self) -> bool:
        """Every model tensor came from the checkpoint and every source tensor was used or dropped on purpose."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """A few lines for a terminal: counts, then the first problem keys of each kind."""
        lines = [f"mapped {len(self.mapped)}, missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
                 f"mismatched {len(self.mismatched)}, dropped {len(self.dropped)}"]
        knowledge: dict[str, set[str]] = {}
        for name, keys in self.sources.items():
            for key in keys:
                if key.startswith(("tag_encoder.", "cross_attn", "create_knowledge.")):
                    target = ".".join(name.split(".")[:2]) if name.startswith("momentum.") else name.split(".")[0]
                    knowledge.setdefault(key.split(".")[0] if not key.startswith("create_knowledge.")
                                         else ".".join(key.split(".")[:2]), set()).add(target)
        for origin, targets in sorted(knowledge.items()):
            lines.append(f"  {origin}.* -> {', '.join(sorted(targets))}")
        if self.momentum_copied:
            lines.append(f"  momentum copied from online: {', '.join(self.momentum_copied)}")
        for name, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                lines.append(f"  {name}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}")
        for item in self.mismatched[:8]:
            lines.append(f"  mismatched: {item['source_key']} {item['source_shape']} -> "
                         f"{item['key']} {item['model_shape']}")
        return "\n".join(lines)


def map_key(key: str) -> str | None | bool:
    """This project's name of source key ``key``; ``None`` when a rule drops it, ``False`` when no rule matches."""
    for pattern, target, _ in _COMPILED:
        if pattern.match(key):
            return None if target is None else pattern.sub(target, key)
    return False


def _transform_of(key: str) -> str | None:
    for pattern, _, transform in _COMPILED:
        if pattern.match(key):
            return transform
    return None


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from a ``{"model": ...}`` / ``{"state_dict": ...}`` dict.

    Raises:
        MissingResourceError: no such file.
        InputError: the file is not loadable with ``weights_only=True`` (e.g. it pickles arbitrary
            objects) or holds no tensor mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingResourceError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise InputError(f"not a readable safetensors file: {err}", file=path) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every unreadable file is reported the same way
        raise InputError(f"not a checkpoint readable with weights_only=True: {err}", file=path) from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
    if not tensors:
        raise InputError("expected a mapping of parameter names to tensors", file=path)
    return tensors


def _fit_vit(tensors: dict[str, torch.Tensor], vit: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Resample positional embeddings and adapt the patch embedding's channels with timm's helpers."""
    from timm.models._manipulate import adapt_input_conv
    from timm.models.vision_transformer import checkpoint_filter_fn

    channels = vit.patch_embed.proj.weight.shape[1]
    patch = tensors.get("patch_embed.proj.weight")
    if patch is not None and patch.shape[1] != channels:
        tensors["patch_embed.proj.weight"] = adapt_input_conv(channels, patch)
    return checkpoint_filter_fn(tensors, vit)


def _mapped_tensors(source: dict[str, torch.Tensor], target_state: dict[str, torch.Tensor],
                    report: ConversionReport) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename (and reshape) ``source`` by :data:`RULES`: ``({model key: tensor}, {model key: source key})``."""
    mapped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key in sorted(source):
        name = map_key(key)
        if name is None:
            report.dropped.append(key)
            continue
        if name is False or name not in target_state:
            report.unexpected.append(key)
            continue
        tensor, transform = source[key], _transform_of(key)
        if transform is not None:
            try:
                tensor = TRANSFORMS[transform](tensor)
            except RuntimeError:  # a tensor of another layout under a queue's name (MOTOR's image queue)
                report.mismatched.append({"key": name, "source_key": key, "source_shape": list(tensor.shape),
                                          "model_shape": list(target_state[name].shape)})
                continue
        mapped[name], origin[name] = tensor, key
    return mapped, origin


def load_converted(model: torch.nn.Module, source: dict[str, torch.Tensor]) -> ConversionReport:
    """Copy ``source`` (reference names) into ``model`` by :data:`RULES`, in place.

    Returns:
        The report; ``out_dir`` is left ``None``.
    """
    from model.convert_motor import complete_report_queue, is_reference_knowledge, split_reference_knowledge

    report = ConversionReport()
    target_state = model.state_dict()
    knowledge, knowledge_sources, dropped, unexpected = split_reference_knowledge(
        source, target_state, getattr(model, "_node_token_ids", None)
    )
    report.dropped.extend(dropped)
    report.unexpected.extend(unexpected)
    mapped, origin = _mapped_tensors(
        {k: v for k, v in source.items() if not is_reference_knowledge(k)}, target_state, report
    )
    mapped.update(knowledge)
    origin.update({name: ", ".join(keys) for name, keys in knowledge_sources.items()})
    for prefix in _VIT_PREFIXES:
        vit_part = {k[len(prefix):]: v for k, v in mapped.items() if k.startswith(prefix)}
        if vit_part:
            vit = model.get_submodule(prefix.rstrip("."))
            mapped = {k: v for k, v in mapped.items() if not k.startswith(prefix)}
            mapped.update({prefix + k: v for k, v in _fit_vit(vit_part, vit).items()})
    fitted: dict[str, torch.Tensor] = {}
    for name, tensor in sorted(mapped.items()):
        expected = target_state[name]
        if tuple(tensor.shape) != tuple(expected.shape):
            report.mismatched.append({"key": name, "source_key": origin.get(name, name),
                                      "source_shape": list(tensor.shape), "model_shape": list(expected.shape)})
            continue
        fitted[name] = tensor.to(expected.dtype)
    model.load_state_dict(fitted, strict=False)
    report.mapped = sorted(fitted)
    report.dropped.sort()
    report.unexpected.sort()
    report.sources = {name: knowledge_sources.get(name, [origin[name]]) for name in report.mapped
                      if name in origin and [name] != knowledge_sources.get(name, [origin[name]])}
    _complete_queue(model, fitted)
    complete_report_queue(model, fitted)
    momentum = getattr(model, "momentum", {})
    for name in momentum:
        if not any(key.startswith(f"momentum.{name}.") for key in fitted):
            momentum[name].load_state_dict(getattr(model, name).state_dict())
            report.momentum_copied.append(name)
    if not any(name.startswith("gk_encoder.") for name in fitted) and hasattr(model, "init_node_embeddings"):
        model.init_node_embeddings()
    # Tensors shared by several modules (a tied decoder) appear under each name: loaded once is enough.
    state = model.state_dict(keep_vars=True)
    shared = {id(t) for name, t in state.items() if name in fitted}
    copied = tuple(f"momentum.{name}." for name in report.momentum_copied)
    report.missing = sorted(
        name for name, tensor in state.items()
        if name not in fitted and id(tensor) not in shared and not name.startswith(_QUEUE_PREFIXES + copied)
    )
    return report


def _complete_queue(model: torch.nn.Module, fitted: dict[str, torch.Tensor]) -> None:
    """Mark an imported ITC queue as full; entries without study ids get index -1 (see the module docstring)."""
    if not {"itc_queue.image", "itc_queue.text"} <= fitted.keys():
        return
    queue = model.itc_queue
    queue.filled.fill_(queue.size)
    if "itc_queue.index" not in fitted:
        queue.index.fill_(-1)
    if "itc_queue.ptr" not in fitted:
        queue.ptr.zero_()


def find_tokenizer(src: str | os.PathLike) -> Path:
    """The directory beside checkpoint ``src`` that holds its tokenizer (``tokenizer.json`` or ``vocab.txt``).

    Raises:
        MissingResourceError: there is none.
    """
    directory = Path(src).parent
    if any((directory / name).is_file() for name in TOKENIZER_FILES):
        return directory
    raise MissingResourceError(
        f"no tokenizer given and none beside {src} ({' or '.join(TOKENIZER_FILES)}); "
        "pass the tokenizer matching the checkpoint's vocabulary (e.g. a BERT checkout's directory)"
    )


def convert_checkpoint(
    src: str | os.PathLike,
    config: MotorConfig,
    out_dir: str | os.PathLike,
    tokenizer: Any = None,
    strict: bool = False,
) -> ConversionReport:
    """Load a BLIP- or MOTOR-style checkpoint into a model of ``config`` and save it with safetensors.

    Args:
        src: the checkpoint (``.pth`` / ``.pt`` / ``.bin`` read with ``weights_only=True``, or
            ``.safetensors``); a ``{"model": ...}`` or ``{"state_dict": ...}`` wrapper is unwrapped.
        config: the model configuration to build (e.g. ``MotorConfig.preset("base")``).
        out_dir: directory to save the converted model to (``MotorModel.from_pretrained`` reads
            it); the report is written there too, as ``conversion.json``.
        tokenizer: the tokenizer matching the checkpoint's vocabulary: an object, a directory for
            :func:`model.tokenizer.load_tokenizer`, or ``None`` for the one beside ``src``.
        strict: raise instead of saving when anything is missing, unexpected or mismatched.

    Returns:
        The :class:`ConversionReport` (also in ``out_dir/conversion.json``).

    Raises:
        MissingResourceError: ``src`` or the tokenizer is absent.
        InputError: ``src`` is unreadable without unpickling, or (``strict``) does not fit; with
            ``strict`` nothing is written.
    """
    from model.motor import build_model
    from model.tokenizer import load_tokenizer

    source = read_checkpoint(src)
    if tokenizer is None:
        tokenizer = find_tokenizer(src)
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(tokenizer)
    model = build_model(config, tokenizer)
    report = load_converted(model, source)
    if strict and not report.clean:
        raise InputError(f"checkpoint does not fit the configured model (strict):\n{report.summary()}", file=src)
    out = model.save_pretrained(out_dir)
    report.out_dir = str(out)
    write_json_atomic(out / REPORT_FILE, asdict(report), indent=1)
    return report
