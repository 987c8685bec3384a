"""MOTOR's parts checked against independent computations: queues, retrieval, GK masking, losses."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from model_cases import BATCH, LossCase, make_batch, tiny_config

from kg.gk import load_gk
from model import build_model
from model.gather import gather_from_all
from model.knowledge import GKEncoder, SKEncoder, retrieve_knowledge
from model.losses import ContrastiveLoss, LanguageModelingLoss, MatchingLoss, MultiLabelLoss, sample_hard_negatives
from model.queues import FeatureQueue


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------- queues
def _queue(size: int) -> FeatureQueue:
    return FeatureQueue(size, {"value": ((), torch.long), "feature": ((2,), torch.float32)})


def _push(queue: FeatureQueue, values: list[int]) -> None:
    tensor = torch.tensor(values)
    queue.enqueue(value=tensor, feature=tensor.float().unsqueeze(1).expand(-1, 2))


def test_queue_fills_in_order_and_wraps_around_a_size_that_does_not_divide_the_batch():
    queue = _queue(5)
    _push(queue, [1, 2, 3])
    assert len(queue) == 3 and queue.entries("value").tolist() == [1, 2, 3]
    _push(queue, [4, 5, 6])
    assert len(queue) == 5
    assert queue.value.tolist() == [6, 2, 3, 4, 5]  # slot 0 overwritten by the newest
    assert queue.ordered("value").tolist() == [2, 3, 4, 5, 6]  # oldest first
    _push(queue, [7, 8, 9])
    assert queue.ordered("value").tolist() == [5, 6, 7, 8, 9]
    assert queue.feature[:, 0].tolist() == [float(v) for v in queue.value.tolist()]


def test_queue_keeps_the_newest_entries_of_a_batch_longer_than_itself():
    queue = _queue(3)
    _push(queue, [1])
    _push(queue, [10, 11, 12, 13, 14])
    assert queue.ordered("value").tolist() == [12, 13, 14]


def test_queue_rejects_missing_fields_and_ragged_rows():
    queue = _queue(4)
    with pytest.raises(ValueError, match="fields"):
        queue.enqueue(value=torch.tensor([1]))
    with pytest.raises(ValueError, match="rows"):
        queue.enqueue(value=torch.tensor([1, 2]), feature=torch.zeros(3, 2))


def test_queue_state_is_checkpointed():
    queue = _queue(4)
    _push(queue, [1, 2, 3, 4, 5])
    restored = _queue(4)
    restored.load_state_dict(queue.state_dict())
    assert restored.ordered("value").tolist() == [2, 3, 4, 5]
    _push(restored, [6])
    assert restored.ordered("value").tolist() == [3, 4, 5, 6]


def test_gather_is_the_identity_in_one_process():
    tensor = torch.arange(6).reshape(3, 2)
    assert gather_from_all(tensor) is tensor


# ---------------------------------------------------------------------------- SK retrieval
def _report_queue(features: torch.Tensor, index: torch.Tensor, has_sk: torch.Tensor, length: int = 6) -> FeatureQueue:
    n = features.shape[0]
    queue = FeatureQueue(n + 3, {
        "feature": ((features.shape[1],), torch.float32), "sk_ids": ((length,), torch.int32),
        "sk_mask": ((length,), torch.bool), "has_sk": ((), torch.bool), "index": ((), torch.long),
    })
    ids = torch.arange(n, dtype=torch.int32).unsqueeze(1) * 10 + torch.arange(length, dtype=torch.int32)
    mask = torch.arange(length).unsqueeze(0) < (torch.arange(n) % (length - 2) + 3).unsqueeze(1)
    queue.enqueue(feature=features, sk_ids=ids, sk_mask=mask, has_sk=has_sk, index=index)
    return queue


def test_retrieval_equals_brute_force_top_k_over_filled_slots_with_knowledge():
    generator = torch.Generator().manual_seed(0)
    features = F.normalize(torch.randn(20, 8, generator=generator), dim=1)
    has_sk = torch.rand(20, generator=generator) > 0.25
    queue = _report_queue(features, torch.arange(20), has_sk)
    queries = F.normalize(torch.randn(5, 8, generator=generator), dim=1)
    result = retrieve_knowledge(queue, queries, k=3)
    # Brute force: score every slot, never an empty slot (3 of 23 are) or one without an SK sentence.
    scores = queries @ queue.feature.T
    scores[:, 20:] = -math.inf
    scores[:, ~torch.cat([has_sk, torch.zeros(3, dtype=torch.bool)])] = -math.inf
    assert torch.equal(result.slots, scores.topk(3, dim=1).indices)
    for b in range(5):
        for j in range(3):
            slot = int(result.slots[b, j])
            valid = queue.sk_mask[slot]
            width = result.mask.shape[-1]
            assert torch.equal(result.mask[b, j], valid[:width])
            assert torch.equal(result.ids[b, j][result.mask[b, j]], queue.sk_ids[slot][:width][valid[:width]].long())


def test_retrieval_never_returns_the_queries_own_study():
    generator = torch.Generator().manual_seed(1)
    features = F.normalize(torch.randn(12, 8, generator=generator), dim=1)
    index = torch.arange(12) % 4  # each study queued three times
    queue = _report_queue(features, index, torch.ones(12, dtype=torch.bool))
    queries = features[:4]  # study b's own entries are its best matches
    result = retrieve_knowledge(queue, queries, k=3, exclude_index=torch.arange(4))
    scores = queries @ queue.feature[:12].T
    scores[index.unsqueeze(0) == torch.arange(4).unsqueeze(1)] = -math.inf
    assert torch.equal(result.slots, scores.topk(3, dim=1).indices)


def test_retrieval_masks_slots_it_cannot_fill():
    features = F.normalize(torch.randn(2, 8), dim=1)
    queue = _report_queue(features, torch.tensor([0, 1]), torch.tensor([True, True]))
    result = retrieve_knowledge(queue, features, k=3, exclude_index=torch.tensor([0, 1]))
    assert result.slots.tolist() == [[1, -1, -1], [0, -1, -1]]
    assert not result.mask[:, 1:].any() and result.mask[:, 0].any()
    empty = retrieve_knowledge(_queue_of_size(4), features, k=3)
    assert (empty.slots == -1).all() and not empty.mask.any()


def _queue_of_size(size: int) -> FeatureQueue:
    return FeatureQueue(size, {
        "feature": ((8,), torch.float32), "sk_ids": ((6,), torch.int32), "sk_mask": ((6,), torch.bool),
        "has_sk": ((), torch.bool), "index": ((), torch.long),
    })


def test_sk_encoder_batched_pass_equals_encoding_each_sentence_alone(tokenizer):
    model = build_model(tiny_config("sk"), tokenizer).eval()
    encoder: SKEncoder = model.sk_encoder
    ids = torch.randint(7, len(tokenizer), (2, 3, 5))
    lengths = torch.tensor([[5, 3, 2], [4, 5, 3]])
    mask = torch.arange(5) < lengths.unsqueeze(-1)
    with torch.no_grad():
        features, padding = encoder(ids, mask)
        assert features.shape == (2, 15, model.config.text_width)
        assert torch.equal(padding, ~mask.reshape(2, 15))
        for b in range(2):
            for j in range(3):
                n = int(lengths[b, j])
                alone = encoder.encoder(input_ids=ids[b, j, :n].unsqueeze(0)).last_hidden_state[0]
                torch.testing.assert_close(features[b, j * 5 : j * 5 + n], alone, atol=1e-5, rtol=1e-5)


def test_sk_encoder_encodes_a_report_retrieved_twice_once_with_the_same_result(tokenizer):
    model = build_model(tiny_config("sk"), tokenizer).eval()
    slots = torch.tensor([[4, 9, -1], [9, 2, -1]])
    sentences = {4: torch.randint(7, len(tokenizer), (5,)), 9: torch.randint(7, len(tokenizer), (5,)),
                 2: torch.randint(7, len(tokenizer), (5,)), -1: torch.zeros(5, dtype=torch.long)}
    lengths = {4: 5, 9: 3, 2: 4, -1: 0}
    ids = torch.stack([torch.stack([sentences[int(s)] for s in row]) for row in slots])
    mask = torch.stack([torch.stack([torch.arange(5) < lengths[int(s)] for s in row]) for row in slots])
    calls = []
    handle = model.sk_encoder.encoder.register_forward_hook(lambda _m, args, kwargs, _o: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    with torch.no_grad():
        shared, padding = model.sk_encoder(ids, mask, slots)
        separate, same_padding = model.sk_encoder(ids, mask)
    handle.remove()
    assert calls == [4, 6]  # distinct reports 2, 4, 9 and the empty slot, then all six
    assert torch.equal(padding, same_padding)
    torch.testing.assert_close(shared[~padding], separate[~padding], atol=1e-5, rtol=1e-5)


def test_first_training_step_uses_the_batch_and_excludes_each_samples_own_report(tokenizer):
    model = build_model(tiny_config("sk"), tokenizer)
    batch = make_batch(tokenizer, model.config)
    assert len(model.report_queue) == 0
    model(batch)
    assert len(model.report_queue) == BATCH
    queries = F.normalize(torch.randn(BATCH, model.config.embed_dim), dim=1)
    result = model.retrieve_knowledge(queries, exclude_index=batch["index"])
    has_sk = batch["sk_attention_mask"].sum(1) > 2
    retrieved = result.slots[result.slots >= 0]
    assert bool(has_sk[retrieved].all())  # the sample without an SK sentence is never retrieved
    for b in range(BATCH):
        assert int(batch["index"][b]) not in model.report_queue.index[result.slots[b][result.slots[b] >= 0]].tolist()
    assert (result.slots >= 0).sum(1).tolist() == [min(3, int(has_sk.sum()) - int(has_sk[b])) for b in range(BATCH)]


def test_inference_with_an_empty_report_queue_still_encodes(tokenizer):
    model = build_model(tiny_config("gk+sk"), tokenizer).eval()
    batch = make_batch(tokenizer, model.config)
    with torch.no_grad():
        features = model.encode_image(batch["image"])
    assert torch.isfinite(features).all() and features.shape == (BATCH, model.config.embed_dim)


# ---------------------------------------------------------------------------- GK encoder
def test_gk_encoder_attends_with_the_graphs_visible_mask(tokenizer):
    graph = load_gk()
    model = build_model(tiny_config("gk", gk_layers=1), tokenizer).eval()
    encoder: GKEncoder = model.gk_encoder
    assert torch.equal(encoder.visible_mask, graph.visible_mask())
    assert torch.equal(encoder.node_types, graph.node_type_ids())
    # With one layer, node i's output depends only on the nodes it sees.
    finding = graph.findings[0]
    hidden = [n.index for n in graph.nodes if not bool(graph.visible_mask()[finding.index, n.index])]
    seen = [n.index for n in graph.nodes if bool(graph.visible_mask()[finding.index, n.index]) and n.index != finding.index]
    assert hidden and seen
    # Random perturbations: a constant shift would vanish in the pre-attention layer norm.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        before = encoder()
        encoder.word_embedding[hidden] += torch.randn(len(hidden), encoder.word_embedding.shape[1], generator=generator)
        unchanged = encoder()
        encoder.word_embedding[seen[0]] += torch.randn(encoder.word_embedding.shape[1], generator=generator)
        changed = encoder()
    assert before.shape == (len(graph), model.config.text_width)
    torch.testing.assert_close(unchanged[finding.index], before[finding.index])
    assert not torch.allclose(changed[finding.index], before[finding.index])


def test_gk_node_table_starts_as_mean_word_embedding(tokenizer):
    graph = load_gk()
    model = build_model(tiny_config("gk"), tokenizer)
    table = model.text_encoder.embeddings.word_embeddings.weight
    for node, words in zip(graph.nodes, graph.node_words()):
        ids = tokenizer(words, add_special_tokens=False)["input_ids"]
        torch.testing.assert_close(model.gk_encoder.word_embedding[node.index], table[ids].mean(0))


def test_gk_attention_maps_for_visualisation(tokenizer):
    model = build_model(tiny_config("gk"), tokenizer).eval()
    cfg = model.config
    maps = model.gk_attention(make_batch(tokenizer, cfg)["image"])
    nodes = len(load_gk())
    assert maps["image_to_nodes"].shape == (BATCH, cfg.knowledge_heads, 1 + cfg.num_patches, nodes)
    assert maps["node_to_patches"].shape == (BATCH, cfg.knowledge_heads, nodes, cfg.num_patches)
    torch.testing.assert_close(maps["image_to_nodes"].sum(-1), torch.ones(BATCH, cfg.knowledge_heads, 1 + cfg.num_patches))
    torch.testing.assert_close(maps["node_to_patches"].sum(-1), torch.ones(BATCH, cfg.knowledge_heads, nodes))
    assert maps["node_ids"] == list(load_gk().node_ids)


def test_label_prompts_are_tokenised_once_at_init(tokenizer):
    from kg.label_schema import load_chexpert_classes

    model = build_model(tiny_config("full"), tokenizer)
    prompts = [c.prompt for c in load_chexpert_classes()]
    assert model.label_input_ids.shape[0] == len(prompts) == 14
    first = tokenizer(prompts[0])["input_ids"]
    assert model.label_input_ids[0, : len(first)].tolist() == first


# ---------------------------------------------------------------------------- momentum path
def test_momentum_copies_exist_for_the_blip_towers_and_e_gk_v_and_for_every_knowledge_module_on_request(tokenizer):
    shared = build_model(tiny_config("full"), tokenizer)
    assert set(shared.momentum) == {"image_encoder", "gk_image_encoder", "vision_proj", "text_encoder", "text_proj"}
    copies = build_model(tiny_config("full", momentum_knowledge=True), tokenizer)
    assert set(copies.momentum) == set(shared.momentum) | {"gk_encoder", "sk_encoder", "sk_image_encoder"}


@pytest.mark.parametrize("knowledge", ["gk+sk", "full"])
def test_reusing_online_knowledge_equals_momentum_copies_that_match_the_online_modules(tokenizer, knowledge):
    # With momentum 0 every EMA copy equals its online module after each update, so the momentum
    # path that reuses the online f_gk, f_sk and E_{sk→v} must give the targets the copies give.
    # alpha > 0 and a long ITC queue make ITC depend on the momentum image features.
    batches = [make_batch(tokenizer, tiny_config(knowledge), seed=s, first_index=BATCH * s) for s in range(3)]
    runs = {}
    for flag in (False, True):
        torch.manual_seed(0)
        model = build_model(tiny_config(knowledge, momentum=0.0, momentum_knowledge=flag), tokenizer)
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
        torch.manual_seed(1)
        runs[flag] = []
        for batch in batches:
            output = model(batch, alpha=0.4)
            optimiser.zero_grad()
            output.loss.backward()
            optimiser.step()
            runs[flag].append(output.losses)
        runs[flag].append(model.itc_queue.entries("image"))
    for shared, copied in zip(runs[False][:-1], runs[True][:-1]):
        for name in shared:
            torch.testing.assert_close(shared[name], copied[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(runs[False][-1], runs[True][-1], rtol=1e-5, atol=1e-6)


def test_a_model_saved_before_momentum_knowledge_existed_loads_with_its_momentum_copies(tmp_path, tokenizer):
    import json

    from model import MotorModel

    model = build_model(tiny_config("gk+sk", momentum_knowledge=True), tokenizer)
    model.save_pretrained(tmp_path / "saved")
    config_file = tmp_path / "saved" / "config.json"
    document = json.loads(config_file.read_text())
    del document["motor_config"]["momentum_knowledge"]
    config_file.write_text(json.dumps(document))
    loaded = MotorModel.from_pretrained(tmp_path / "saved")
    assert loaded.config.momentum_knowledge
    assert torch.equal(loaded.momentum.sk_encoder.encoder.embeddings.word_embeddings.weight,
                       model.momentum.sk_encoder.encoder.embeddings.word_embeddings.weight)


# ---------------------------------------------------------------------------- text stacks
def test_report_encoder_is_bidirectional_decoder_causal_and_grounded_encoder_sees_the_image(tokenizer):
    model = build_model(tiny_config("none"), tokenizer).eval()
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    changed = ids.clone()
    changed[0, 3] = 20
    mask = torch.ones_like(ids)
    image = torch.randn(1, 1 + model.config.num_patches, model.config.vision_width)
    with torch.no_grad():
        encoded = [model.text_encoder(input_ids=x, attention_mask=mask).last_hidden_state for x in (ids, changed)]
        decoded = [model.text_decoder(input_ids=x, attention_mask=mask, encoder_hidden_states=image).logits
                   for x in (ids, changed)]
        grounded = model.text_encoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=image).last_hidden_state
    assert not torch.allclose(encoded[0][0, 0], encoded[1][0, 0])  # [CLS] sees a later token
    torch.testing.assert_close(decoded[0][0, :3], decoded[1][0, :3])  # earlier positions do not
    assert not torch.allclose(decoded[0][0, 3], decoded[1][0, 3])
    assert not torch.allclose(grounded, encoded[0])


# ---------------------------------------------------------------------------- losses
class TestContrastiveLoss(LossCase):
    def make_loss(self):
        return ContrastiveLoss()

    def call(self, loss, generator):
        image, text = (torch.randn(4, 8, generator=generator).requires_grad_() for _ in range(2))
        queue = F.normalize(torch.randn(3, 8, generator=generator), dim=1)
        value, _, _ = loss(F.normalize(image, dim=1), F.normalize(text, dim=1), F.normalize(image, dim=1).detach(),
                           F.normalize(text, dim=1).detach(), queue, queue, torch.arange(4), torch.tensor([0, 5, 6]),
                           torch.tensor(0.07), 0.4)
        return value, [image, text]


class TestMatchingLoss(LossCase):
    def make_loss(self):
        return MatchingLoss()

    def call(self, loss, generator):
        logits = torch.randn(6, 2, generator=generator).requires_grad_()
        return loss(logits, 3), [logits]


class TestLanguageModelingLoss(LossCase):
    def make_loss(self):
        return LanguageModelingLoss()

    def call(self, loss, generator):
        logits = torch.randn(2, 5, 11, generator=generator).requires_grad_()
        ids = torch.randint(0, 11, (2, 5), generator=generator)
        return loss(logits, ids, torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])), [logits]


class TestMultiLabelLoss(LossCase):
    def make_loss(self):
        return MultiLabelLoss(uncertain="positive", unmentioned="ignore")

    def call(self, loss, generator):
        logits = torch.randn(3, 4, generator=generator).requires_grad_()
        labels = torch.tensor([[1.0, 0.0, -1.0, math.nan], [0.0, 0.0, 1.0, 1.0], [math.nan, -1.0, 0.0, 1.0]])
        return loss(logits, labels), [logits]


def test_contrastive_loss_without_queue_or_distillation_is_symmetric_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(4, 8, generator=generator), dim=1)
    text = F.normalize(torch.randn(4, 8, generator=generator), dim=1)
    empty = torch.zeros(0, 8)
    loss, sim_i2t, _ = ContrastiveLoss()(
        image, text, image, text, empty, empty, torch.arange(4), torch.zeros(0, dtype=torch.long), torch.tensor(0.1), 0.0
    )
    logits = image @ text.T / 0.1
    expected = (F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(logits.T, torch.arange(4))) / 2
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(sim_i2t, logits)


def test_contrastive_loss_counts_queued_copies_of_a_study_as_positives():
    image = torch.eye(3)[:2]
    text = torch.eye(3)[:2]
    queue = torch.eye(3)[[0, 2]]  # a copy of study 0 and an unrelated study
    loss, sim_i2t, _ = ContrastiveLoss()(
        image, text, image, text, queue, queue, torch.tensor([0, 1]), torch.tensor([0, 5]), torch.tensor(1.0), 0.0
    )
    log_p = F.log_softmax(sim_i2t, dim=1)
    expected_i2t = -(log_p[0, [0, 2]].mean() + log_p[1, 1]) / 2
    # The texts see the same candidates (symmetric set-up), so both directions agree.
    torch.testing.assert_close(loss, expected_i2t)


def test_hard_negatives_never_share_the_study():
    torch.manual_seed(0)
    sim = torch.randn(6, 10)
    index = torch.tensor([0, 0, 1, 2, 2, 3])
    for _ in range(20):
        negative_text, negative_image = sample_hard_negatives(sim, sim, index)
        assert (index[negative_text] != index).all() and (index[negative_image] != index).all()


def test_multilabel_loss_policies_match_hand_computation():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    labels = torch.tensor([[1.0, 0.0, -1.0, math.nan]])

    def bce(x, y):
        return float(F.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(y)))

    ignore = (bce(2.0, 1.0) + bce(-1.0, 0.0)) / 2
    positive = (bce(2.0, 1.0) + bce(-1.0, 0.0) + bce(0.5, 1.0)) / 3
    negative = (bce(2.0, 1.0) + bce(-1.0, 0.0) + bce(0.5, 0.0)) / 3
    assert float(MultiLabelLoss("ignore", "ignore")(logits, labels)) == pytest.approx(ignore, rel=1e-6)
    assert float(MultiLabelLoss("positive", "ignore")(logits, labels)) == pytest.approx(positive, rel=1e-6)
    assert float(MultiLabelLoss("negative", "ignore")(logits, labels)) == pytest.approx(negative, rel=1e-6)
    # Unmentioned read as absent (the default, as the reference's label_index): the NaN entry is a 0.
    unmentioned_negative = (bce(2.0, 1.0) + bce(-1.0, 0.0) + bce(3.0, 0.0)) / 3
    assert float(MultiLabelLoss("ignore")(logits, labels)) == pytest.approx(unmentioned_negative, rel=1e-6)
    with pytest.raises(ValueError, match="unmentioned"):
        MultiLabelLoss("ignore", "positive")
    nothing = MultiLabelLoss("ignore", "ignore")(logits.requires_grad_(), torch.full((1, 4), math.nan))
    assert float(nothing.detach()) == 0.0
    nothing.backward()


def test_lm_loss_predicts_the_next_token_and_ignores_padding():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    ids = torch.tensor([[6, 3, 4, 2], [6, 5, 2, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    loss = LanguageModelingLoss(label_smoothing=0.0)(logits, ids, mask)
    terms = [-F.log_softmax(logits[b, t], dim=-1)[ids[b, t + 1]] for b in range(2) for t in range(3) if mask[b, t + 1]]
    torch.testing.assert_close(loss, torch.stack(terms).mean())


# ---------------------------------------------------------------------------- faithful options
def test_weighted_sum_fusion_is_the_softmax_score_weighted_sum_of_the_separate_encodings(tokenizer):
    model = build_model(tiny_config("sk", sk_fusion="weighted_sum"), tokenizer).eval()
    ids = torch.randint(7, len(tokenizer), (2, 3, 5))
    lengths = torch.tensor([[5, 3, 0], [4, 5, 2]])  # image 0 retrieved two reports only
    mask = torch.arange(5) < lengths.unsqueeze(-1)
    scores = torch.tensor([[0.9, 0.5, 0.0], [0.2, 0.7, 0.4]])
    with torch.no_grad():
        fused, padding = model.sk_encoder(ids, mask, scores=scores)
        assert fused.shape == (2, 5, model.config.text_width)
        assert padding.tolist() == [[False] * 5, [False] * 5]
        for b in range(2):
            present = lengths[b] > 0
            weights = scores[b][present].softmax(0)
            expected = torch.zeros(5, model.config.text_width)
            for weight, j in zip(weights, present.nonzero().flatten().tolist()):
                n = int(lengths[b, j])
                alone = model.sk_encoder.encoder(input_ids=ids[b, j, :n].unsqueeze(0)).last_hidden_state[0]
                expected[:n] += weight * alone
            torch.testing.assert_close(fused[b], expected, atol=1e-5, rtol=1e-5)
        empty, empty_padding = model.sk_encoder(ids, torch.zeros_like(mask), scores=scores)
    assert torch.equal(empty, torch.zeros_like(empty)) and empty_padding.all()


def test_retrieval_scores_are_the_inner_products_of_the_chosen_reports():
    generator = torch.Generator().manual_seed(3)
    features = F.normalize(torch.randn(10, 8, generator=generator), dim=1)
    queue = _report_queue(features, torch.arange(10), torch.ones(10, dtype=torch.bool))
    queries = F.normalize(torch.randn(4, 8, generator=generator), dim=1)
    result = retrieve_knowledge(queue, queries, k=3)
    expected = (queries @ queue.feature.T).gather(1, result.slots)
    torch.testing.assert_close(result.scores, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fusion", ["concat", "weighted_sum"])
def test_a_training_step_and_inference_run_with_either_sk_fusion(tokenizer, fusion):
    model = build_model(tiny_config("gk+sk", sk_fusion=fusion), tokenizer)
    batch = make_batch(tokenizer, model.config)
    output = model(batch)
    output.loss.backward()
    assert torch.isfinite(output.loss)
    assert model.sk_encoder.encoder.embeddings.word_embeddings.weight.grad is not None
    with torch.no_grad():
        assert torch.isfinite(model.eval().encode_image(batch["image"])).all()


def test_cross_encoders_have_the_configured_depth_width_and_a_final_layer_norm(tokenizer):
    config = tiny_config("gk+sk", gk_image_layers=2, sk_image_layers=3, knowledge_intermediate=48, gk_intermediate=40)
    model = build_model(config, tokenizer)
    assert len(model.gk_image_encoder.blocks) == 2 and len(model.sk_image_encoder.blocks) == 3
    assert model.gk_image_encoder.blocks[0].mlp.fc1.out_features == 48
    assert model.gk_encoder.layers.layers[0].linear1.out_features == 40
    tokens = torch.randn(2, 5, config.vision_width) * 7 + 3
    out = model.gk_image_encoder(tokens, torch.randn(2, 4, config.text_width))
    # The final LayerNorm (weight 1, bias 0 at init) leaves every token at mean 0, variance 1.
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)


def test_base_preset_has_the_reference_knowledge_module_sizes():
    from model import MotorConfig

    base = MotorConfig.preset("base")
    assert (base.gk_layers, base.gk_heads, base.gk_intermediate) == (2, 6, 1024)
    assert (base.gk_image_layers, base.sk_image_layers, base.knowledge_heads, base.knowledge_intermediate) == (2, 2, 6, 1024)
    assert (base.sk_layers, base.sk_top_k, base.sk_max_len, base.max_text_len) == (12, 3, 90, 90)
    assert (base.sk_queue_size, base.queue_size, base.sk_fusion) == (65536, 65536, "concat")


def test_unknown_sk_fusion_is_refused_naming_the_field():
    from kg.errors import InputError
    from model import MotorConfig

    with pytest.raises(InputError, match="sk_fusion"):
        MotorConfig.preset("tiny").replace(sk_fusion="mean")


def test_unknown_sk_order_is_refused_naming_the_field():
    from kg.errors import InputError
    from model import MotorConfig

    assert MotorConfig.preset("base").sk_order == "report"
    with pytest.raises(InputError, match="sk_order"):
        MotorConfig.preset("tiny").replace(sk_order="alphabetical")


def test_without_knowledge_is_plain_blip_with_the_same_encoders(tokenizer):
    from model.motor import project_image, without_knowledge

    model = build_model(tiny_config("full"), tokenizer).eval()
    plain = without_knowledge(model).eval()
    assert plain.config.knowledge == "none"
    assert not any(hasattr(plain, name) for name in ("gk_encoder", "sk_encoder", "report_queue", "label_scorer"))
    batch = make_batch(tokenizer, model.config)
    with torch.no_grad():
        # f_v straight from E_v: what the model computes with every knowledge path switched off.
        expected = project_image(model, model.image_encoder(batch["image"]))
        torch.testing.assert_close(plain.encode_image(batch["image"]), expected)
        assert torch.equal(plain.encode_text(batch["input_ids"], batch["attention_mask"]),
                           model.encode_text(batch["input_ids"], batch["attention_mask"]))


def test_a_model_saved_before_the_cross_encoders_final_norm_existed_loads_without_it(tmp_path, tokenizer):
    import json

    from model import MotorModel

    model = build_model(tiny_config("gk+sk", cross_final_norm=False), tokenizer)
    assert "gk_image_encoder.norm.weight" not in model.state_dict()
    model.save_pretrained(tmp_path / "saved")
    config_file = tmp_path / "saved" / "config.json"
    document = json.loads(config_file.read_text())
    del document["motor_config"]["cross_final_norm"]
    config_file.write_text(json.dumps(document))
    loaded = MotorModel.from_pretrained(tmp_path / "saved")
    assert loaded.config.cross_final_norm is False
    assert "gk_image_encoder.norm.weight" in build_model(tiny_config("gk"), tokenizer).state_dict()
