"""MedViLL's self-attention masks over one image-report sequence (the paper's Fig. 4 and Eq. 14).

The single-stream encoder reads one sequence made of two segments::

    visual segment (V = K + 2 tokens)        text segment (T tokens, right-padded)
    [CLS] v_1 … v_K [SEP_V]                  w_1 … w_N [SEP_L] [PAD] …
                                             [CLS_T] w_1 … w_N [SEP_L] [PAD] …   (non_crossing)

[CLS] and [SEP_V] belong to the visual segment: in MedViLL's reference code the first K + 2
positions form the image block of every mask, so under ``s2s`` the joint [CLS] sees only the image
(it summarises the image, which is what S2S finetuning for report generation needs) and [SEP_V] is
the last token every generated word may look back to. [SEP_L] belongs to the text segment: it is
the report's end, predicted (and attended to) like a word. ``non_crossing`` adds a text [CLS_T] as
the first token of the text segment, so that each modality has its own summary token for image-report
matching.

Entry (i, j) of a mask is True when position i (query) may attend to position j (key). With
``·`` = allowed, ``x`` = blocked, ``I`` = visual segment, ``t_n`` = the n-th text-segment token:

=================  =====================================================================
scheme             rule (padding never attends and is never attended to)
=================  =====================================================================
``bi``             every token to every token (Fig. 4, bidirectional)
``s2s``            I → I only; t_n → I and t_m with m ≤ n (Fig. 4, sequence-to-sequence)
``bar``            I → everything; t_n → I and t_m with m ≤ n (Fig. 4, bidirectional
                   auto-regressive, MedViLL's proposal, Eq. 14)
``non_crossing``   I → I; t → t (Fig. 4, non-crossing: no attention between modalities)
``bi+s2s``         per mini-batch, ``s2s`` with probability 0.75, else ``bi``
                   (:func:`sample_mask_scheme` draws it; it is not a mask of its own)
=================  =====================================================================

For K = 2 and a text segment ``w_1 w_2 [SEP_L] [PAD]`` (``C`` = [CLS], ``S`` = [SEP_V],
``E`` = [SEP_L], ``P`` = [PAD]; row i lists the keys query i may attend to)::

             bi                s2s               bar               non_crossing (c = [CLS_T])
             C v v S w w E P   C v v S w w E P   C v v S w w E P   C v v S c w E P
    C        · · · · · · · x   · · · · x x x x   · · · · · · · x   · · · · x x x x
    v_1      · · · · · · · x   · · · · x x x x   · · · · · · · x   · · · · x x x x
    v_2      · · · · · · · x   · · · · x x x x   · · · · · · · x   · · · · x x x x
    S        · · · · · · · x   · · · · x x x x   · · · · · · · x   · · · · x x x x
    w_1 / c  · · · · · · · x   · · · · · x x x   · · · · · x x x   x x x x · · · x
    w_2 / w  · · · · · · · x   · · · · · · x x   · · · · · · x x   x x x x · · · x
    E        · · · · · · · x   · · · · · · · x   · · · · · · · x   x x x x · · · x
    P        x x x x x x x x   x x x x x x x x   x x x x x x x x   x x x x x x x x

The rules hold per layer. Under ``bar`` a text token never reads a later one directly, but from
the second layer on it reads image tokens that have read the whole report, so earlier text does
depend on later text; only ``s2s`` keeps the text strictly left to right through the whole stack,
which is why report generation finetunes and decodes under ``s2s``.

A padding row blocks everything, so it has no key to attend to; the encoder lets such a row attend
to itself (see :mod:`model.single_stream`) so softmax stays finite. Its output is never read.
"""
from __future__ import annotations

import torch

from kg.errors import InputError

#: Masks :func:`attention_mask` builds.
MASK_SCHEMES = ("bi", "s2s", "bar", "non_crossing")
#: Schemes a MedViLL model may pretrain with (``bi+s2s`` mixes two masks per mini-batch).
PRETRAIN_SCHEMES = (*MASK_SCHEMES, "bi+s2s")
#: Probability of ``s2s`` in a ``bi+s2s`` mini-batch (MedViLL's mixed setting).
S2S_PROBABILITY = 0.75


def attention_mask(scheme: str, visual_len: int, text_mask: torch.Tensor) -> torch.Tensor:
    """The boolean self-attention mask of ``scheme`` for a batch of image-report sequences.

    Args:
        scheme: one of :data:`MASK_SCHEMES`.
        visual_len: V, tokens of the visual segment ([CLS], K visual features, [SEP_V]).
        text_mask: (B, T) bool or 0/1, which text-segment positions hold a real token (words,
            [SEP_L] and, for ``non_crossing``, [CLS_T]); False marks padding.

    Returns:
        (B, V + T, V + T) bool, True where the query (row) may attend to the key (column).
    """
    if scheme not in MASK_SCHEMES:
        raise InputError(f"must be one of {', '.join(MASK_SCHEMES)}; got {scheme!r}", field="attention_mask")
    if visual_len < 1:
        raise InputError(f"the visual segment needs at least one token; got {visual_len}", field="visual_len")
    if text_mask.dim() != 2:
        raise InputError(f"expected a (batch, text tokens) mask; got shape {tuple(text_mask.shape)}", field="text_mask")
    batch, text_len = text_mask.shape
    device = text_mask.device
    length = visual_len + text_len
    real = torch.cat([torch.ones(batch, visual_len, dtype=torch.bool, device=device), text_mask.bool()], dim=1)
    is_text = torch.arange(length, device=device) >= visual_len
    query_text, key_text = is_text.view(-1, 1), is_text.view(1, -1)
    # Within the text segment, "earlier or the same token" is "lower or equal position".
    not_later = torch.ones(length, length, dtype=torch.bool, device=device).tril()

    if scheme == "bi":
        allowed = torch.ones(length, length, dtype=torch.bool, device=device)
    elif scheme == "s2s":
        allowed = torch.where(query_text, ~key_text | not_later, ~key_text)
    elif scheme == "bar":  # Eq. 14: everything except text → later text
        allowed = ~(query_text & key_text) | not_later
    else:  # non_crossing
        allowed = query_text == key_text
    return allowed.unsqueeze(0) & real.unsqueeze(2) & real.unsqueeze(1)


def sample_mask_scheme(scheme: str, generator: torch.Generator | None = None,
                       s2s_probability: float = S2S_PROBABILITY) -> str:
    """The mask scheme of one mini-batch: ``scheme`` itself, or for ``bi+s2s`` a draw between them.

    Args:
        scheme: one of :data:`PRETRAIN_SCHEMES`.
        generator: source of the draw (``None``: torch's global generator); one draw per call.
        s2s_probability: chance of ``s2s`` under ``bi+s2s``.

    Returns:
        One of :data:`MASK_SCHEMES`.
    """
    if scheme not in PRETRAIN_SCHEMES:
        raise InputError(f"must be one of {', '.join(PRETRAIN_SCHEMES)}; got {scheme!r}", field="attention_mask")
    if not 0.0 <= s2s_probability <= 1.0:
        raise InputError(f"must lie in [0, 1]; got {s2s_probability!r}", field="s2s_probability")
    if scheme != "bi+s2s":
        return scheme
    draw = torch.rand((), generator=generator, device=generator.device if generator is not None else "cpu")
    return "s2s" if float(draw) < s2s_probability else "bi"
