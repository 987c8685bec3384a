"""MLM, MIM and knowledge alignment (AK): each through the same checks, then its own.

Every objective is set up on a small learnable problem (a fixed batch it can fit) and must give a
finite scalar with gradients into its head, the same value for the same seed, and a loss that
falls within a few dozen CPU steps.
"""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from model_cases import one_torch_thread
from torch import nn

from model.arl_knowledge import EntityTable, entity_targets
from model.coattention_config import FusionConfig
from model.fusion import CoAttentionFusion
from model.losses import KnowledgeAlignmentLoss, MaskedImageModelingLoss, MaskedLanguageModelingLoss
from model.masking import IGNORE_INDEX, TokenMasker, patchify, random_patch_mask
from model.pretraining_heads import KnowledgeAlignmentHead, MaskedLanguageModelingHead, MIMDecoder

FUSION = FusionConfig(width=32, layers=2, heads=2, intermediate=64, dropout=0.0)
VOCAB, TEXT_WIDTH, PATCH, SIDE = 60, 24, 8, 32  # 16 patches of 8 x 8 x 3 pixels
PATCH_DIM = PATCH * PATCH * 3


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_torch_thread()


class Problem(nn.Module):
    """A trainable model and the loss of one fixed batch (``loss()``)."""

    head: nn.Module
    loss: Callable[[], torch.Tensor]


class MLMProblem(Problem):
    """Fusion + tied MLM head predict the masked tokens of fixed reports next to fixed images."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.embeddings = nn.Embedding(VOCAB, TEXT_WIDTH)
        self.positions = nn.Parameter(torch.randn(1, 16, TEXT_WIDTH) * 0.02)
        self.fusion = CoAttentionFusion(FUSION, TEXT_WIDTH, 20)
        self.head = MaskedLanguageModelingHead(FUSION.width, self.embeddings)
        ids = torch.randint(5, VOCAB, (6, 16), generator=generator)
        ids[:, 0], ids[:, -1] = 2, 3
        self.mask = torch.ones_like(ids)
        self.masked = TokenMasker(4, VOCAB, range(5), 0.3).random(ids, self.mask, generator)
        self.image = torch.randn(6, 5, 20, generator=generator)
        self.objective = MaskedLanguageModelingLoss()

    def loss(self) -> torch.Tensor:
        text = self.embeddings(self.masked.input_ids) + self.positions
        fused = self.fusion(text, self.mask, self.image).text
        chosen = self.masked.labels != IGNORE_INDEX
        return self.objective(self.head(fused[chosen]), self.masked.labels[chosen])


class MIMProblem(Problem):
    """Visible patches → fusion → MIM decoder reconstruct the masked patches of fixed images.

    The images are one smooth pattern plus a little noise, so a masked patch is predictable from
    its position and its visible neighbours (white noise would leave nothing to learn).
    """

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        grid = torch.linspace(0, 3.14, SIDE)
        pattern = torch.stack([torch.sin(grid[:, None] * (c + 1)) * torch.cos(grid[None, :] * (3 - c))
                               for c in range(3)])
        self.images = pattern + 0.05 * torch.randn(4, 3, SIDE, SIDE, generator=generator)
        self.patches = patchify(self.images, PATCH)
        self.masking = random_patch_mask(4, 16, 0.75, generator)
        self.patch_embed = nn.Linear(PATCH_DIM, 20)
        self.cls = nn.Parameter(torch.zeros(1, 1, 20))
        self.fusion = CoAttentionFusion(FUSION, TEXT_WIDTH, 20)
        self.head = MIMDecoder(FUSION.width, 16, PATCH_DIM, width=32, layers=1, heads=2)
        self.text = torch.randn(4, 6, TEXT_WIDTH, generator=generator)
        self.objective = MaskedImageModelingLoss()

    def loss(self) -> torch.Tensor:
        keep = self.masking.keep
        visible = self.patches.gather(1, keep.unsqueeze(-1).expand(-1, -1, PATCH_DIM))
        image = torch.cat([self.cls.expand(4, -1, -1), self.patch_embed(visible)], dim=1)
        fused = self.fusion(self.text, torch.ones(4, 6), image)
        prediction = self.head(fused.image_layers[1], self.masking.restore)
        return self.objective(prediction, self.patches, self.masking.mask)


class AKProblem(Problem):
    """Alignment head + entity table predict each report's entity set from fixed [CLS] features."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.table = EntityTable([f"entity {i}" for i in range(20)], 16)
        self.head = KnowledgeAlignmentHead(20, 24, 16)
        self.image_cls = torch.randn(8, 20, generator=generator)
        self.text_cls = torch.randn(8, 24, generator=generator)
        ids = torch.randint(0, 20, (8, 4), generator=generator)
        ids[ids % 3 == 0] = -1
        self.targets = entity_targets(ids, 20)
        self.objective = KnowledgeAlignmentLoss()

    def loss(self) -> torch.Tensor:
        image_logits, text_logits = self.head(self.image_cls, self.text_cls, self.table.weight)
        return self.objective(image_logits, text_logits, self.targets)


class ObjectiveCase:
    """The checks every co-attention objective passes."""

    problem: type[Problem]
    steps = 40
    lr = 3e-3

    def _problem(self, seed: int = 0) -> Problem:
        torch.manual_seed(seed)
        return self.problem()

    def test_loss_is_a_finite_scalar_with_gradients_into_the_head(self):
        problem = self._problem()
        loss = problem.loss()
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in problem.head.parameters())
        assert any(p.grad.abs().sum() > 0 for p in problem.head.parameters())

    def test_same_seed_same_loss(self):
        assert torch.equal(self._problem(3).loss(), self._problem(3).loss())

    def test_loss_falls_on_a_small_learnable_problem(self):
        problem = self._problem()
        optimiser = torch.optim.AdamW(problem.parameters(), lr=self.lr, weight_decay=0.0)
        history = []
        for _ in range(self.steps):
            loss = problem.loss()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            history.append(float(loss.detach()))
        start, end = sum(history[:3]) / 3, sum(history[-3:]) / 3
        assert end < 0.6 * start, (start, end)


class TestMLM(ObjectiveCase):
    problem = MLMProblem


class TestMIM(ObjectiveCase):
    problem = MIMProblem
    steps = 80  # the decoder first learns the pattern's mean, then the positions (40 steps: ~0.5-0.6)


class TestAK(ObjectiveCase):
    problem = AKProblem


# ---------------------------------------------------------------------------- MLM specifics
def test_mlm_head_is_tied_to_the_word_embeddings():
    embeddings = nn.Embedding(VOCAB, TEXT_WIDTH)
    head = MaskedLanguageModelingHead(32, embeddings)
    own = {id(p) for p in head.parameters()} - {id(embeddings.weight)}
    assert sum(p.numel() for p in head.parameters() if id(p) in own) == 32 * TEXT_WIDTH + 3 * TEXT_WIDTH + VOCAB
    MaskedLanguageModelingLoss()(head(torch.randn(5, 32)), torch.randint(0, VOCAB, (5,))).backward()
    assert embeddings.weight.grad is not None and embeddings.weight.grad.abs().sum() > 0
    with torch.no_grad():
        embeddings.weight[7] += 10.0  # moving a word's embedding moves its logit: the very same matrix
    assert not torch.equal(head(torch.ones(1, 32))[0, 7], head.bias[7])


def test_mlm_loss_counts_only_chosen_tokens():
    logits = torch.randn(2, 5, VOCAB)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 1], labels[1, 3] = 7, 9
    loss = MaskedLanguageModelingLoss()(logits, labels)
    expected = F.cross_entropy(torch.stack([logits[0, 1], logits[1, 3]]), torch.tensor([7, 9]))
    assert torch.allclose(loss, expected)
    changed = logits.clone()
    changed[0, 0] += 5.0
    assert torch.equal(MaskedLanguageModelingLoss()(changed, labels), loss)


def test_mlm_loss_without_chosen_tokens_is_zero_not_nan():
    logits = torch.randn(2, 5, VOCAB, requires_grad=True)
    loss = MaskedLanguageModelingLoss()(logits, torch.full((2, 5), IGNORE_INDEX))
    assert loss.item() == 0.0
    loss.backward()


# ---------------------------------------------------------------------------- MIM specifics
def test_mim_loss_covers_only_masked_patches():
    generator = torch.Generator().manual_seed(0)
    masking = random_patch_mask(2, 16, 0.75, generator)
    prediction = torch.randn(2, 16, PATCH_DIM, generator=generator)
    target = torch.randn(2, 16, PATCH_DIM, generator=generator)
    for normalise in (True, False):
        objective = MaskedImageModelingLoss(normalise_pixels=normalise)
        loss = objective(prediction, target, masking.mask)
        visible, hidden = int((~masking.mask[0]).nonzero()[0]), int(masking.mask[0].nonzero()[0])
        changed = target.clone()
        changed[0, visible] = torch.randn(PATCH_DIM) * 10
        assert torch.equal(objective(prediction, changed, masking.mask), loss)
        changed[0, hidden] = torch.randn(PATCH_DIM) * 10
        assert not torch.allclose(objective(prediction, changed, masking.mask), loss)


def test_mim_loss_value():
    prediction, target = torch.randn(1, 4, 6), torch.randn(1, 4, 6)
    mask = torch.tensor([[True, False, True, False]])
    plain = MaskedImageModelingLoss(normalise_pixels=False)(prediction, target, mask)
    expected = ((prediction[0, [0, 2]] - target[0, [0, 2]]) ** 2).mean()
    assert torch.allclose(plain, expected)
    normalised = MaskedImageModelingLoss(normalise_pixels=True)(prediction, target, mask)
    standard = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    assert torch.allclose(normalised, ((prediction[0, [0, 2]] - standard[0, [0, 2]]) ** 2).mean())


def test_mim_decoder_puts_tokens_back_in_patch_order():
    torch.manual_seed(0)
    decoder = MIMDecoder(32, 16, PATCH_DIM, width=32, layers=1, heads=2).eval()
    masking = random_patch_mask(2, 16, 0.75, torch.Generator().manual_seed(0))
    visible = torch.randn(2, 1 + 4, 32)
    out = decoder(visible, masking.restore)
    assert out.shape == (2, 16, PATCH_DIM)
    # Mask tokens differ only by position: the positional embeddings tell them apart.
    hidden = masking.mask[0].nonzero().squeeze(1)
    assert not torch.allclose(out[0, hidden[0]], out[0, hidden[1]])
    # Permuting the visible tokens together with their restore ids changes nothing.
    order = torch.tensor([3, 1, 0, 2])
    keep_position = masking.restore.argsort(1)[:, :4]
    permuted_keep = keep_position[:, order]
    masked_rest = masking.restore.argsort(1)[:, 4:]
    restore = torch.cat([permuted_keep, masked_rest], dim=1).argsort(1)
    permuted = torch.cat([visible[:, :1], visible[:, 1:][:, order]], dim=1)
    assert torch.allclose(decoder(permuted, restore), out, atol=1e-5)


# ---------------------------------------------------------------------------- AK specifics
def test_ak_loss_is_the_sum_of_image_and_text_bce():
    image_logits, text_logits = torch.randn(3, 5), torch.randn(3, 5)
    targets = entity_targets(torch.tensor([[0, 2], [4, -1], [-1, -1]]), 5)

    def bce(logits: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits)
        return -(targets * p.log() + (1 - targets) * (1 - p).log()).mean()

    loss = KnowledgeAlignmentLoss()(image_logits, text_logits, targets)
    assert torch.allclose(loss, bce(image_logits) + bce(text_logits), atol=1e-6)


def test_ak_scores_are_bilinear_in_entity_and_representation():
    torch.manual_seed(0)
    head = KnowledgeAlignmentHead(20, 24, 16)
    entities, image, text = torch.randn(7, 16), torch.randn(2, 20), torch.randn(2, 24)
    image_logits, text_logits = head(image, text, entities)
    assert image_logits.shape == text_logits.shape == (2, 7)
    # p_i = σ(e_iᵀ W h): logit of entity 3 for sample 1.
    expected = entities[3] @ head.image_map.weight @ image[1]
    assert torch.allclose(image_logits[1, 3], expected, atol=1e-5)
    assert torch.allclose(text_logits[0, 5], entities[5] @ head.text_map.weight @ text[0], atol=1e-5)


# ---------------------------------------------------------------------------- documentation
def test_readme_example_runs(tmp_path, monkeypatch):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Co-attention parts for M3AE and ARL"):]
    start = section.index("```python\n") + len("```python\n")
    code = section[start:section.index("\n```", start)]
    monkeypatch.chdir(tmp_path)  # the example writes run/tokenizer
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the project's own documentation
    for name in ("mlm", "mim", "ak"):
        assert torch.isfinite(namespace[name]) and namespace[name] > 0
    assert namespace["parts"].entity_table.weight.grad is not None
