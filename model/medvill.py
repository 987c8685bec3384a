"""MedViLL (Moon et al.): the single-stream encoder with its MLM and IRM heads, one pretraining step.

One step, top to bottom as :meth:`MedVillModel.forward` runs it:

1. The mini-batch's mask scheme: the configured one, or for ``bi+s2s`` S2S with probability 0.75
   (:func:`model.attention_masks.sample_mask_scheme`).
2. IRM pairs: each image keeps its own report with probability 0.5; otherwise it gets the report
   of another sample of the batch whose CheXpert labels differ (:func:`model.irm.sample_irm_negatives`).
3. MLM (:class:`model.masking.TokenMasker`, the masking M3AE and ARL use): 15 % of the words of
   each shown report are chosen (at least one; 80 % [MASK], 10 % random, 10 % kept); under S2S the
   closing [SEP_L] may be chosen too, so that generation learns where to stop.
4. One pass of the joint encoder under the scheme's mask; the MLM head predicts the selected
   words, the IRM head classifies the joint [CLS] (and [CLS_T] under ``non_crossing``).

As in MedViLL's reference code, MLM is computed on every pair shown, matched or not, and IRM reads
the same (masked) pass; ``irm_clean_text`` scores IRM in a second pass over the unmasked reports.
Total loss: ``mlm_weight·L_mlm + irm_weight·L_irm``; an objective of weight 0 is not computed (IRM
alone then reads the unmasked reports, as retrieval finetuning does).

Downstream (:mod:`model.medvill_heads`): diagnosis and VQA classify the joint [CLS], retrieval
ranks every image-report pair by its IRM match probability (:meth:`MedVillModel.match_matrix`),
and report generation finetunes MLM under S2S and decodes left to right (:meth:`MedVillModel.generate`).
Understanding tasks encode under :attr:`MedVillModel.understanding_scheme`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kg.errors import InputError
from model.attention_masks import sample_mask_scheme
from model.batch_standardiser import running_statistics
from model.irm import ImageReportMatchingHead, ImageReportMatchingLoss, draw_matched, sample_irm_negatives
from model.losses import IGNORE_INDEX, MaskedLanguageModelingLoss
from model.masking import TokenMasker
from model.medvill_config import MedVillConfig
from model.motor import MotorOutput
from model.pretrained import load_saved_weights, read_config, save_pretrained
from model.pretraining_heads import MaskedLanguageModelingHead
from model.single_stream import SingleStreamEncoder, SingleStreamOutput, text_segment
from model.tokenizer import special_token_ids


@dataclass
class TextSegments:
    """Reports as the joint encoder's text segment under one mask scheme (:meth:`MedVillModel.text_side`).

    Attributes:
        ids / mask: (N, T) text-segment ids and real-token mask. scheme: the mask they were cut for.
    """

    ids: torch.Tensor
    mask: torch.Tensor
    scheme: str


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
        self.mlm_head = MaskedLanguageModelingHead(config.text_width, self.encoder.embeddings.word_embeddings)
        self.irm_head = ImageReportMatchingHead(config.text_width)
        self.mlm_loss = MaskedLanguageModelingLoss()
        self.irm_loss = ImageReportMatchingLoss()
        # Random MLM replacements are ordinary words, never [PAD], [MASK], [SEP], ...
        self.token_masker = TokenMasker(self.token_ids["mask"], vocab_size, self.token_ids.values(),
                                        config.mlm_probability)

    @property
    def understanding_scheme(self) -> str:
        """The mask of the understanding tasks (IRM scores, retrieval, diagnosis, VQA): the pretraining
        mask, ``bi`` for ``bi+s2s`` (whose understanding mini-batches use it)."""
        return "bi" if self.config.attention_mask == "bi+s2s" else self.config.attention_mask

    def encode(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               scheme: str, generator: torch.Generator | None = None) -> SingleStreamOutput:
        """Encode images (B, C, H, W) with tokenised reports ``[CLS] … [SEP]`` (B, L) under ``scheme``."""
        text_ids, text_mask = text_segment(input_ids, attention_mask, scheme)
        return self.encoder(images, text_ids, text_mask, scheme, generator)

    def irm_logits(self, output: SingleStreamOutput) -> torch.Tensor:
        """(B, 2) matching logits from an encoder output (both [CLS] under ``non_crossing``)."""
        return self.irm_head(output.joint_cls, output.text_cls)

    def masked_tokens(self, text_ids: torch.Tensor, text_mask: torch.Tensor, scheme: str,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """MLM's corrupted text segment and labels (B, T) each: words (and under S2S the closing [SEP_L]) chosen."""
        also = (text_ids == self.token_ids["sep"]) if scheme == "s2s" else None
        masked = self.token_masker.random(text_ids, text_mask, generator, also_maskable=also)
        return masked.input_ids, masked.labels

    def mlm_loss_of(self, output: SingleStreamOutput, labels: torch.Tensor) -> torch.Tensor:
        """L_mlm of an encoder output: only the chosen positions reach the vocabulary."""
        chosen = labels != IGNORE_INDEX
        return self.mlm_loss(self.mlm_head(output.text_hidden[chosen]), labels[chosen])

    def forward(self, batch: dict[str, torch.Tensor], scheme: str | None = None,
                generator: torch.Generator | None = None, alpha: float | None = None) -> MotorOutput:
        """One pretraining (or retrieval finetuning) step's losses.

        Args:
            batch: from :class:`model.processing.MotorCollator` (``image``, ``input_ids``,
                ``attention_mask``, ``labels``, ``index``); B ≥ 2 samples of ≥ 2 studies.
            scheme: the mask for this batch (default: drawn from ``config.attention_mask``).
            generator: source of every draw of the step (``None``: torch's global generator).
            alpha: accepted for the shared pretraining loop (MOTOR's distillation weight); unused.

        Returns:
            :class:`model.motor.MotorOutput` with ``losses`` keys ``mlm`` and ``irm`` (an objective
            whose weight is 0 is not computed and has no key).
        """
        del alpha
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

        # A switched-off objective (weight 0) adds no work: IRM alone reads the unmasked reports.
        losses = {}
        output = None
        if cfg.mlm_weight > 0:
            corrupted, mlm_labels = self.masked_tokens(text_ids, text_mask, scheme, generator)
            output = self.encoder(images, corrupted, text_mask, scheme, generator)
            losses["mlm"] = self.mlm_loss_of(output, mlm_labels)
        if cfg.irm_weight > 0:
            if output is None or cfg.irm_clean_text:
                output = self.encoder(images, text_ids, text_mask, scheme, generator)
            losses["irm"] = self.irm_loss(self.irm_logits(output), matched)
        weights = {"mlm": cfg.mlm_weight, "irm": cfg.irm_weight}
        total = sum(weights[name] * value for name, value in losses.items())
        return MotorOutput(loss=total, losses=losses)

    @torch.no_grad()
    def irm_scores(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   scheme: str | None = None) -> torch.Tensor:
        """Match probability of each (image i, report i) pair: (B,) in [0, 1], under
        ``scheme`` (default :attr:`understanding_scheme`). The IRM head standardises with its running
        statistics, so a pair's score does not depend on the batch, even in training mode."""
        scheme = scheme or self.understanding_scheme
        with running_statistics(self.irm_head):
            return self.irm_logits(self.encode(images, input_ids, attention_mask, scheme)).softmax(dim=-1)[:, 1]

    # ------------------------------------------------------------------ retrieval (every pair by IRM)
    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalised images → their embedded visual segments (B, V, width), for :meth:`match_matrix`."""
        return self.encoder.embed_visual(images)

    def text_side(self, batch: dict[str, Any]) -> TextSegments:
        """The batch's reports (``input_ids`` / ``attention_mask``) as text segments for :meth:`match_matrix`."""
        scheme = self.understanding_scheme
        ids, mask = text_segment(batch["input_ids"], batch["attention_mask"], scheme)
        return TextSegments(ids, mask, scheme)

    @torch.no_grad()
    def match_matrix(self, image_tokens: torch.Tensor, text: TextSegments, pairs_per_call: int = 256) -> torch.Tensor:
        """IRM match probability of every (image, report) pair: (N_images, N_reports) in [0, 1].

        Args:
            image_tokens: (N_images, V, width) from :meth:`image_tokens`.
            text: N_reports reports (:meth:`text_side`).
            pairs_per_call: pairs encoded at once; the scores do not depend on it (the IRM head
                standardises with its running statistics, even in training mode).
        """
        n_images, n_texts = image_tokens.shape[0], text.ids.shape[0]
        per_call = max(1, pairs_per_call // n_texts)
        rows = []
        for start in range(0, n_images, per_call):
            chunk = image_tokens[start:start + per_call]
            # Every report against every image of the chunk, image-major.
            visual = chunk.repeat_interleave(n_texts, dim=0)
            ids, mask = text.ids.repeat(chunk.shape[0], 1), text.mask.repeat(chunk.shape[0], 1)
            output = self.encoder.encode_embedded(visual, ids, mask, text.scheme)
            with running_statistics(self.irm_head):
                logits = self.irm_logits(output)
            rows.append(logits.softmax(-1)[:, 1].reshape(chunk.shape[0], n_texts))
        return torch.cat(rows)

    # ------------------------------------------------------------------ downstream heads
    def diagnosis_head(self, num_labels: int | None = None) -> nn.Module:
        """A :class:`model.medvill_heads.MedVillDiagnosisHead` sharing this model's encoder."""
        from model.medvill_heads import MedVillDiagnosisHead

        return MedVillDiagnosisHead(self, num_labels)

    def vqa_head(self, num_answers: int) -> nn.Module:
        """A :class:`model.medvill_heads.MedVillVQAHead` sharing this model's encoder."""
        from model.medvill_heads import MedVillVQAHead

        return MedVillVQAHead(self, num_answers)

    def report_generator(self) -> nn.Module:
        """The report-generation finetuning objective (MLM under S2S, :class:`model.medvill_heads.MedVillReportGenerator`)."""
        from model.medvill_heads import MedVillReportGenerator

        return MedVillReportGenerator(self)

    def generate(self, images: torch.Tensor, max_length: int = 60, min_length: int = 1, num_beams: int = 1,
                 length_penalty: float = 1.0) -> list[str]:
        """Write a report per image under S2S, greedy or beam; see :mod:`model.single_stream_generation`.

        ``max_length`` is capped at ``max_text_len - 1`` words: the text segment must also hold the
        [MASK] that asks for [SEP].
        """
        from model.single_stream_generation import generate_reports

        max_length = min(max_length, self.config.max_text_len - 1)
        return generate_reports(
            self.encoder, self.mlm_head, self.tokenizer, images, self.token_ids, max_length=max_length,
            min_length=min(min_length, max_length), num_beams=num_beams, length_penalty=length_penalty,
        )

    # ------------------------------------------------------------------ bookkeeping
    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component (``cnn``, ``embeddings``, ``transformer``, ``mlm_head`` without the
        tied word table, ``irm_head``) and ``trainable`` in total."""
        def count(module: nn.Module, skip: tuple[nn.Parameter, ...] = ()) -> int:
            return sum(p.numel() for p in module.parameters() if all(p is not s for s in skip))

        words = self.encoder.embeddings.word_embeddings.weight
        return {
            "cnn": count(self.encoder.visual_sampler),
            "embeddings": count(self.encoder.embeddings),
            "transformer": count(self.encoder.layers),
            "mlm_head": count(self.mlm_head, (words,)),
            "irm_head": count(self.irm_head),
            "trainable": count(self),
        }

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` (method ``medvill``), ``model.safetensors`` and the tokenizer; atomic.

        The same format as every method (:mod:`model.pretrained`); nothing is pickled.
        """
        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> MedVillModel:
        """Load a model written by :meth:`save_pretrained` (safetensors only; nothing is unpickled).

        The local checkouts the config names (``text_model_dir``, ``backbone_weights``) are not
        read again: the saved weights already hold what they once provided.

        Raises:
            MissingResourceError: no ``config.json`` or ``model.safetensors`` there.
            InputError: the directory holds another method's model, or weights that do not fit.
        """
        from kg.errors import MissingResourceError
        from model.pretrained import WEIGHTS_FILE
        from model.tokenizer import load_tokenizer

        directory = Path(directory)
        config = read_config(directory)
        if not isinstance(config, MedVillConfig):
            raise InputError(f"the model saved here is not MedViLL ({type(config).__name__})",
                             file=directory / "config.json", field="method")
        if not (directory / WEIGHTS_FILE).is_file():
            raise MissingResourceError(f"no {WEIGHTS_FILE} in {directory}")
        config = config.replace(text_model_dir=None, backbone_weights=None)
        model = cls(config, load_tokenizer(directory))
        return load_saved_weights(model, directory, map_location)


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
