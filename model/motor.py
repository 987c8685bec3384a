"""MOTOR (the paper's Fig. 8): BLIP's image-text pretraining with general and specific knowledge.

One training step, top to bottom as :meth:`MotorModel.forward` runs it:

1. E_v encodes the image → f_v (B, 1 + P, vision_width).
2. GK path (``gk``): E_gk encodes the 28-node graph → f_gk (N, text_width) (Eq. 1–2), and
   E_{gk→v} lets the image attend to it → f_v^gk (Eq. 5).
3. E_t encodes the report → f_t; the momentum encoders give f_t' and the batch's reports enter
   the report queue Q together with their SK sentences (token ids, never text).
4. SK path (``sk``): the image's [CLS] feature (f_v^gk, or f_v without GK) retrieves its top-k
   reports from Q by inner product (``kg.retrieval.knn``); E_sk encodes the retrieved SK sentences
   from their queued token ids in one batched pass, each distinct report once → f_sk (Eq. 3–4),
   and E_{sk→v} lets the image attend to the k encodings laid end to end (``sk_fusion: concat``)
   or to their sum weighted by softmax of the retrieval scores (``weighted_sum``, the reference
   code's choice) → f_v^sk (Eq. 6).
5. The momentum encoders give the image's ITC targets f_v'. As in the MOTOR reference code they
   reuse the online f_gk and f_sk and the online E_{sk→v} without gradient (only E_v, E_{gk→v},
   E_t and the projections have momentum copies); ``momentum_knowledge`` gives every knowledge
   module a momentum copy instead.
6. The knowledge-enhanced image tokens (f_v, f_v^gk, f_v^sk or f_v^{gk→sk}) feed ITC (Eq. 10–11),
   ITM (Eq. 12–13) and LM (Eq. 14); with ``full``, f_v^gk is also scored against the 14 label
   prompts encoded by E_t (MLC, Eq. 7–9).

Retrieval while training. The batch's own reports are enqueued *before* retrieval, so from the
first step the candidates are the queue including the current batch (all processes' batches
under DDP). A sample never retrieves its own study: entries with its dataset ``index`` are
excluded (its SK sentence is drawn from the very report it must match and describe, and the
same study returns to the queue every epoch). Entries without an SK sentence are never
retrieved. If fewer than k candidates remain (tiny batches in the first steps, or an empty
queue at inference), the missing slots are masked and the image attends to E_{sk→v}'s learned
"no knowledge" token, which is always present.

Total loss (Eq. 15): ``itc_weight·L_itc + itm_weight·L_itm + lm_weight·L_lm + mlc_weight·L_mlc``.

MIM (``mim`` in ``config.objectives``, off by default): a separate pass of E_v's ViT sees only the
25 % visible patches (:func:`model.masking.encode_visible_patches`), M3AE's
:class:`model.pretraining_heads.MIMDecoder` reconstructs the masked patches' normalised pixels and
``mim_weight·L_mim`` (MSE on the masked patches) joins the total. ITC, ITM, LM and MLC stay on the
unmasked pass above. Off, the decoder does not exist and the step is exactly MOTOR's.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kg.errors import InputError
from model.config import MotorConfig
from model.coattention_config import MIMConfig
from model.encoders import (
    ImageEncoder,
    LocalBert,
    build_text_decoder,
    build_text_encoder,
    text_config,
    tie_decoder_to_encoder,
)
from model.knowledge import (
    GKEncoder,
    GKImageEncoder,
    LabelScorer,
    RetrievedKnowledge,
    SKEncoder,
    SKImageEncoder,
    retrieve_knowledge,
)
from model.losses import (
    ContrastiveLoss,
    LanguageModelingLoss,
    MaskedImageModelingLoss,
    MatchingLoss,
    MultiLabelLoss,
    sample_hard_negatives,
)
from model.masking import encode_visible_patches, patchify, random_patch_mask
from model.pretrained import load_saved_weights, save_pretrained, saved_config
from model.pretraining_heads import MIMDecoder
from model.queues import FeatureQueue
from model.tokenizer import special_token_ids

#: Modules with an exponential-moving-average copy (BLIP's momentum encoders), when they exist.
MOMENTUM_MODULES = (
    "image_encoder", "gk_encoder", "gk_image_encoder", "sk_encoder", "sk_image_encoder", "vision_proj",
    "text_encoder", "text_proj",
)
#: Knowledge modules whose momentum copy exists only with ``config.momentum_knowledge``; without it
#: the momentum path reuses the online f_gk and f_sk and the online E_{sk→v} (no gradient).
SHARED_KNOWLEDGE_MODULES = ("gk_encoder", "sk_encoder", "sk_image_encoder")


@dataclass
class MotorOutput:
    """Result of a training forward pass: the weighted total and each unweighted objective."""

    loss: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)


class MotorModel(nn.Module):
    """MOTOR with knowledge switches; see the module docstring for the data flow.

    Build it with :func:`build_model` (which also loads local pretrained weights) or
    :meth:`from_pretrained`. Attributes a user touches: ``config``, ``tokenizer``,
    ``token_ids`` (special token ids), the encoders named in :data:`MOMENTUM_MODULES`,
    ``text_decoder``, ``itm_head``, and the queues ``itc_queue`` / ``report_queue``.
    """

    def __init__(self, config: MotorConfig, tokenizer: Any) -> None:
        super().__init__()
        from kg.gk import load_gk
        from kg.label_schema import load_chexpert_classes

        self.config = config
        self.tokenizer = tokenizer
        self.token_ids = special_token_ids(tokenizer)
        vocab_size = len(tokenizer)
        text_cfg = text_config(config, vocab_size, self.token_ids)

        self.image_encoder = ImageEncoder(config)
        if config.uses_gk:
            graph = load_gk(config.gk_graph)
            self.gk_encoder = GKEncoder(
                graph, config.text_width, config.gk_layers, config.gk_heads, config.dropout, config.gk_intermediate
            )
            self.gk_image_encoder = GKImageEncoder(
                config.vision_width, config.text_width, config.gk_image_layers, config.knowledge_heads, config.dropout,
                config.knowledge_intermediate, config.cross_final_norm,
            )
            self._node_token_ids = tokenizer(graph.node_words(), add_special_tokens=False)["input_ids"]
        if config.uses_sk:
            sk_cfg = text_config(config, vocab_size, self.token_ids, layers=config.sk_layers, cross_attention=False)
            self.sk_encoder = SKEncoder(build_text_encoder(sk_cfg), config.sk_fusion)
            self.sk_image_encoder = SKImageEncoder(
                config.vision_width, config.text_width, config.sk_image_layers, config.knowledge_heads, config.dropout,
                config.knowledge_intermediate, config.cross_final_norm,
            )
        self.vision_proj = nn.Linear(config.vision_width, config.embed_dim)
        self.text_encoder = build_text_encoder(text_cfg)
        self.text_proj = nn.Linear(config.text_width, config.embed_dim)
        self.itm_head = nn.Linear(config.text_width, 2)
        self.text_decoder = build_text_decoder(text_cfg)
        if config.tie_decoder:
            tie_decoder_to_encoder(self.text_decoder, self.text_encoder)
        self.temp = nn.Parameter(torch.tensor(config.temperature))
        if config.uses_mlc:
            self.label_scorer = LabelScorer()
            prompts = [c.prompt for c in load_chexpert_classes(config.labels_file)]
            labels = tokenizer(prompts, padding="longest", truncation=True, max_length=config.max_text_len, return_tensors="pt")
            # Label prompts are fixed: tokenised once here, encoded every step (E_t changes).
            self.register_buffer("label_input_ids", labels["input_ids"], persistent=False)
            self.register_buffer("label_attention_mask", labels["attention_mask"], persistent=False)
            self.mlc_loss = MultiLabelLoss(config.uncertain, config.unmentioned)
        if config.uses_mim:
            mim = MIMConfig()  # M3AE's decoder sizes, mask ratio and pixel normalisation
            self.mim_decoder = MIMDecoder(
                config.vision_width, config.num_patches, config.patch_size ** 2 * config.in_chans,
                mim.decoder_width, mim.decoder_layers, mim.decoder_heads,
            )
            self.mim_loss = MaskedImageModelingLoss(mim.normalise_pixels)
            self.mim_ratio = mim.ratio

        self.itc_loss = ContrastiveLoss()
        self.itm_loss = MatchingLoss()
        self.lm_loss = LanguageModelingLoss(config.label_smoothing)
        self.itc_queue = FeatureQueue(config.queue_size, {
            "image": ((config.embed_dim,), torch.float32),
            "text": ((config.embed_dim,), torch.float32),
            "index": ((), torch.long),
        })
        if config.uses_sk:
            self.report_queue = FeatureQueue(config.sk_queue_size, {
                "feature": ((config.embed_dim,), torch.float32),
                "sk_ids": ((config.sk_max_len,), torch.int32),
                "sk_mask": ((config.sk_max_len,), torch.bool),
                "has_sk": ((), torch.bool),
                "index": ((), torch.long),
            })
        self.init_node_embeddings()
        self.momentum = nn.ModuleDict()
        self.reset_momentum()

    # ------------------------------------------------------------------ set-up
    def init_node_embeddings(self) -> None:
        """Initialise the GK node table e_w from the report encoder's word embeddings (no-op without GK)."""
        if self.config.uses_gk:
            self.gk_encoder.init_word_embeddings(self.text_encoder.embeddings.word_embeddings, self._node_token_ids)

    def reset_momentum(self) -> None:
        """Make the momentum encoders exact, frozen copies of the online ones."""
        shared = () if self.config.momentum_knowledge else SHARED_KNOWLEDGE_MODULES
        for name in MOMENTUM_MODULES:
            if hasattr(self, name) and name not in shared:
                self.momentum[name] = copy.deepcopy(getattr(self, name)).requires_grad_(False)

    @torch.no_grad()
    def _momentum_update(self) -> None:
        online, shadow = [], []
        for name, module in self.momentum.items():
            online.extend(getattr(self, name).parameters())
            shadow.extend(module.parameters())
        # θ_m ← m·θ_m + (1 − m)·θ, fused over all tensors as optimisers do.
        torch._foreach_lerp_(shadow, online, 1.0 - self.config.momentum)

    # ------------------------------------------------------------------ image path
    def retrieve_knowledge(self, queries: torch.Tensor, exclude_index: torch.Tensor | None = None) -> RetrievedKnowledge:
        """Top-k SK sentences of the report queue for ``queries`` (B, embed_dim); see :func:`model.knowledge.retrieve_knowledge`."""
        return retrieve_knowledge(self.report_queue, queries, self.config.sk_top_k, exclude_index)

    def _enqueue_reports(self, features: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        ids, mask = batch["sk_input_ids"], batch["sk_attention_mask"].bool()
        width = self.config.sk_max_len
        if ids.shape[1] > width:
            raise InputError(f"SK sentences of {ids.shape[1]} tokens exceed sk_max_len {width}", field="sk_input_ids")
        padded_ids = ids.new_full((ids.shape[0], width), self.token_ids["pad"])
        padded_ids[:, : ids.shape[1]] = ids
        padded_mask = mask.new_zeros((mask.shape[0], width))
        padded_mask[:, : mask.shape[1]] = mask
        self.report_queue.enqueue(
            feature=features, sk_ids=padded_ids, sk_mask=padded_mask,
            has_sk=mask.sum(1) > 2,  # more than [CLS] [SEP]
            index=batch["index"],
        )

    # ------------------------------------------------------------------ training
    def forward(self, batch: dict[str, torch.Tensor], alpha: float | None = None) -> MotorOutput:
        """One pretraining step's losses.

        Args:
            batch: from :class:`model.processing.MotorCollator` (``image`` (B, C, H, W),
                ``input_ids``/``attention_mask`` (B, L), ``sk_input_ids``/``sk_attention_mask``
                (B, L_sk), ``labels`` (B, 14), ``index`` (B,)); B ≥ 2 (ITM needs negatives).
            alpha: distillation weight (default ``config.alpha``).

        Returns:
            :class:`MotorOutput` with ``losses`` keys ``itc``, ``itm``, ``lm`` and, with
            ``full``, ``mlc``, and ``mim`` when it is an objective. Updates the momentum encoders
            and the queues.
        """
        cfg = self.config
        alpha = cfg.alpha if alpha is None else alpha
        images, input_ids, attention_mask, index = (
            batch["image"], batch["input_ids"], batch["attention_mask"], batch["index"]
        )
        if images.shape[0] < 2:
            raise InputError("a training batch needs at least 2 samples (ITM draws negatives from the batch)", field="image")
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)

        nodes = self.gk_encoder() if cfg.uses_gk else None  # f_gk, Eq. 1–2
        gk_tokens = gk_stage(self, images, nodes)
        gk_feats = project_image(self, gk_tokens)
        text_feats = project_text(self, input_ids, attention_mask)

        with torch.no_grad():
            self._momentum_update()
            text_feats_m = project_text(self.momentum, input_ids, attention_mask)
            knowledge = None
            if cfg.uses_sk:
                self._enqueue_reports(text_feats_m, batch)
                knowledge = self.retrieve_knowledge(gk_feats, exclude_index=index)
        sk_feats = encode_sk(self, knowledge)  # f_sk, Eq. 3–4
        image_tokens = sk_stage(self, gk_tokens, knowledge, sk_feats)
        image_feats = project_image(self, image_tokens) if cfg.uses_sk else gk_feats

        with torch.no_grad():
            image_feats_m = project_image(self.momentum, self._momentum_image_tokens(images, nodes, knowledge, sk_feats))

        losses = {}
        losses["itc"], sim_i2t, sim_t2i = self.itc_loss(
            image_feats, text_feats, image_feats_m, text_feats_m, self.itc_queue.entries("image"),
            self.itc_queue.entries("text"), index, self.itc_queue.entries("index"), self.temp, alpha,
        )
        losses["itm"] = self._matching_loss(image_tokens, input_ids, attention_mask, sim_i2t, sim_t2i, index)
        losses["lm"] = self._lm_loss(image_tokens, input_ids, attention_mask)
        if cfg.uses_mlc:
            label_feats = project_text(self, self.label_input_ids, self.label_attention_mask)  # Eq. 7
            losses["mlc"] = self.mlc_loss(self.label_scorer(gk_feats, label_feats), batch["labels"])  # Eq. 8–9
        if cfg.uses_mim:
            losses["mim"] = self._mim_loss(images)
        self.itc_queue.enqueue(image=image_feats_m, text=text_feats_m, index=index)

        weights = {"itc": cfg.itc_weight, "itm": cfg.itm_weight, "lm": cfg.lm_weight, "mlc": cfg.mlc_weight,
                   "mim": cfg.mim_weight}
        total = sum(weights[name] * value for name, value in losses.items())  # Eq. 15
        return MotorOutput(loss=total, losses=losses)

    def _momentum_image_tokens(
        self,
        images: torch.Tensor,
        nodes: torch.Tensor | None,
        knowledge: RetrievedKnowledge | None,
        sk_feats: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        """The momentum encoders' knowledge-enhanced image tokens (B, 1 + P, vision_width); call without gradient.

        With ``momentum_knowledge`` every knowledge module has its own momentum copy. Without it
        (the reference code's choice) the online f_gk (``nodes``) and f_sk (``sk_feats``) are
        reused and the online E_{sk→v} attends from the momentum image tokens: E_gk and E_sk run
        once per step instead of twice, and three modules need no EMA copy.
        """
        if self.config.momentum_knowledge:
            return sk_stage(self.momentum, gk_stage(self.momentum, images), knowledge)
        tokens = gk_stage(self.momentum, images, nodes)
        return sk_stage(self, tokens, knowledge, sk_feats)

    def _matching_loss(self, image_tokens, input_ids, attention_mask, sim_i2t, sim_t2i, index) -> torch.Tensor:
        batch = input_ids.shape[0]
        negative_text, negative_image = sample_hard_negatives(sim_i2t, sim_t2i, index)
        # Matched pairs, then each text with a hard-negative image, then each image with a hard-negative text.
        ids = torch.cat([input_ids, input_ids, input_ids[negative_text]])
        masks = torch.cat([attention_mask, attention_mask, attention_mask[negative_text]])
        images = torch.cat([image_tokens, image_tokens[negative_image], image_tokens])
        logits = self.itm_head(grounded_text_features(self.text_encoder, self.token_ids['enc'], ids, masks, images))  # Eq. 12
        return self.itm_loss(logits, batch)  # Eq. 13

    def _mim_loss(self, images: torch.Tensor) -> torch.Tensor:
        """MIM on a separate masked pass of E_v's ViT over (B, C, H, W) images (module docstring)."""
        # One generator per step, seeded from the global RNG: masks follow the run's seed.
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
        patches = random_patch_mask(images.shape[0], self.config.num_patches, self.mim_ratio, generator, images.device)
        visible = encode_visible_patches(self.image_encoder.vit, images, patches.keep)
        prediction = self.mim_decoder(visible, patches.restore)
        return self.mim_loss(prediction, patchify(images, self.config.patch_size), patches.mask)

    def _lm_loss(self, image_tokens, input_ids, attention_mask) -> torch.Tensor:
        ids = input_ids.clone()
        ids[:, 0] = self.token_ids["dec"]
        logits = self.text_decoder(
            input_ids=ids, attention_mask=attention_mask, encoder_hidden_states=image_tokens
        ).logits
        return self.lm_loss(logits, ids, attention_mask)  # Eq. 14

    # ------------------------------------------------------------------ inference
    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """Knowledge-enhanced image tokens (f_v, f_v^gk, f_v^sk or f_v^{gk→sk}): (B, 1 + P, vision_width).

        With the SK path, each image retrieves its top-k reports from the report queue as it stands
        (no exclusion); an empty queue leaves only the "no knowledge" token.
        """
        return enhanced_image_tokens(self, images, getattr(self, "report_queue", None), self.config.sk_top_k)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalised images → (B, embed_dim) L2-normalised ITC image features."""
        return project_image(self, self.image_embeddings(images))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ``[CLS] report [SEP]`` ids and mask → (B, embed_dim) L2-normalised ITC text features."""
        return project_text(self, input_ids, attention_mask)

    def itm_scores(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Match probability of each (image i, report i) pair: (B,) in [0, 1]."""
        tokens = self.image_embeddings(images)
        logits = self.itm_head(grounded_text_features(self.text_encoder, self.token_ids["enc"], input_ids, attention_mask, tokens))
        return logits.softmax(dim=-1)[:, 1]

    def generate(
        self,
        images: torch.Tensor,
        max_length: int = 60,
        min_length: int = 1,
        num_beams: int = 1,
        repetition_penalty: float = 1.0,
    ) -> list[str]:
        """Write a report for each image: greedy (``num_beams=1``) or beam search; see :mod:`model.generation`."""
        from model.generation import generate_reports

        with torch.no_grad():
            tokens = self.image_embeddings(images)
        return generate_reports(
            self.text_decoder, self.tokenizer, tokens, self.token_ids, max_length=max_length,
            min_length=min_length, num_beams=num_beams, repetition_penalty=repetition_penalty,
        )

    @torch.no_grad()
    def gk_attention(self, images: torch.Tensor) -> dict[str, Any]:
        """Attention between image tokens and GK nodes in E_{gk→v}'s last block (the paper's Fig. 3).

        Returns:
            ``image_to_nodes`` (B, heads, 1 + P, N): how each image token ([CLS] first) spreads its
            attention over the nodes (rows sum to 1); ``node_to_patches`` (B, heads, N, P): for
            each node, the attention it receives from each patch, normalised over patches (a
            heat map per node); ``node_ids``: the N node ids in order.
        """
        if not self.config.uses_gk:
            raise InputError(f"knowledge {self.config.knowledge!r} has no GK path", field="knowledge")
        tokens = self.image_encoder(images)
        nodes = self.gk_encoder()
        _, maps = self.gk_image_encoder(tokens, nodes.unsqueeze(0).expand(tokens.shape[0], -1, -1), return_attention=True)
        image_to_nodes = maps[-1]
        received = image_to_nodes[:, :, 1:, :].transpose(-1, -2)
        node_to_patches = received / received.sum(-1, keepdim=True).clamp_min(torch.finfo(received.dtype).tiny)
        return {"image_to_nodes": image_to_nodes, "node_to_patches": node_to_patches, "node_ids": list(self.gk_encoder.node_ids)}

    # ------------------------------------------------------------------ bookkeeping
    def parameter_counts(self) -> dict[str, int]:
        """Parameters per top-level component, each shared tensor counted once (at its first owner).

        Keys are the component names present (``image_encoder``, ``gk_encoder``, ...,
        ``text_decoder`` — its own, untied part —, ``temp``), ``momentum`` (the frozen EMA copies)
        and ``trainable`` (everything but ``momentum``).
        """
        counts: dict[str, int] = {}
        for name, parameter in self.named_parameters():
            component = name.split(".")[0]
            counts[component] = counts.get(component, 0) + parameter.numel()
        counts["trainable"] = sum(v for k, v in counts.items() if k != "momentum")
        return counts

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors`` (queues included) and the tokenizer; atomic."""
        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> MotorModel:
        """Load a model written by :meth:`save_pretrained` (safetensors only; nothing is unpickled)."""
        from model.tokenizer import load_tokenizer

        model = cls(saved_config(directory), load_tokenizer(directory))
        return load_saved_weights(model, directory, map_location)


# ---------------------------------------------------------------------------- the image path
# Functions of "towers" (the model itself, its momentum copies, or a task head's ModuleDict) so the
# online encoders, the momentum encoders and the downstream heads run the same composition.
def gk_stage(towers: nn.Module, images: torch.Tensor, nodes: torch.Tensor | None = None) -> torch.Tensor:
    """f_v (B, 1 + P, vision_width), or f_v^gk when ``towers`` has the GK path.

    ``nodes``: f_gk (N, text_width) already computed (the momentum path reuses the online one);
    by default ``towers.gk_encoder`` computes it.
    """
    tokens = towers.image_encoder(images)
    if hasattr(towers, "gk_image_encoder"):
        if nodes is None:
            nodes = towers.gk_encoder()  # f_gk, Eq. 1–2
        tokens = towers.gk_image_encoder(tokens, nodes.unsqueeze(0).expand(tokens.shape[0], -1, -1))  # Eq. 5
    return tokens


def encode_sk(towers: nn.Module, knowledge: RetrievedKnowledge | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """f_sk and its padding mask for the retrieved SK sentences (Eq. 3–4): (B, k·L, text_width) and
    (B, k·L) with ``sk_fusion: concat``, (B, L, text_width) and (B, L) with ``weighted_sum``."""
    if knowledge is None:
        return None
    return towers.sk_encoder(knowledge.ids, knowledge.mask, knowledge.slots, knowledge.scores)


def sk_stage(
    towers: nn.Module,
    tokens: torch.Tensor,
    knowledge: RetrievedKnowledge | None,
    sk_feats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """f_v^sk (or f_v^{gk→sk}) from image tokens and retrieved SK sentences; identity without knowledge.

    ``sk_feats``: :func:`encode_sk`'s result when already computed; by default ``towers`` encodes.
    """
    if knowledge is None:
        return tokens
    sk_tokens, padding = sk_feats if sk_feats is not None else encode_sk(towers, knowledge)
    return towers.sk_image_encoder(tokens, sk_tokens.to(tokens.dtype), padding)  # Eq. 6


def project_image(towers: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """(B, T, vision_width) tokens → (B, embed_dim) L2-normalised [CLS] projection."""
    return F.normalize(towers.vision_proj(tokens[:, 0]), dim=-1)


def project_text(towers: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) report ids → (B, embed_dim) L2-normalised E_t [CLS] projection."""
    hidden = towers.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return F.normalize(towers.text_proj(hidden[:, 0]), dim=-1)


def enhanced_image_tokens(
    towers: nn.Module, images: torch.Tensor, report_queue: FeatureQueue | None, top_k: int
) -> torch.Tensor:
    """The knowledge-enhanced image tokens at inference (retrieval without exclusion)."""
    tokens = gk_stage(towers, images)
    if hasattr(towers, "sk_encoder"):
        knowledge = retrieve_knowledge(report_queue, project_image(towers, tokens), top_k)
        tokens = sk_stage(towers, tokens, knowledge)
    return tokens


def grounded_text_features(
    text_encoder: nn.Module, enc_token_id: int, input_ids: torch.Tensor, attention_mask: torch.Tensor,
    image_tokens: torch.Tensor,
) -> torch.Tensor:
    """E_{v→t}: the text, led by [ENC] instead of [CLS], attending to the image → (B, text_width)."""
    ids = input_ids.clone()
    ids[:, 0] = enc_token_id
    hidden = text_encoder(input_ids=ids, attention_mask=attention_mask, encoder_hidden_states=image_tokens).last_hidden_state
    return hidden[:, 0]


def without_knowledge(model: MotorModel) -> MotorModel:
    """The same MOTOR without its GK and SK paths: plain BLIP (``knowledge: none``) with ``model``'s weights.

    E_v, the text stacks, the projections, the ITM head, the momentum copies of those and the ITC
    queue keep their trained weights; the knowledge modules, their momentum copies, the report
    queue and the MLC scorer are left out. This is how the reference code finetunes (its
    retrieval, generation, diagnosis and VQA models have no knowledge modules).
    """
    plain = MotorModel(model.config.replace(knowledge="none"), model.tokenizer)
    own = model.state_dict()
    wanted = plain.state_dict()
    plain.load_state_dict({name: own[name] for name in wanted}, strict=True)
    return plain.to(next(model.parameters()).device)


def build_model(config: MotorConfig, tokenizer: Any) -> MotorModel:
    """Build MOTOR and load the local pretrained weights named in ``config``.

    With ``text_model_dir`` the checkout's sizes replace the ``text_*`` fields (``model.config``
    records them) and its weights initialise E_t, the decoder and E_sk; with ``image_weights`` the
    ViT is initialised from that file. The momentum encoders start as copies of the result.

    Raises:
        MissingResourceError: a local weight file or directory named in ``config`` is absent.
        InputError: ``tokenizer`` is not the ``text_model_dir`` checkout's own (its word-embedding
            rows would be paired with other words).
    """
    bert = LocalBert(config.text_model_dir) if config.text_model_dir else None
    if bert is not None:
        bert.check_tokenizer(tokenizer)
        config = config.replace(**bert.sizes())
    model = MotorModel(config, tokenizer)
    if bert is not None:
        bert.initialise(model.text_encoder)
        bert.initialise(model.text_decoder.bert)
        if config.uses_sk:
            bert.initialise(model.sk_encoder.encoder)
    if config.image_weights:
        model.image_encoder.load_weights(config.image_weights)
    model.init_node_embeddings()
    model.reset_momentum()
    return model

