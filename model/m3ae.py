"""M3AE and ARL: co-attention fusion over MOTOR's encoders, trained with ITM, MLM, MIM and ARL's knowledge.

One training step, top to bottom as :meth:`M3AEModel.forward` runs it:

1. E_v encodes the whole image → f_v (B, 1 + N, vision_width); E_t encodes the report → f_t
   (B, L, text_width). Both are the classes MOTOR uses (:mod:`model.encoders`); E_t is built
   without cross-attention, since the fusion module does the cross-modal work.
2. ITM on the **unmasked** pass: each report is paired with its own image, with another study's
   image, and each image with another study's report. Without ITC the in-batch negatives are drawn
   uniformly (M3AE's reference code); with the ``itc`` objective (ALBEF's contrastive loss on the
   uni-modal [CLS] features, projected and L2-normalised, in-batch, no queue) they are drawn in
   proportion to the softmax of the ITC similarity, as ALBEF and MOTOR do. The co-attention fusion
   reads each pair and :class:`PairMatchingHead` scores both pooled [CLS] outputs. Masked views
   never reach ITM or ITC.
3. AK (ARL, ``knowledge.ak``, Eq. 10–14): the uni-modal [CLS] features of image and report score
   every entity of the vocabulary; BCE against the report's entity set.
4. The **masked** pass, once for MLM and MIM together (as M3AE): the report with 15 % of its
   tokens masked (random, or whole entity spans with ARL's LK), and only the 25 % visible patches
   through E_v (MAE), fused; MLM predicts the masked tokens from the fusion's final text stream,
   the MIM decoder reconstructs the masked patches' normalised pixels from fusion layer
   ``mim.layer`` of the image stream. With RK (Eq. 15–17) every fusion call also reasons over
   the report's entities; in the masked pass, entities whose tokens were masked do not reach the
   text (their column of P is dropped), so their knowledge cannot give the answer away.

Total loss: ``itm_weight·L_itm + itc_weight·L_itc + mlm_weight·L_mlm + mim_weight·L_mim +
ak_weight·L_ak``, each term only when its objective is on (``config.active_objectives``; a part
that is off has no parameters and no work).

Zero-shot retrieval has no ITC space to rank in: it ranks by ITM match probability over all
image-report pairs (:meth:`M3AEModel.match_matrix`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kg.errors import InputError
from model.arl_knowledge import entity_targets
from model.batch_standardiser import running_statistics
from model.coattention import CoAttentionParts
from model.encoders import ImageEncoder, LocalBert, build_text_encoder, text_config
from model.fusion import EntityInputs
from model.losses import (
    IGNORE_INDEX,
    ContrastiveLoss,
    KnowledgeAlignmentLoss,
    MaskedImageModelingLoss,
    MaskedLanguageModelingLoss,
    MatchingLoss,
    sample_hard_negatives,
)
from model.m3ae_config import M3AEConfig
from model.masking import encode_visible_patches, patchify, random_patch_mask
from model.motor import MotorOutput
from model.pretrained import load_saved_weights, save_pretrained, saved_config
from model.tokenizer import special_token_ids

#: The entity vocabulary of a saved ARL model, one name per line, beside its weights.
ENTITIES_FILE = "entities.txt"


@dataclass
class TextSide:
    """The report side of a fusion call.

    Attributes:
        tokens: (B, L, text_width) E_t output. mask: (B, L) 1 = token, 0 = padding.
        entities: the reports' entities for RK, or ``None``.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    entities: EntityInputs | None = None

    def select(self, rows: torch.Tensor) -> TextSide:
        """The reports at batch positions ``rows`` (B',)."""
        entities = None
        if self.entities is not None:
            e = self.entities
            entities = EntityInputs(e.feats[rows], e.padding[rows], e.position_map[rows])
        return TextSide(self.tokens[rows], self.mask[rows], entities)

    def repeat(self, times: int) -> TextSide:
        """Each report ``times`` times in a row: (B·times, ...), report-major."""
        return self.select(torch.arange(self.tokens.shape[0], device=self.tokens.device).repeat_interleave(times))


def cat_text(sides: list[TextSide]) -> TextSide:
    """Concatenate text sides of the same padded length along the batch."""
    entities = None
    if sides[0].entities is not None:
        entities = EntityInputs(*(torch.cat([getattr(s.entities, f) for s in sides])
                                  for f in ("feats", "padding", "position_map")))
    return TextSide(torch.cat([s.tokens for s in sides]), torch.cat([s.mask for s in sides]), entities)


class M3AEModel(nn.Module):
    """M3AE (and ARL, with its knowledge switches on); see the module docstring for the data flow.

    Args:
        config: encoder sizes and the co-attention parts (:class:`model.m3ae_config.M3AEConfig`).
        tokenizer: the report tokenizer.
        entity_names: the entity vocabulary, needed when ``knowledge.ak`` or ``knowledge.rk`` is on
            (else ``config.entities_file`` is read).

    Attributes a user touches: ``config``, ``tokenizer``, ``image_encoder``, ``text_encoder``,
    ``parts`` (:class:`model.coattention.CoAttentionParts`: fusion, heads, entity table).
    """

    def __init__(self, config: M3AEConfig, tokenizer: Any, entity_names: list[str] | None = None) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.token_ids = special_token_ids(tokenizer)
        parts = config.parts
        if parts.knowledge.uses_entities and entity_names is None:
            entity_names = read_entity_names(config.entities_file) if config.entities_file else None
        self.image_encoder = ImageEncoder(config)
        self.text_encoder = build_text_encoder(
            text_config(config, len(tokenizer), self.token_ids, cross_attention=False))
        self.parts = CoAttentionParts(
            parts, text_width=config.text_width, vision_width=config.vision_width,
            word_embeddings=self.text_encoder.embeddings.word_embeddings,
            special_ids=self.token_ids.values(), mask_id=self.token_ids["mask"],
            num_patches=config.num_patches, patch_dim=config.patch_size ** 2 * config.in_chans,
            entity_names=entity_names,
        )
        self.itm_loss = MatchingLoss()
        if "itc" in config.active_objectives:
            self.vision_proj = nn.Linear(config.vision_width, config.embed_dim)
            self.text_proj = nn.Linear(config.text_width, config.embed_dim)
            self.temp = nn.Parameter(torch.tensor(config.temperature))
            self.itc_loss = ContrastiveLoss()
        if parts.mlm.enabled:
            self.mlm_loss = MaskedLanguageModelingLoss()
        if parts.mim.enabled:
            self.mim_loss = MaskedImageModelingLoss(parts.mim.normalise_pixels)
        if parts.knowledge.ak:
            self.ak_loss = KnowledgeAlignmentLoss()
        if config.report_decoder:
            self._build_report_decoder()

    def _build_report_decoder(self) -> None:
        from model.encoders import build_text_decoder
        from model.losses import LanguageModelingLoss

        self.text_decoder = build_text_decoder(text_config(self.config, len(self.tokenizer), self.token_ids))
        self.lm_loss = LanguageModelingLoss(self.config.label_smoothing)

    @torch.no_grad()
    def attach_report_decoder(self) -> bool:
        """Give the model a report decoder for generation, initialised from the text encoder.

        M3AE and ARL pretrain no decoder. The decoder (MOTOR's causal ``BlipTextLMHeadModel`` with
        cross-attention to the image tokens) takes every E_t tensor of the same name and shape
        (embeddings, self-attention, feed-forward, the output projection tied to the word
        embeddings); its cross-attention layers start random. ``config.report_decoder`` becomes
        true, so a saved model is rebuilt with it.

        Returns:
            Whether a decoder was attached (``False``: the model already has one).
        """
        if hasattr(self, "text_decoder"):
            return False
        self.config = self.config.replace(report_decoder=True)
        self._build_report_decoder()
        own = self.text_decoder.bert.state_dict()
        for name, value in self.text_encoder.state_dict().items():
            if name in own and own[name].shape == value.shape:
                own[name].copy_(value)
        device = self.text_encoder.embeddings.word_embeddings.weight.device
        self.text_decoder.to(device)
        self.lm_loss.to(device)
        return True

    def generate(self, images: torch.Tensor, max_length: int = 60, min_length: int = 1, num_beams: int = 1,
                 repetition_penalty: float = 1.0) -> list[str]:
        """Write a report for each image with the attached decoder (:meth:`attach_report_decoder`)."""
        from model.generation import generate_reports

        if not hasattr(self, "text_decoder"):
            raise InputError(f"{self.config.method} has no report decoder: attach one first "
                             "(motor finetune --task generation does)", field="report_decoder")
        with torch.no_grad():
            tokens = self.image_tokens(images)
        return generate_reports(self.text_decoder, self.tokenizer, tokens, self.token_ids, max_length=max_length,
                                min_length=min_length, num_beams=num_beams, repetition_penalty=repetition_penalty)

    @property
    def entity_names(self) -> list[str] | None:
        """The entity vocabulary (ARL with AK or RK), else ``None``."""
        table = getattr(self.parts, "entity_table", None)
        return None if table is None else table.names

    # ------------------------------------------------------------------ encoders
    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalised images → f_v (B, 1 + N, vision_width)."""
        return self.image_encoder(images)

    def text_side(self, batch: dict[str, Any], input_ids: torch.Tensor | None = None) -> TextSide:
        """E_t of the batch's reports (or of ``input_ids``, e.g. masked ones) with their entities for RK."""
        ids = batch["input_ids"] if input_ids is None else input_ids
        mask = batch["attention_mask"]
        tokens = self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return TextSide(tokens, mask, self._entities(batch))

    def _entities(self, batch: dict[str, Any]) -> EntityInputs | None:
        if not self.parts.fusion.uses_knowledge:
            return None
        if "entity_ids" not in batch:
            raise InputError("ARL's knowledge reasoning (rk) needs each report's entities: collate batches with "
                             "model.arl_data.EntityCollator", field="entity_ids")
        return self.parts.entity_table.inputs(batch["entity_ids"], batch["entity_position_map"])

    def fuse(self, text: TextSide, image_tokens: torch.Tensor) -> Any:
        """The co-attention fusion of ``text`` with image tokens → :class:`model.fusion.FusionOutput`."""
        return self.parts.fusion(text.tokens, text.mask, image_tokens, None, text.entities)

    def match_logits(self, text: TextSide, image_tokens: torch.Tensor) -> torch.Tensor:
        """ITM logits (B, 2) of each (report, image) pair, from both pooled [CLS] outputs."""
        fused = self.fuse(text, image_tokens)
        return self.parts.itm_head(fused.text_pooled, fused.image_pooled)

    # ------------------------------------------------------------------ training
    def forward(self, batch: dict[str, Any], alpha: float | None = None) -> MotorOutput:
        """One pretraining step's losses.

        Args:
            batch: ``image`` (B, C, H, W), ``input_ids`` / ``attention_mask`` (B, L), ``index`` (B,),
                and for ARL ``entity_ids`` (B, E), ``entity_position_map`` (B, E, L),
                ``entity_spans`` (per report, token spans); B ≥ 2 (ITM draws negatives from the batch).
            alpha: accepted for the shared pretraining loop (MOTOR's distillation weight); unused.

        Returns:
            :class:`model.motor.MotorOutput` with ``losses`` keys ``itm`` and, when on, ``itc``,
            ``mlm``, ``mim``, ``ak``.
        """
        del alpha
        images, index = batch["image"], batch["index"]
        if images.shape[0] < 2:
            raise InputError("a training batch needs at least 2 samples (ITM draws negatives from the batch)",
                             field="image")
        cfg = self.config
        # One generator per step, seeded from the global RNG: masks follow the run's seed.
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
        image_tokens = self.image_tokens(images)
        text = self.text_side(batch)

        losses = {}
        similarity = None
        if hasattr(self, "itc_loss"):
            losses["itc"], similarity = self._contrastive_loss(image_tokens, text, index)
        losses["itm"] = self._matching_loss(text, image_tokens, index, similarity)
        if hasattr(self.parts, "alignment_head"):
            image_logits, text_logits = self.parts.alignment_head(  # Eq. 10–13
                image_tokens[:, 0], text.tokens[:, 0], self.parts.entity_table.weight)
            targets = entity_targets(batch["entity_ids"], len(self.parts.entity_table))
            losses["ak"] = self.ak_loss(image_logits, text_logits, targets)  # Eq. 14
        if hasattr(self.parts, "mlm_head") or hasattr(self.parts, "mim_decoder"):
            losses.update(self._masked_losses(batch, images, image_tokens, text, generator))

        weights = {"itm": cfg.itm_weight, "itc": cfg.itc_weight, "mlm": cfg.mlm_weight, "mim": cfg.mim_weight,
                   "ak": cfg.ak_weight}
        total = sum(weights[name] * value for name, value in losses.items())
        return MotorOutput(loss=total, losses=losses)

    def _contrastive_loss(self, image_tokens: torch.Tensor, text: TextSide,
                          index: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """ITC on the uni-modal [CLS] features, in-batch (ALBEF without queue or momentum encoder).

        Returns the loss and ``(sim_i2t, sim_t2i)`` (B, B), which ITM draws its hard negatives by.
        """
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
        image_feats = F.normalize(self.vision_proj(image_tokens[:, 0]), dim=-1)
        text_feats = F.normalize(self.text_proj(text.tokens[:, 0]), dim=-1)
        empty = image_feats.new_zeros(0, image_feats.shape[1])
        # The online features stand in for the momentum ones, so with alpha 0 this is CLIP's loss
        # with studies of the same index counted as positives.
        loss, sim_i2t, sim_t2i = self.itc_loss(image_feats, text_feats, image_feats, text_feats, empty, empty,
                                               index, index.new_zeros(0), self.temp, 0.0)
        return loss, (sim_i2t, sim_t2i)

    def _matching_loss(self, text: TextSide, image_tokens: torch.Tensor, index: torch.Tensor,
                       similarity: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        batch = image_tokens.shape[0]
        if similarity is None:
            # Uniform weights: a random other study of the batch for each image and each report.
            uniform = torch.zeros(batch, batch, device=image_tokens.device)
            similarity = (uniform, uniform)
        negative_text, negative_image = sample_hard_negatives(*similarity, index)
        # Matched pairs, then each report with a negative image, then each image with a negative report.
        rows = torch.arange(batch, device=image_tokens.device)
        texts = text.select(torch.cat([rows, rows, negative_text]))
        images = torch.cat([image_tokens, image_tokens[negative_image], image_tokens])
        return self.itm_loss(self.match_logits(texts, images), batch)

    def _masked_losses(
        self, batch: dict[str, Any], images: torch.Tensor, image_tokens: torch.Tensor, text: TextSide,
        generator: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        parts, cfg = self.parts, self.config.parts
        losses = {}
        masked_tokens = None
        if hasattr(parts, "mlm_head"):
            ids, mask = batch["input_ids"], batch["attention_mask"]
            if cfg.knowledge.lk:
                masked_tokens = parts.token_masker.knowledge_induced(ids, mask, batch["entity_spans"], generator)
            else:
                masked_tokens = parts.token_masker.random(ids, mask, generator)
            text = self.text_side(batch, masked_tokens.input_ids)
            if text.entities is not None and masked_tokens.masked_entities is not None:
                # A masked entity's knowledge must not reach the tokens that name it.
                keep = (~masked_tokens.masked_entities).unsqueeze(-1).to(text.entities.position_map.dtype)
                text.entities = dataclasses.replace(text.entities,
                                                    position_map=text.entities.position_map * keep)
        patches = None
        if hasattr(parts, "mim_decoder"):
            patches = random_patch_mask(images.shape[0], self.config.num_patches, cfg.mim.ratio, generator,
                                        images.device)
            image_tokens = encode_visible_patches(self.image_encoder.vit, images, patches.keep)
        fused = self.fuse(text, image_tokens)
        if masked_tokens is not None:
            chosen = masked_tokens.labels != IGNORE_INDEX
            logits = parts.mlm_head(fused.text[chosen])  # only the chosen positions reach the vocabulary
            losses["mlm"] = self.mlm_loss(logits, masked_tokens.labels[chosen])
        if patches is not None:
            prediction = parts.mim_decoder(fused.image_layers[cfg.mim_layer_index], patches.restore)
            losses["mim"] = self.mim_loss(prediction, patchify(images, self.config.patch_size), patches.mask)
        return losses

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def match_matrix(self, image_tokens: torch.Tensor, text: TextSide, pairs_per_call: int = 256) -> torch.Tensor:
        """ITM match probability of every (image, report) pair: (N_images, N_reports) in [0, 1].

        Args:
            image_tokens: (N_images, 1 + N, vision_width) from :meth:`image_tokens`.
            text: N_reports reports (:meth:`text_side`).
            pairs_per_call: pairs fused at once.
        """
        n_images, n_texts = image_tokens.shape[0], text.tokens.shape[0]
        per_call = max(1, pairs_per_call // n_texts)
        rows = []
        for start in range(0, n_images, per_call):
            chunk = image_tokens[start:start + per_call]
            # Every report against every image of the chunk, image-major.
            texts = cat_text([text] * chunk.shape[0])
            images = chunk.repeat_interleave(n_texts, dim=0)
            # Running statistics in any mode: a pair's score never depends on the pairs scored with it.
            with running_statistics(self.parts.itm_head):
                logits = self.match_logits(texts, images)
            rows.append(logits.softmax(-1)[:, 1].reshape(chunk.shape[0], n_texts))
        return torch.cat(rows)

    @torch.no_grad()
    def itm_scores(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   batch: dict[str, Any] | None = None) -> torch.Tensor:
        """Match probability of each (image i, report i) pair: (B,) in [0, 1] (``batch`` carries ARL's entities)."""
        batch = {**(batch or {}), "input_ids": input_ids, "attention_mask": attention_mask}
        with running_statistics(self.parts.itm_head):
            logits = self.match_logits(self.text_side(batch), self.image_tokens(images))
        return logits.softmax(-1)[:, 1]

    # ------------------------------------------------------------------ downstream heads
    def diagnosis_head(self, num_labels: int | None = None) -> nn.Module:
        """Diagnosis from the fused pooled output of the image and the empty report
        (:class:`model.coattention_heads.FusedDiagnosisHead`)."""
        from model.coattention_heads import FusedDiagnosisHead

        return FusedDiagnosisHead(self, num_labels)

    def vqa_head(self, num_answers: int) -> nn.Module:
        """Answer classification from the fused pooled output of the image and the question
        (:class:`model.coattention_heads.FusedVQAHead`)."""
        from model.coattention_heads import FusedVQAHead

        return FusedVQAHead(self, num_answers)

    # ------------------------------------------------------------------ bookkeeping
    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component (``image_encoder``, ``text_encoder``, then each existing part)."""
        counts = {"image_encoder": sum(p.numel() for p in self.image_encoder.parameters()),
                  "text_encoder": sum(p.numel() for p in self.text_encoder.parameters())}
        counts.update(self.parts.parameter_counts())
        counts["trainable"] = sum(p.numel() for p in self.parameters())
        return counts

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` (with the method name), ``model.safetensors``, the tokenizer and,
        for ARL, the entity vocabulary (``entities.txt``); atomic."""
        names = self.entity_names
        extra = {ENTITIES_FILE: "".join(f"{name}\n" for name in names)} if names is not None else None
        return save_pretrained(self, directory, extra_files=extra)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> M3AEModel:
        """Load a model written by :meth:`save_pretrained` (safetensors only; nothing is unpickled)."""
        from model.tokenizer import load_tokenizer

        directory = Path(directory)
        config = saved_config(directory)
        names = read_entity_names(directory / ENTITIES_FILE) if (directory / ENTITIES_FILE).is_file() else None
        # The saved weights already hold the entity vectors: do not read kg embed output again.
        config = config.with_parts(knowledge={"embeddings": None})
        model = cls(config, load_tokenizer(directory), entity_names=names)
        return load_saved_weights(model, directory, map_location)


class ARLModel(M3AEModel):
    """ARL: :class:`M3AEModel` whose config switches on AK (Eq. 10–14), RK (Eq. 15–17) and LK."""


def read_entity_names(path: str | Path) -> list[str]:
    """An entity vocabulary file: one name per line, blank lines skipped.

    Raises:
        InputError: the file is missing or names no entity.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("entity vocabulary file not found", file=path, field="entities_file")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise InputError("the entity vocabulary file names no entity", file=path, field="entities_file")
    return names


def build_model(config: M3AEConfig, tokenizer: Any, entity_names: list[str] | None = None) -> M3AEModel:
    """Build M3AE and load the local pretrained weights named in ``config`` (see :func:`_build`)."""
    return _build(M3AEModel, config, tokenizer, entity_names)


def build_arl(config: M3AEConfig, tokenizer: Any, entity_names: list[str] | None = None) -> ARLModel:
    """Build ARL and load the local pretrained weights named in ``config`` (see :func:`_build`)."""
    return _build(ARLModel, config, tokenizer, entity_names)


def _build(model_class: type[M3AEModel], config: M3AEConfig, tokenizer: Any,
           entity_names: list[str] | None) -> M3AEModel:
    """Build the model and load the local pretrained weights named in ``config``.

    With ``text_model_dir`` the checkout's sizes replace the ``text_*`` fields and its weights
    initialise E_t; with ``image_weights`` the ViT is initialised from that file.

    Raises:
        MissingResourceError: a local weight file or directory named in ``config`` is absent.
    """
    bert = LocalBert(config.text_model_dir) if config.text_model_dir else None
    if bert is not None:
        config = config.replace(**bert.sizes())
    model = model_class(config, tokenizer, entity_names)
    if bert is not None:
        bert.initialise(model.text_encoder)
    if config.image_weights:
        model.image_encoder.load_weights(config.image_weights)
    return model
