"""Report generation with the single-stream encoder under the S2S mask: greedy and beam search.

Decoding runs left to right from the image segment, as MedViLL (following VLP / UniLM) does: to
write word n, the sequence ``[CLS] v_1 … v_K [SEP_V] w_1 … w_{n-1} [MASK]`` is encoded under S2S
and the MLM head's prediction at [MASK] is word n; a predicted [SEP] ends the report. Under S2S
no earlier position sees a later one, so the encoder keeps the keys and values of the image and
of the words written so far (:class:`model.single_stream.DecodingCache`) and each step runs only
the newest word and the [MASK]; the logits equal those of encoding the whole sequence again.

The model is expected in eval mode (deterministic visual sampling, no dropout).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from kg.errors import InputError
from model.single_stream import DecodingCache, SingleStreamEncoder

#: Special tokens never written inside a report (``[SEP]`` ends it; ``[UNK]`` is allowed).
BANNED_TOKENS = ("pad", "cls", "mask", "enc", "dec")


def next_token_log_probs(
    encoder: SingleStreamEncoder, head: torch.nn.Module, cache: DecodingCache, previous: torch.Tensor | None,
    mask_id: int,
) -> tuple[torch.Tensor, DecodingCache]:
    """Log-probabilities of the next word and the cache extended by ``previous``.

    Args:
        cache: image and words so far. previous: (B,) the last word written (``None`` at the
            first step). mask_id: id of [MASK].

    Returns:
        ``(log_probs (B, vocab), cache)`` (the [MASK] is not cached).
    """
    batch = cache.layers[0][0].shape[0]
    device = cache.layers[0][0].device
    mask = torch.full((batch, 1), mask_id, dtype=torch.long, device=device)
    tokens = mask if previous is None else torch.cat([previous.view(batch, 1), mask], dim=1)
    hidden, cache = encoder.decode_step(tokens, cache, keep=tokens.shape[1] - 1)
    return head(hidden[:, -1]).float().log_softmax(dim=-1), cache


def _constrain(log_probs: torch.Tensor, step: int, token_ids: dict[str, int], min_length: int,
               max_length: int) -> torch.Tensor:
    log_probs = log_probs.clone()
    banned = [token_ids[name] for name in BANNED_TOKENS if name in token_ids]
    log_probs[:, banned] = -torch.inf
    if step < min_length:
        log_probs[:, token_ids["sep"]] = -torch.inf
    if step >= max_length:  # the budget is spent: only [SEP] may follow
        keep = log_probs[:, token_ids["sep"]].clone()
        log_probs.fill_(-torch.inf)
        log_probs[:, token_ids["sep"]] = keep
    return log_probs


def _check_lengths(encoder: SingleStreamEncoder, max_length: int, min_length: int) -> None:
    if min_length < 0 or max_length < 1 or min_length > max_length:
        raise InputError(f"need 0 <= min_length <= max_length and max_length >= 1; got {min_length}, {max_length}",
                         field="max_length")
    budget = encoder.config.max_text_len
    if max_length + 1 > budget:  # the words and the final [MASK]
        raise InputError(f"max_length {max_length} leaves no room for [SEP] in max_text_len {budget}", field="max_length")


@torch.no_grad()
def greedy_decode(
    encoder: SingleStreamEncoder, head: torch.nn.Module, images: torch.Tensor, token_ids: dict[str, int],
    max_length: int = 60, min_length: int = 1,
) -> list[list[int]]:
    """The most probable word at each step, for each image.

    Args:
        images: (B, C, H, W) normalised images. token_ids: :func:`model.tokenizer.special_token_ids`.
        max_length: words per report before [SEP] is forced. min_length: words before [SEP] may end it.

    Returns:
        B lists of word ids, [SEP] excluded.
    """
    _check_lengths(encoder, max_length, min_length)
    cache = encoder.start_decoding(images)
    batch = images.shape[0]
    written: list[torch.Tensor] = []
    finished = torch.zeros(batch, dtype=torch.bool, device=images.device)
    previous = None
    for step in range(max_length + 1):
        log_probs, cache = next_token_log_probs(encoder, head, cache, previous, token_ids["mask"])
        token = _constrain(log_probs, step, token_ids, min_length, max_length).argmax(dim=-1)
        token = token.masked_fill(finished, token_ids["pad"])
        written.append(token)
        finished |= token == token_ids["sep"]
        if bool(finished.all()):
            break
        previous = token
    rows = torch.stack(written, dim=1).tolist()
    return [_until_sep(row, token_ids["sep"]) for row in rows]


@torch.no_grad()
def beam_decode(
    encoder: SingleStreamEncoder, head: torch.nn.Module, images: torch.Tensor, token_ids: dict[str, int],
    num_beams: int = 3, max_length: int = 60, min_length: int = 1, length_penalty: float = 1.0,
) -> tuple[list[list[int]], list[float]]:
    """Beam search over reports, for each image.

    A hypothesis that writes [SEP] is finished with score ``sum of log-probabilities (its [SEP]
    included) / length ** length_penalty`` (length in tokens, [SEP] counted); an image is done
    when it has ``num_beams`` finished hypotheses and the best open one, scored at its current
    length, cannot beat the worst of them (transformers' default stopping rule).

    Returns:
        ``(reports, scores)``: B lists of word ids ([SEP] excluded) and their scores.
    """
    _check_lengths(encoder, max_length, min_length)
    if num_beams < 1:
        raise InputError(f"must be at least 1; got {num_beams}", field="num_beams")
    batch, beams = images.shape[0], num_beams
    device = images.device
    cache = encoder.start_decoding(images).select(torch.arange(batch, device=device).repeat_interleave(beams))
    scores = torch.full((batch, beams), -torch.inf, device=device)
    scores[:, 0] = 0.0  # the first step expands one beam per image
    history = torch.empty(batch * beams, 0, dtype=torch.long, device=device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    done = [False] * batch
    previous = None
    for step in range(max_length + 1):
        log_probs, cache = next_token_log_probs(encoder, head, cache, previous, token_ids["mask"])
        log_probs = _constrain(log_probs, step, token_ids, min_length, max_length)
        vocab = log_probs.shape[-1]
        total = (scores.view(-1, 1) + log_probs).view(batch, beams * vocab)
        top_scores, top_index = total.topk(min(2 * beams, beams * vocab), dim=1)
        next_origin = torch.arange(batch * beams, device=device)  # slots left unfilled keep score -inf
        next_tokens = torch.full((batch * beams,), token_ids["pad"], dtype=torch.long, device=device)
        next_scores = torch.full((batch, beams), -torch.inf, device=device)
        for b in range(batch):
            if done[b]:
                continue
            kept = 0
            for score, index in zip(top_scores[b].tolist(), top_index[b].tolist()):
                if score == -torch.inf or kept == beams:
                    break
                origin, token = b * beams + index // vocab, index % vocab
                if token == token_ids["sep"]:
                    finished[b].append((score / (step + 1) ** length_penalty, history[origin].tolist()))
                    continue
                next_origin[b * beams + kept] = origin
                next_tokens[b * beams + kept] = token
                next_scores[b, kept] = score
                kept += 1
            finished[b] = sorted(finished[b], key=lambda item: item[0], reverse=True)[:beams]
            best_open = float(next_scores[b].max())
            done[b] = kept == 0 or (
                len(finished[b]) == beams and finished[b][-1][0] >= best_open / (step + 1) ** length_penalty
            )
        if all(done):
            break
        history = torch.cat([history[next_origin], next_tokens.unsqueeze(1)], dim=1)
        cache = cache.select(next_origin)
        scores = next_scores
        previous = next_tokens
    best = [max(hypotheses, key=lambda item: item[0]) for hypotheses in finished]
    return [ids for _, ids in best], [score for score, _ in best]


def generate_reports(
    encoder: SingleStreamEncoder, head: torch.nn.Module, tokenizer: Any, images: torch.Tensor,
    token_ids: dict[str, int], *, max_length: int = 60, min_length: int = 1, num_beams: int = 1,
    length_penalty: float = 1.0,
) -> list[str]:
    """Write one report per image: greedy (``num_beams=1``) or beam search; special tokens removed."""
    if num_beams == 1:
        reports = greedy_decode(encoder, head, images, token_ids, max_length, min_length)
    else:
        reports, _ = beam_decode(encoder, head, images, token_ids, num_beams, max_length, min_length, length_penalty)
    return [text.strip() for text in tokenizer.batch_decode(reports, skip_special_tokens=True)]


def _until_sep(row: Sequence[int], sep_id: int) -> list[int]:
    row = list(row)
    return row[: row.index(sep_id)] if sep_id in row else row
