"""The MOTOR reference code's knowledge modules, mapped onto this project's GK and SK paths.

The reference code (chenzcv7/MOTOR) builds its knowledge modules from the Annotated Transformer's
parts (``medical_knowledge/GK_knowledge.py``): attention as four ``nn.Linear`` (``linears.0..3``:
query, key, value, output), feed-forward ``w_1`` / ``w_2``, pre-norm sub-layers
``sublayer.{0,1}.norm`` (``gamma`` / ``beta``) and a final ``norm``. This project's blocks use
PyTorch's attention (one ``in_proj_weight`` holding query, key and value when both sides have the
same width, else ``q/k/v_proj_weight``) and timm's ``Mlp``. :func:`split_reference_knowledge`
maps, in this project's names:

==============================================================  ================================================
reference key                                                   this project's key
==============================================================  ================================================
``cross_attn.layers.i.src_attn.linears.{0,1,2}``                ``gk_image_encoder.blocks.i.attention.in_proj_*``
                                                                (concatenated; ``q/k/v_proj_weight`` if widths differ)
``cross_attn.layers.i.src_attn.linears.3``                      ``gk_image_encoder.blocks.i.attention.out_proj``
``cross_attn.layers.i.sublayer.0.norm`` / ``sublayer.1.norm``   ``gk_image_encoder.blocks.i.norm_query`` / ``norm_mlp``
``cross_attn.layers.i.feed_forward.w_1`` / ``w_2``              ``gk_image_encoder.blocks.i.mlp.fc1`` / ``fc2``
``cross_attn.norm``                                             ``gk_image_encoder.norm``
``cross_attn_m.*``                                              ``momentum.gk_image_encoder.*`` (same rules)
``create_knowledge.cross_attn.*``                               ``sk_image_encoder.*`` (same rules)
``create_knowledge.knowledge_encoder.X``                        ``sk_encoder.encoder.X`` (BERT names, unchanged)
``create_knowledge.text_queue``                                 ``report_queue.feature`` (transposed)
``create_knowledge.knowledge_input_ids_queue`` / ``..._attention_mask_queue``  ``report_queue.sk_ids`` / ``sk_mask``
``create_knowledge.queue_ptr``                                  ``report_queue.ptr``
``tag_encoder.encoder.layers.i.self_attn.linears.*``            ``gk_encoder.layers.layers.i.self_attn.in_proj_*`` / ``out_proj``
``tag_encoder.encoder.layers.i.sublayer.{0,1}.norm``            ``gk_encoder.layers.layers.i.norm1`` / ``norm2``
``tag_encoder.encoder.layers.i.feed_forward.w_1`` / ``w_2``     ``gk_encoder.layers.layers.i.linear1`` / ``linear2``
``tag_encoder.encoder.norm``                                    ``gk_encoder.layers.norm``
``tag_encoder.bert.embeddings.word_embeddings.weight``          ``gk_encoder.word_embedding``: each node's row is
                                                                the mean of its words' rows (as the reference
                                                                computes its node embeddings every step)
==============================================================  ================================================

Dropped on purpose: ``create_knowledge.text_encoder.*`` / ``text_proj.*`` (the reference
registers the shared report encoder and projection a second time), ``tag_encoder.pe.pe`` (a
constant sinusoidal code), and the rest of ``tag_encoder.bert.*`` (a 12-layer BERT of which the
reference uses only the word embeddings and the embedding LayerNorm). No counterpart, so they keep
their initialisation and the report lists them as missing: the key/value norms of the
cross-attention blocks (the reference does not normalise keys and values), E_gk's node-type
embedding (the reference adds the sinusoidal group code and an embedding LayerNorm instead) and
E_{sk→v}'s "no knowledge" token. The reference's LayerNorm divides by the unbiased standard
deviation plus 1e-6 and its feed-forward layers use ReLU (here GELU), so the imported modules
compute close to, not exactly, what the reference computes.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import torch

#: Reference key prefixes handled here (everything else goes through ``model.convert.RULES``).
KNOWLEDGE_PREFIXES = ("tag_encoder.", "cross_attn.", "cross_attn_m.", "create_knowledge.")


class _Tower(NamedTuple):
    """How one reference tower's keys map: its key prefix, and this project's names for its parts."""

    prefix: str  # reference key prefix, up to ``layers.i.`` / ``norm.``
    norm: str  # this project's final norm
    block: str  # this project's block i, with ``{i}`` for the layer index
    their_attention: str
    our_attention: str
    norms: tuple[str, str]  # sub-layer 0 / 1 norms
    ffn: tuple[str, str]  # feed-forward w_1 / w_2


def _cross_tower(prefix: str, target: str) -> _Tower:
    return _Tower(prefix, f"{target}norm", target + "blocks.{i}.", "src_attn", "attention",
                  ("norm_query", "norm_mlp"), ("mlp.fc1", "mlp.fc2"))


# More specific prefixes first ("cross_attn_m." before "cross_attn.").
_TOWERS = (
    _cross_tower("cross_attn_m.", "momentum.gk_image_encoder."),
    _cross_tower("cross_attn.", "gk_image_encoder."),
    _cross_tower("create_knowledge.cross_attn.", "sk_image_encoder."),
    _Tower("tag_encoder.encoder.", "gk_encoder.layers.norm", "gk_encoder.layers.layers.{i}.", "self_attn",
           "self_attn", ("norm1", "norm2"), ("linear1", "linear2")),
)
_TOWER_PART = re.compile(r"^(?:norm\.(gamma|beta)|layers\.(\d+)\.(.+))$")
_NORM_PARAMS = {"gamma": "weight", "beta": "bias"}
_DROPPED = re.compile(
    r"^(create_knowledge\.(text_encoder|text_proj)\.|tag_encoder\.pe\.pe$|tag_encoder\.bert\.)"
)
_GK_WORDS = "tag_encoder.bert.embeddings.word_embeddings.weight"
_REPORT_QUEUE = {
    "create_knowledge.text_queue": ("report_queue.feature", lambda t: t.t().contiguous()),
    "create_knowledge.knowledge_input_ids_queue": ("report_queue.sk_ids", lambda t: t),
    "create_knowledge.knowledge_attention_mask_queue": ("report_queue.sk_mask", lambda t: t != 0),
    "create_knowledge.queue_ptr": ("report_queue.ptr", lambda t: t.reshape(())),
}


def is_reference_knowledge(key: str) -> bool:
    """Whether ``key`` belongs to one of the reference code's knowledge modules."""
    return key.startswith(KNOWLEDGE_PREFIXES)


def split_reference_knowledge(
    source: dict[str, torch.Tensor],
    target_state: dict[str, torch.Tensor],
    node_token_ids: list[list[int]] | None,
) -> tuple[dict[str, torch.Tensor], dict[str, list[str]], list[str], list[str]]:
    """Map the reference's knowledge-module tensors of ``source`` onto this project's names.

    Args:
        source: the whole checkpoint in reference names (other keys are ignored).
        target_state: the model's state dict (which names exist, and the attention layout).
        node_token_ids: the GK nodes' word-piece ids (``MotorModel._node_token_ids``), or
            ``None`` without a GK path.

    Returns:
        ``(tensors, sources, dropped, unexpected)``: tensors by model key; for each, the source
        keys it was made from; source keys dropped on purpose; knowledge keys with no
        counterpart in the model (an unknown key, or a path the configured model lacks).
    """
    tensors: dict[str, torch.Tensor] = {}
    sources: dict[str, list[str]] = {}
    dropped: list[str] = []
    unexpected: list[str] = []
    attention: dict[tuple[str, str], dict[int, tuple[str, torch.Tensor]]] = {}

    def put(name: str, value: torch.Tensor, keys: list[str]) -> None:
        if name in target_state:
            tensors[name], sources[name] = value, keys
        else:
            unexpected.extend(keys)

    for key in sorted(k for k in source if is_reference_knowledge(k)):
        value = source[key]
        if key in _REPORT_QUEUE:
            name, transform = _REPORT_QUEUE[key]
            put(name, transform(value), [key])
            continue
        if key == _GK_WORDS and node_token_ids is not None and "gk_encoder.word_embedding" in target_state:
            put("gk_encoder.word_embedding", _node_table(value, node_token_ids), [key])
            continue
        if _DROPPED.match(key):
            dropped.append(key)
            continue
        if key.startswith("create_knowledge.knowledge_encoder."):
            put("sk_encoder.encoder." + key[len("create_knowledge.knowledge_encoder."):], value, [key])
            continue
        mapped = _tower_name(key)
        if mapped is None:
            unexpected.append(key)
            continue
        name, projection = mapped
        if projection is None:
            put(name, value, [key])
        else:  # query / key / value projections are joined once all three are read
            parameter = "weight" if key.endswith(".weight") else "bias"
            attention.setdefault((name, parameter), {})[projection] = (key, value)

    for (module, parameter), parts in sorted(attention.items()):
        keys = [parts[i][0] for i in sorted(parts)]
        if sorted(parts) != [0, 1, 2]:
            unexpected.extend(keys)
            continue
        joined = f"{module}.in_proj_{parameter}"
        if joined in target_state:
            put(joined, torch.cat([parts[i][1] for i in range(3)]), keys)
        elif parameter == "weight":  # kdim / vdim differ from the width: separate projections
            for i, which in enumerate("qkv"):
                put(f"{module}.{which}_proj_weight", parts[i][1], [parts[i][0]])
        else:
            put(f"{module}.in_proj_bias", torch.cat([parts[i][1] for i in range(3)]), keys)
    return tensors, sources, dropped, unexpected


def _tower_name(key: str) -> tuple[str, int | None] | None:
    """(model name, projection index 0-2 or ``None``) of a GK, GK-image or SK-image encoder key."""
    for tower in _TOWERS:
        if not key.startswith(tower.prefix):
            continue
        part = _TOWER_PART.match(key[len(tower.prefix):])
        if part is None:
            return None
        norm, layer, rest = part.groups()
        if norm:
            return f"{tower.norm}.{_NORM_PARAMS[norm]}", None
        return _block_name(rest, tower.block.format(i=layer), tower.their_attention, tower.our_attention,
                           tower.norms, tower.ffn)
    return None


def _block_name(
    rest: str, block: str, their_attention: str, our_attention: str, norms: tuple[str, str], ffn: tuple[str, str]
) -> tuple[str, int | None] | None:
    linear = re.match(rf"^{their_attention}\.linears\.([0-3])\.(weight|bias)$", rest)
    if linear:
        index, parameter = int(linear.group(1)), linear.group(2)
        if index == 3:
            return f"{block}{our_attention}.out_proj.{parameter}", None
        return f"{block}{our_attention}", index
    sublayer = re.match(r"^sublayer\.([01])\.norm\.(gamma|beta)$", rest)
    if sublayer:
        return f"{block}{norms[int(sublayer.group(1))]}.{_NORM_PARAMS[sublayer.group(2)]}", None
    feed_forward = re.match(r"^feed_forward\.w_([12])\.(weight|bias)$", rest)
    if feed_forward:
        return f"{block}{ffn[int(feed_forward.group(1)) - 1]}.{feed_forward.group(2)}", None
    return None


def _node_table(word_embeddings: torch.Tensor, node_token_ids: list[list[int]]) -> torch.Tensor:
    """(N, width): each GK node's mean word-piece embedding (ids beyond the table are skipped)."""
    rows = []
    for ids in node_token_ids:
        usable = [i for i in ids if i < word_embeddings.shape[0]] or [0]
        rows.append(word_embeddings[usable].mean(0))
    return torch.stack(rows)


def complete_report_queue(model: torch.nn.Module, fitted: dict[str, torch.Tensor]) -> None:
    """Mark an imported SK report queue as full (the reference fills its queue from the start).

    Entries get dataset index -1 (an unknown study, never excluded as a sample's own) and count as
    having an SK sentence when more than ``[CLS]`` and ``[SEP]`` are unmasked.
    """
    if not {"report_queue.feature", "report_queue.sk_ids", "report_queue.sk_mask"} <= fitted.keys():
        return
    queue = model.report_queue
    queue.filled.fill_(queue.size)
    queue.index.fill_(-1)
    queue.has_sk.copy_(queue.sk_mask.sum(1) > 2)
    if "report_queue.ptr" not in fitted:
        queue.ptr.zero_()

