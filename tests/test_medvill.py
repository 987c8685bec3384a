"""MedViLL end to end on a tiny model: pretraining losses under every mask, learning, save/load, S2S generation."""
from __future__ import annotations

import math

import pytest
import torch
from medvill_cases import tiny_medvill_config
from model_cases import BATCH, make_samples, one_torch_thread, train_tiny_tokenizer

from kg.errors import InputError
from model.attention_masks import PRETRAIN_SCHEMES
from model.irm import draw_matched
from model.medvill import MedVillModel
from model.medvill_config import MedVillConfig
from model.processing import MotorCollator
from model.single_stream_generation import beam_decode, greedy_decode, next_token_log_probs


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def _build(tokenizer, seed: int = 0, **changes) -> MedVillModel:
    torch.manual_seed(seed)
    return MedVillModel(tiny_medvill_config(**changes), tokenizer)


def _batch(tokenizer, n: int = BATCH, seed: int = 0) -> dict:
    return MotorCollator(tokenizer, max_len=40)(make_samples(n, seed))


# ---------------------------------------------------------------------------- pretraining
@pytest.mark.parametrize("scheme", PRETRAIN_SCHEMES)
def test_losses_are_finite_with_gradients_under_every_scheme(tokenizer, scheme):
    model = _build(tokenizer, attention_mask=scheme, irm_weight=0.5)
    output = model(_batch(tokenizer), generator=torch.Generator().manual_seed(0))
    assert set(output.losses) == {"mlm", "irm"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in output.losses.values())
    assert torch.allclose(output.loss, output.losses["mlm"] + 0.5 * output.losses["irm"])
    output.loss.backward()
    for name in ("encoder", "mlm_head", "irm_head"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_same_generator_same_step(tokenizer):
    model = _build(tokenizer, attention_mask="bi+s2s")
    batch = _batch(tokenizer)
    first = model(batch, generator=torch.Generator().manual_seed(4)).losses
    again = model(batch, generator=torch.Generator().manual_seed(4)).losses
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_a_batch_of_one_is_refused(tokenizer):
    with pytest.raises(InputError, match="at least 2"):
        _build(tokenizer)(_batch(tokenizer, n=1))


def _learnable_batch(tokenizer, studies: int = 4) -> dict:
    # Four samples of ``studies`` studies whose images differ clearly (a bright quadrant each)
    # and whose reports and labels differ: words and matching are both learnable from the pair.
    samples = make_samples(4)
    for i, sample in enumerate(samples):
        study = i % studies
        image = torch.full((3, 64, 64), 0.1)
        row, col = divmod(study, 2)
        image[:, row * 32 : row * 32 + 32, col * 32 : col * 32 + 32] = 0.9
        sample["image"] = image
        sample["report"] = samples[study]["report"]
        sample["labels"] = torch.zeros_like(sample["labels"])
        sample["labels"][study] = 1.0
        sample["index"] = study
    return MotorCollator(tokenizer, max_len=40)(samples)


def _train(model: MedVillModel, batch: dict, steps: int, lr: float, scheme: str | None = None) -> list[dict]:
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    history = []
    for _ in range(steps):
        output = model(batch, scheme=scheme, generator=generator)
        optimiser.zero_grad()
        output.loss.backward()
        optimiser.step()
        history.append({k: float(v.detach()) for k, v in output.losses.items()})
    return history


@torch.no_grad()
def _fixed_mlm_loss(model: MedVillModel, batch: dict) -> float:
    """MLM loss at masks fixed by a seed, in eval mode."""
    model.eval()
    loss = float(model(batch, scheme="bar", generator=torch.Generator().manual_seed(11)).losses["mlm"])
    model.train()
    return loss


def test_mlm_loss_falls_on_a_tiny_learnable_problem(tokenizer):
    model = _build(tokenizer, num_visual_tokens=4)
    batch = _learnable_batch(tokenizer)
    before = _fixed_mlm_loss(model, batch)
    _train(model, batch, steps=60, lr=3e-3)
    after = _fixed_mlm_loss(model, batch)
    assert after < 0.6 * before, (before, after)


def test_irm_loss_falls_on_a_tiny_learnable_problem(tokenizer):
    # Every image with its own report and with the next study's: fixed pairs, so the loss of
    # one step compares with another's. (With fresh random pairs each step, as ``forward``
    # draws them, a model this small sits at log 2 for hundreds of steps before it learns.)
    model = _build(tokenizer, num_visual_tokens=4)
    batch = _learnable_batch(tokenizer)
    shift = torch.tensor([1, 2, 3, 0])
    images = torch.cat([batch["image"], batch["image"]])
    ids = torch.cat([batch["input_ids"], batch["input_ids"][shift]])
    masks = torch.cat([batch["attention_mask"], batch["attention_mask"][shift]])
    matched = torch.tensor([True] * 4 + [False] * 4)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    history = []
    for _ in range(60):
        loss = model.irm_loss(model.irm_logits(model.encode(images, ids, masks, "bar")), matched)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(float(loss.detach()))
    start, end = sum(history[:5]) / 5, sum(history[-5:]) / 5
    assert end < 0.5 * start, (start, end)


@pytest.mark.slow
def test_irm_learns_from_random_pairs_when_scored_on_clean_text(tokenizer):
    # forward() draws fresh pairs every step; IRM alone, scored on the unmasked reports.
    model = _build(tokenizer, num_visual_tokens=4, mlm_weight=0.0, irm_clean_text=True)
    batch = _learnable_batch(tokenizer)
    batch = {k: torch.cat([v, v]) for k, v in batch.items()}  # 8 pairs a step
    history = _train(model, batch, steps=250, lr=1e-3, scheme="bar")
    start = sum(h["irm"] for h in history[:25]) / 25
    end = sum(h["irm"] for h in history[-25:]) / 25
    assert end < 0.6 * start, (start, end)


def _six_studies(tokenizer) -> dict:
    # Six studies, each its own image (a bright block in its own place), report and finding.
    samples = make_samples(6)
    for study, sample in enumerate(samples):
        image = torch.full((3, 64, 64), 0.1)
        row, col = divmod(study, 3)
        image[:, row * 32 : row * 32 + 32, col * 21 : col * 21 + 21] = 0.9
        sample["image"] = image
        sample["labels"] = torch.zeros_like(sample["labels"])
        sample["labels"][study] = 1.0
    return MotorCollator(tokenizer, max_len=40)(samples)


def _train_decaying(model: MedVillModel, batch: dict, steps: int, lr: float) -> list[float]:
    """IRM losses of ``steps`` steps of ``forward`` (fresh pairs each step), the rate decaying to 0
    as in the pretraining schedule, so the last steps leave the running statistics settled."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    generator = torch.Generator().manual_seed(0)
    history = []
    for _ in range(steps):
        output = model(batch, scheme="bar", generator=generator)
        optimiser.zero_grad()
        output.loss.backward()
        optimiser.step()
        schedule.step()
        history.append(float(output.losses["irm"].detach()))
    return history


@torch.no_grad()
def _own_report_ranks(model: MedVillModel, batch: dict) -> list[int]:
    """0-based rank of each image's own report among all reports, by eval-mode IRM scores."""
    model.eval()
    scores = model.match_matrix(model.image_tokens(batch["image"]), model.text_side(batch))
    model.train()
    own = scores.diagonal().unsqueeze(1)
    return (scores > own).sum(dim=1).tolist()


def test_joint_cls_is_nearly_constant_at_initialisation_yet_irm_learns_from_fresh_pairs(tokenizer):
    # From random initialisation the joint [CLS] hardly depends on the pair; a plain linear head
    # then fits the 1 : 1 prior and IRM stays at log 2 (0.69): the head must standardise it.
    model = _build(tokenizer, num_visual_tokens=4, mlm_weight=0.0)
    batch = _six_studies(tokenizer)
    with torch.no_grad():
        model.eval()
        cls = model.encode(batch["image"], batch["input_ids"], batch["attention_mask"], "bar").joint_cls
        model.train()
    cosine = torch.nn.functional.cosine_similarity(cls.unsqueeze(1), cls.unsqueeze(0), dim=-1)
    assert cosine.min() > 0.999
    history = _train_decaying(model, batch, steps=150, lr=1e-3)
    end = sum(history[-25:]) / 25
    assert end < 0.9 * math.log(2), history[::10]
    # Retrieval scores every pair in eval mode, with the running statistics: above chance
    # (a random order puts the own report at mean rank 2.5 of 0..5).
    ranks = _own_report_ranks(model, batch)
    assert sum(ranks) / len(ranks) < 1.5, ranks


@pytest.mark.slow
def test_irm_read_from_the_mlm_pass_learns_and_retrieves_from_random_initialisation(tokenizer):
    # The paper's step: MLM and IRM from one masked pass, fresh pairs each step.
    model = _build(tokenizer, num_visual_tokens=4)
    batch = _six_studies(tokenizer)
    history = _train_decaying(model, batch, steps=300, lr=1e-3)
    end = sum(history[-25:]) / 25
    assert end < 0.8 * math.log(2), history[::20]
    ranks = _own_report_ranks(model, batch)
    assert sum(ranks) / len(ranks) < 1.0, ranks


def test_irm_scores_use_the_running_statistics_not_the_pairs_scored_together(tokenizer):
    model = _build(tokenizer, seed=2)
    batch = _batch(tokenizer, n=5)
    with torch.no_grad():
        for seed in range(3):  # training steps set the running statistics
            model(batch, generator=torch.Generator().manual_seed(seed))
    norm = model.irm_head.norm
    statistics = [norm.running_mean.clone(), norm.running_var.clone(), norm.num_batches_tracked.clone()]
    model.eval()
    images, text = model.image_tokens(batch["image"]), model.text_side(batch)
    whole = model.match_matrix(images, text)
    # One image per call, or one pair: the same scores as all 25 pairs at once.
    assert torch.allclose(model.match_matrix(images, text, pairs_per_call=1), whole, atol=1e-6)
    own = model.irm_scores(batch["image"], batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(own, whole.diagonal(), atol=1e-6)
    assert torch.allclose(model.irm_scores(batch["image"][:1], batch["input_ids"][:1], batch["attention_mask"][:1]),
                          own[:1], atol=1e-6)
    # Scoring while training neither reads the batch's statistics nor changes the running ones.
    model.train()
    model.encoder.eval()  # only the head's mode differs from the scores above
    assert torch.allclose(model.irm_scores(batch["image"], batch["input_ids"], batch["attention_mask"]), own, atol=1e-6)
    assert torch.allclose(model.match_matrix(images, text), whole, atol=1e-6)
    assert norm.training
    after = [norm.running_mean, norm.running_var, norm.num_batches_tracked]
    assert all(torch.equal(a, b) for a, b in zip(statistics, after))


# ---------------------------------------------------------------------------- save / load
def test_save_pretrained_round_trip_in_the_shared_format(tmp_path, tokenizer):
    from model.pretrained import load_pretrained, read_method

    model = _build(tokenizer, seed=1)
    with torch.no_grad():  # a training step moves the IRM head's running statistics off their defaults
        model(_batch(tokenizer), generator=torch.Generator().manual_seed(0))
    model.eval()
    assert model.irm_head.norm.running_mean.abs().sum() > 0
    model.save_pretrained(tmp_path / "model")
    assert read_method(tmp_path / "model") == "medvill"
    assert (tmp_path / "model" / "model.safetensors").is_file()
    loaded = load_pretrained(tmp_path / "model").eval()  # resolved through the method registry
    assert type(loaded) is MedVillModel
    assert loaded.config == model.config
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    # The MLM head's output projection stays the word table after loading, not a copy of it.
    assert loaded.mlm_head.word_embeddings.weight is loaded.encoder.embeddings.word_embeddings.weight
    batch = _batch(tokenizer)
    with torch.no_grad():
        for scheme in ("bar", "non_crossing"):
            assert torch.equal(
                model.irm_scores(batch["image"], batch["input_ids"], batch["attention_mask"], scheme),
                loaded.irm_scores(batch["image"], batch["input_ids"], batch["attention_mask"], scheme),
            )
    assert model.generate(batch["image"][:2], max_length=6) == loaded.generate(batch["image"][:2], max_length=6)


def test_loading_another_methods_directory_as_medvill_is_refused(tmp_path, tokenizer):
    from model.config import MotorConfig
    from model.motor import build_model

    motor = build_model(MotorConfig.preset("tiny").replace(knowledge="none"), tokenizer)
    motor.save_pretrained(tmp_path / "motor")
    with pytest.raises(InputError, match="not MedViLL"):
        MedVillModel.from_pretrained(tmp_path / "motor")


def test_config_round_trips_through_yaml_and_names_bad_fields(tmp_path):
    import yaml

    config = tiny_medvill_config(attention_mask="bi+s2s", image_mean=[0.4, 0.5, 0.6])
    path = tmp_path / "medvill.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert MedVillConfig.from_yaml(path) == config
    path.write_text("attention_mask: causal\n")
    with pytest.raises(InputError, match=r"medvill.yaml.*attention_mask"):
        MedVillConfig.from_yaml(path)
    path.write_text("num_visual_token: 3\n")
    with pytest.raises(InputError, match="num_visual_token"):
        MedVillConfig.from_yaml(path)


# ---------------------------------------------------------------------------- S2S generation
def _full_sequence_log_probs(model: MedVillModel, images: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the word after ``words`` (B, n), encoding ``[image] words [MASK]`` in one pass."""
    mask = torch.full((words.shape[0], 1), model.token_ids["mask"], dtype=torch.long)
    text = torch.cat([words, mask], dim=1)
    hidden = model.encoder(images, text, torch.ones_like(text, dtype=torch.bool), "s2s").text_hidden
    return model.mlm_head(hidden[:, -1]).float().log_softmax(dim=-1)


def test_incremental_decoding_logits_equal_full_sequence_logits_under_s2s(tokenizer):
    model = _build(tokenizer).eval()
    batch = _batch(tokenizer, n=2)
    words = batch["input_ids"][:, 1:8]  # the first words of two reports
    with torch.no_grad():
        cache = model.encoder.start_decoding(batch["image"])
        previous = None
        for step in range(words.shape[1] + 1):
            incremental, cache = next_token_log_probs(model.encoder, model.mlm_head, cache, previous, model.token_ids["mask"])
            full = _full_sequence_log_probs(model, batch["image"], words[:, :step])
            assert torch.allclose(incremental, full, atol=1e-4), step
            previous = words[:, step] if step < words.shape[1] else None


def _rescore(model: MedVillModel, image: torch.Tensor, words: list[int]) -> float:
    """Sum of log-probabilities of ``words`` then [SEP], each from a full-sequence pass."""
    total = 0.0
    for step, token in enumerate([*words, model.token_ids["sep"]]):
        prefix = torch.tensor([words[:step]], dtype=torch.long)
        total += float(_full_sequence_log_probs(model, image.unsqueeze(0), prefix)[0, token])
    return total


def test_beam_search_scores_are_the_sequences_log_probabilities(tokenizer):
    model = _build(tokenizer, seed=3).eval()
    images = _batch(tokenizer, n=2)["image"]
    with torch.no_grad():
        reports, scores = beam_decode(model.encoder, model.mlm_head, images, model.token_ids, num_beams=3,
                                      max_length=5, length_penalty=1.0)
        for image, words, score in zip(images, reports, scores):
            assert 1 <= len(words) <= 5
            assert score == pytest.approx(_rescore(model, image, words) / (len(words) + 1), abs=1e-4)


def test_one_beam_is_greedy_and_greedy_takes_the_best_word_each_step(tokenizer):
    model = _build(tokenizer, seed=4).eval()
    images = _batch(tokenizer, n=3)["image"]
    with torch.no_grad():
        greedy = greedy_decode(model.encoder, model.mlm_head, images, model.token_ids, max_length=6)
        beam, _ = beam_decode(model.encoder, model.mlm_head, images, model.token_ids, num_beams=1, max_length=6)
        assert greedy == beam
        banned = [model.token_ids[k] for k in ("pad", "cls", "mask", "enc", "dec")]
        for image, words in zip(images, greedy):
            for step, token in enumerate(words):
                prefix = torch.tensor([words[:step]], dtype=torch.long)
                log_probs = _full_sequence_log_probs(model, image.unsqueeze(0), prefix)[0]
                log_probs[banned] = -torch.inf
                if step < 1:
                    log_probs[model.token_ids["sep"]] = -torch.inf
                assert int(log_probs.argmax()) == token


def test_generate_writes_strings_within_the_length_limits(tokenizer):
    model = _build(tokenizer).eval()
    images = _batch(tokenizer, n=2)["image"]
    for beams in (1, 3):
        texts = model.generate(images, max_length=4, min_length=2, num_beams=beams)
        assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
        assert all("[MASK]" not in t and "[SEP]" not in t for t in texts)
    with torch.no_grad():
        reports = greedy_decode(model.encoder, model.mlm_head, images, model.token_ids, max_length=4, min_length=4)
    assert all(len(words) == 4 for words in reports)
    with pytest.raises(InputError, match="max_length"), torch.no_grad():
        greedy_decode(model.encoder, model.mlm_head, images, model.token_ids, max_length=64)
    # generate() caps the length at what the text segment holds (max_text_len 64: 63 words + [MASK]).
    assert model.generate(images, max_length=500, min_length=500) == model.generate(images, max_length=63, min_length=63)


def test_matched_draws_follow_the_configured_share():
    assert draw_matched(10, probability=1.0).all() and not draw_matched(10, probability=0.0).any()


# ---------------------------------------------------------------------------- local weights
def test_a_local_bert_checkout_initialises_the_text_side(tmp_path, tokenizer):
    from transformers import BertConfig, BertModel

    from model.medvill import build_medvill

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64), add_pooling_layer=False).eval()
    bert.save_pretrained(tmp_path / "bert")
    model = build_medvill(tiny_medvill_config(text_model_dir=str(tmp_path / "bert")), tokenizer).eval()
    assert (model.config.text_width, model.config.text_layers, model.config.text_intermediate) == (32, 2, 64)
    words = model.encoder.embeddings.word_embeddings.weight
    assert torch.equal(words[:300], bert.embeddings.word_embeddings.weight)  # the tokenizer's extra rows stay random
    assert torch.equal(model.encoder.embeddings.semantic_embeddings.weight, bert.embeddings.token_type_embeddings.weight)
    # Each joint layer computes what the BERT layer of the same index computes (no mask blocks anything).
    hidden = torch.randn(2, 5, 32)
    ours = model.encoder.run_layers(hidden, torch.ones(2, 5, 5, dtype=torch.bool))
    theirs = bert.encoder(hidden).last_hidden_state
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_missing_local_weights_are_reported(tmp_path, tokenizer):
    from kg.errors import MissingResourceError
    from model.medvill import build_medvill

    with pytest.raises(MissingResourceError):
        build_medvill(tiny_medvill_config(text_model_dir=str(tmp_path / "nothing")), tokenizer)
    with pytest.raises(MissingResourceError, match="backbone_weights"):
        build_medvill(tiny_medvill_config(backbone_weights=str(tmp_path / "cnn.safetensors")), tokenizer)


def test_backbone_weights_round_trip_through_a_local_file(tmp_path, tokenizer):
    from safetensors.torch import save_file

    from model.medvill import build_medvill

    source = _build(tokenizer, seed=5)
    state = {k: v.contiguous() for k, v in source.encoder.visual_sampler.cnn.state_dict().items()}
    save_file(state, str(tmp_path / "cnn.safetensors"))
    model = build_medvill(tiny_medvill_config(backbone_weights=str(tmp_path / "cnn.safetensors")), tokenizer)
    loaded = model.encoder.visual_sampler.cnn.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
