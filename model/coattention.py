"""The co-attention parts of M3AE and ARL, built from one :class:`CoAttentionConfig`.

:class:`CoAttentionParts` owns exactly the modules its switches ask for, so a part that is off
has no parameters (and, with no module to call, does no work):

==================  ===========================================  ==========================
attribute           what                                         exists when
==================  ===========================================  ==========================
``fusion``          :class:`model.fusion.CoAttentionFusion`      always
``itm_head``        :class:`PairMatchingHead` (ITM)              always
``entity_table``    :class:`model.arl_knowledge.EntityTable`     ``knowledge.ak or rk``
(in ``fusion``)     ``knowledge_blocks`` (RK, Eq. 15–17)         ``knowledge.rk``
``alignment_head``  :class:`KnowledgeAlignmentHead` (AK)         ``knowledge.ak``
``mlm_head``        :class:`MaskedLanguageModelingHead`          ``mlm.enabled``
``mim_decoder``     :class:`MIMDecoder`                          ``mim.enabled``
``token_masker``    :class:`model.masking.TokenMasker`           ``mlm.enabled`` (no parameters;
                                                                 LK uses its whole-span mode)
==================  ===========================================  ==========================

The uni-modal encoders, hard-negative sampling and the training step belong to the method that
composes these parts.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn

from kg.errors import InputError
from model.arl_knowledge import EntityTable, build_knowledge_blocks
from model.coattention_config import CoAttentionConfig
from model.fusion import CoAttentionFusion
from model.masking import TokenMasker
from model.pretraining_heads import (
    KnowledgeAlignmentHead,
    MaskedLanguageModelingHead,
    MIMDecoder,
    PairMatchingHead,
)


class CoAttentionParts(nn.Module):
    """Fusion, heads and entity table of a co-attention method (module docstring).

    Args:
        config: the switches and sizes.
        text_width / vision_width: widths of the uni-modal encoders' outputs.
        word_embeddings: the text encoder's word embeddings (the MLM head's tied output matrix).
        special_ids: token ids MLM never chooses (``model.tokenizer.special_token_ids(...).values()``).
        mask_id: id of ``[MASK]``.
        num_patches / patch_dim: image patches and pixels per patch (``patch_size² · channels``).
        entity_names: the entity vocabulary, needed when ``knowledge.ak`` or ``knowledge.rk`` is on;
            its vectors come from ``knowledge.embeddings`` when set.
    """

    def __init__(
        self,
        config: CoAttentionConfig,
        *,
        text_width: int,
        vision_width: int,
        word_embeddings: nn.Embedding,
        special_ids: Iterable[int],
        mask_id: int,
        num_patches: int,
        patch_dim: int,
        entity_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        knowledge, fusion = config.knowledge, config.fusion
        if knowledge.uses_entities:
            if not entity_names:
                raise InputError("knowledge alignment (ak) and reasoning (rk) need the entity vocabulary",
                                 field="entities")
            self.entity_table = EntityTable(entity_names, knowledge.entity_dim)
            if knowledge.embeddings is not None:
                self.entity_table.load_embeddings(knowledge.embeddings, knowledge.embedding_kind)
        blocks = None
        if knowledge.rk:
            blocks = build_knowledge_blocks(fusion.layers, fusion.width, knowledge.entity_dim, knowledge.entity_heads,
                                            knowledge.entity_intermediate, knowledge.dropout)
        self.fusion = CoAttentionFusion(fusion, text_width, vision_width, blocks)
        self.itm_head = PairMatchingHead(fusion.width)
        if knowledge.ak:
            self.alignment_head = KnowledgeAlignmentHead(vision_width, text_width, knowledge.entity_dim)
        if config.mlm.enabled:
            self.mlm_head = MaskedLanguageModelingHead(fusion.width, word_embeddings)
            self.token_masker = TokenMasker(mask_id, word_embeddings.num_embeddings, special_ids,
                                            config.mlm.probability)
        if config.mim.enabled:
            mim = config.mim
            self.mim_decoder = MIMDecoder(fusion.width, num_patches, patch_dim, mim.decoder_width, mim.decoder_layers,
                                          mim.decoder_heads)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per existing part (``fusion``, ``entity_table``, ...).

        The MLM head's tied word embeddings are not counted: they belong to the text encoder.
        """
        tied = {id(p) for p in self.mlm_head.word_embeddings.parameters()} if hasattr(self, "mlm_head") else set()
        return {
            name: sum(p.numel() for p in module.parameters() if id(p) not in tied)
            for name, module in self.named_children()
        }
