"""MedViLL (Moon et al.): the single-stream encoder with its MLM and IRM heads, one pretraining step.

One step, top to bottom as :meth:`MedVillModel.forward` runs it:

1. The mini-batch's mask scheme: the configured one, or for ``bi+s2s`` S2S with probability 0.75
   (:func:`model.attention_masks.sample_mask_scheme`).
2. IRM pairs: each image keeps its own report with probability 0.5; otherwise it gets the report
   of another sample of the batch whose CheXpert labels differ (:func:`model.irm.sample_irm_negatives`).
3. MLM: 15 % of the words of each shown report are selected (80 % [MASK], 10 % random, 10 % kept);
   under S2S the closing [SEP_L] may be selected too, so that generation learns where to stop.
4. One pass of the joint encoder under the scheme's mask; the MLM head predicts the selected
   words, the IRM head classifies the joint [CLS] (and [CLS_T] under ``non_crossing``).

As in MedViLL's reference code, MLM is computed on every pair shown, matched or not, and IRM reads
the same (masked) pass; ``irm_clean_text`` scores IRM in a second pass over the unmasked reports.
Total loss: ``mlm_weight·L_mlm + irm_weight·L_irm``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kg.errors import InputError
from model.attention_masks import sample_mask_scheme
from model.irm import ImageReportMatchingHead, ImageReportMatchingLoss, draw_matched, sample_irm_negatives
from model.medvill_config import MedVillConfig
from model.mlm import MaskedLanguageModelingLoss, MaskedLMHead, mask_text_tokens
from model.motor import MotorOutput
from model.single_stream import SingleStreamEncoder, SingleStreamOutput, text_segment
from model.tokenizer import special_token_ids


class MedVillModel(nn.Module):
    """The MedViLL encoder with its pretraining heads (module docstring for one step).

    Build it with :func:`build_medvill`, which also loads the local weights ``config`` names.

    Args:
        config: :class:`model.medvill_config.MedVillConfig`.
        tokenizer: the shared report tokenizer (:func:`model.tokenizer.load_tokenizer`).

    Attributes a user touches: ``config``, ``tokenizer``, ``token_ids``, ``encoder``,
    ``mlm_head`` (tied to the word embeddings), ``irm_head``.
    """

    def __init__(self, config: MedVillConfig, tokenizer: Any) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.token_ids = special_token_ids(tokenizer)
        vocab_size = len(tokenizer)
        self.encoder = SingleStreamEncoder(config, vocab_size, self.token_ids["cls"], self.token_ids["sep"])
        self.mlm_head = MaskedLMHead(self.encoder.embeddings.word_embeddings)
        self.irm_head = ImageReportMatchingHead(config.text_width)
        self.mlm_loss = MaskedLanguageModelingLoss()
        self.irm_loss = ImageReportMatchingLoss()
        special = torch.tensor(sorted(set(self.token_ids.values())))
        ordinary = torch.ones(vocab_size, dtype=torch.bool)
        ordinary[special] = False
        # Random MLM replacements are ordinary words, never [PAD], [MASK], [SEP], ...
        self.register_buffer("random_ids", ordinary.nonzero().squeeze(1), persistent=False)

    def encode(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               scheme: str, generator: torch.Generator | None = None) -> SingleStreamOutput:
        """Encode images (B, C, H, W) with tokenised reports ``[CLS] … [SEP]`` (B, L) under ``scheme``."""
        text_ids, text_mask = text_segment(input_ids, attention_mask, scheme)
        return self.encoder(images, text_ids, text_mask, scheme, generator)

    def irm_logits(self, output: SingleStreamOutput) -> torch.Tensor:
        """(B, 2) matching logits from an encoder output (both [CLS] under ``non_crossing``)."""
        return self.irm_head(output.joint_cls, output.text_cls)

    def forward(self, batch: dict[str, torch.Tensor], scheme: str | None = None,
                generator: torch.Generator | None = None) -> MotorOutput:
        """One pretraining (or S2S finetuning) step's losses.

        Args:
            batch: from :class:`model.processing.MotorCollator` (``image``, ``input_ids``,
                ``attention_mask``, ``labels``, ``index``); B ≥ 2 samples of ≥ 2 studies.
            scheme: the mask for this batch (default: drawn from ``config.attention_mask``);
                report-generation finetuning passes ``"s2s"``.
            generator: source of every draw of the step (``None``: torch's global generator).

        Returns:
            :class:`model.motor.MotorOutput` with ``losses`` keys ``mlm`` and ``irm``.
        """
        cfg = self.config
        images, input_ids, attention_mask = batch["image"], batch["input_ids"], batch["attention_mask"]
        if images.shape[0] < 2:
            raise InputError("a training batch needs at least 2 samples (IRM draws non-matching reports from the batch)",
                             field="image")
        scheme = scheme or sample_mask_scheme(cfg.attention_mask, generator, cfg.s2s_probability)
        device = images.device

        matched = draw_matched(images.shape[0], cfg.irm_match_probability, generator, device)
        index = batch["index"]
        negatives, _ = sample_irm_negatives(index, index, batch.get("labels"), batch.get("labels"), generator)
        shown = torch.where(matched, torch.arange(images.shape[0], device=device), negatives)
        text_ids, text_mask = text_segment(input_ids[shown], attention_mask[shown], scheme)

        maskable = text_mask & (text_ids != self.token_ids["cls"])
        if scheme != "s2s":
            maskable &= text_ids != self.token_ids["sep"]
        corrupted, mlm_labels = mask_text_tokens(
            text_ids, maskable, self.token_ids["mask"], len(self.tokenizer), cfg.mlm_probability, generator,
            self.random_ids,
        )
        output = self.encoder(images, corrupted, text_mask, scheme, generator)
        if cfg.irm_clean_text:
            irm_output = self.encoder(images, text_ids, text_mask, scheme, generator)
        else:
            irm_output = output
        losses = {
            "mlm": self.mlm_loss(self.mlm_head(output.text_hidden), mlm_labels),
            "irm": self.irm_loss(self.irm_logits(irm_output), matched),
        }
        total = cfg.mlm_weight * losses["mlm"] + cfg.irm_weight * losses["irm"]
        return MotorOutput(loss=total, losses=losses)

    @torch.no_grad()
    def irm_scores(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   scheme: str | None = None) -> torch.Tensor:
        """Match probability of each (image i, report i) pair: (B,) in [0, 1].

        ``scheme`` defaults to the configured mask (``bi`` for ``bi+s2s``, whose understanding
        batches use it).
        """
        scheme = scheme or ("bi" if self.config.attention_mask == "bi+s2s" else self.config.attention_mask)
        return self.irm_logits(self.encode(images, input_ids, attention_mask, scheme)).softmax(dim=-1)[:, 1]

    def generate(self, images: torch.Tensor, max_length: int = 60, min_length: int = 1, num_beams: int = 1,
                 length_penalty: float = 1.0) -> list[str]:
        """Write a report per image under S2S, greedy or beam; see :mod:`model.single_stream_generation`."""
        from model.single_stream_generation import generate_reports

        return generate_reports(
            self.encoder, self.mlm_head, self.tokenizer, images, self.token_ids, max_length=max_length,
            min_length=min_length, num_beams=num_beams, length_penalty=length_penalty,
        )


def build_medvill(config: MedVillConfig, tokenizer: Any) -> MedVillModel:
    """Build MedViLL and load the local weights ``config`` names.

    With ``text_model_dir`` the checkout's sizes replace the ``text_*`` fields (``model.config``
    records them) and its weights initialise the word, position and semantic embeddings and the
    transformer layers (:meth:`model.single_stream.SingleStreamEncoder.initialise_from_bert`);
    with ``backbone_weights`` the CNN is initialised from that file.

    Raises:
        MissingResourceError: a local weight file or directory named in ``config`` is absent.
    """
    from model.encoders import LocalBert

    bert = LocalBert(config.text_model_dir) if config.text_model_dir else None
    if bert is not None:
        config = config.replace(**bert.sizes())
    model = MedVillModel(config, tokenizer)
    if bert is not None:
        model.encoder.initialise_from_bert(bert.state, source=str(bert.directory))
    if config.backbone_weights:
        model.encoder.visual_sampler.load_weights(config.backbone_weights)
    return model
