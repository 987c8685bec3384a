"""Resume exactness and accumulation of the shared training loop, on a fast test double."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from loop_doubles import ContractDouble, RegressionSet, collate
from test_checkpoint import rewrite_checksums
from pipelines.checkpoint import checkpoint_name, find_resume_point
from pipelines.config import OptimConfig, TrainConfig
from pipelines.distributed import DistributedContext
from pipelines.loop import TrainingDiverged, fit
from pipelines.metrics_log import read_metrics_log

CTX = DistributedContext()


def run(run_dir, *, total=7, batch_size=4, grad_accum=1, dropout=0.2, use_queue=True, interrupt_at=None,
        resume=None, validate=None, checkpoint_every=2, lr=0.05):
    torch.manual_seed(0)
    model = ContractDouble(dropout=dropout, use_queue=use_queue)
    train = TrainConfig(max_steps=total, batch_size=batch_size, grad_accum=grad_accum, seed=3, device="cpu",
                        checkpoint_every=checkpoint_every, keep_checkpoints=10, log_every=1)
    optim = OptimConfig(lr=lr, warmup_steps=2, grad_clip=1.0)

    def forward_kwargs(progress, steps_per_epoch):
        if interrupt_at is not None and progress.step == interrupt_at:
            raise KeyboardInterrupt
        return {"alpha": 0.4 * min(1.0, (progress.step + 1) / steps_per_epoch)}

    result = fit(model, RegressionSet(), collate, train=train, optim=optim, ctx=CTX, run_dir=run_dir,
                 forward_kwargs=forward_kwargs, resume_from=resume, validate=validate, show_progress=False)
    return model, result


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_b = b.state_dict()
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, state_b[name]), name


def without_timing(lines):
    return [{k: v for k, v in line.items() if k != "samples_per_s"} for line in lines]


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_interrupted_then_resumed_run_equals_uninterrupted_run(tmp_path, grad_accum):
    # 20 samples, batch 4: 5 micro-batches per epoch, so 7 steps cross epoch boundaries mid-way.
    reference, ref_result = run(tmp_path / "ref", grad_accum=grad_accum)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", grad_accum=grad_accum, interrupt_at=5)
    # Killed after step 5: the last checkpoint on disk is step 4; resume from it.
    checkpoints = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").glob("step_*"))
    assert checkpoints[-1] == checkpoint_name(4)
    resumed, result = run(tmp_path / "cut", grad_accum=grad_accum,
                          resume=tmp_path / "cut" / "checkpoints" / checkpoint_name(4))
    assert_same_state(reference, resumed)
    assert result.progress == ref_result.progress
    assert without_timing(read_metrics_log(tmp_path / "cut")) == without_timing(read_metrics_log(tmp_path / "ref"))
    assert [line["step"] for line in read_metrics_log(tmp_path / "cut")] == list(range(1, 8))


def test_resume_over_a_truncated_newest_checkpoint_takes_the_previous_one_exactly(tmp_path):
    reference, ref_result = run(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", interrupt_at=5)
    newest = tmp_path / "cut" / "checkpoints" / checkpoint_name(4)
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    point = find_resume_point(tmp_path / "cut")
    assert point.step == 2 and point.skipped[0][0] == newest
    resumed, result = run(tmp_path / "cut", resume=point.checkpoint)
    assert_same_state(reference, resumed)
    assert result.progress == ref_result.progress
    assert without_timing(read_metrics_log(tmp_path / "cut")) == without_timing(read_metrics_log(tmp_path / "ref"))


def test_resume_restores_optimizer_and_queue_not_just_weights(tmp_path):
    reference, _ = run(tmp_path / "ref")
    # Same weights but fresh optimizer moments / queue would diverge: check the resumed run needs them.
    run(tmp_path / "cut", total=7)
    checkpoint = tmp_path / "cut" / "checkpoints" / checkpoint_name(4)
    state_file = checkpoint / "training_state.pt"
    state = torch.load(state_file, weights_only=True)
    state["optimizer"]["state"] = {}
    torch.save(state, state_file)
    rewrite_checksums(checkpoint)  # a whole checkpoint, only without the optimizer moments
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / checkpoint_name(6))
    degraded, _ = run(tmp_path / "cut", resume=checkpoint)
    assert not torch.equal(reference.encoder.weight, degraded.encoder.weight)


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    # No dropout and no queue: the loss is a per-sample mean, so 2 x 4 accumulated == 1 x 8.
    full, _ = run(tmp_path / "full", total=4, batch_size=8, grad_accum=1, dropout=0.0, use_queue=False)
    accumulated, _ = run(tmp_path / "acc", total=4, batch_size=4, grad_accum=2, dropout=0.0, use_queue=False)
    for name, tensor in full.state_dict().items():
        torch.testing.assert_close(accumulated.state_dict()[name], tensor, rtol=1e-5, atol=1e-6)
    # Sanity: the comparison is sensitive — unequal batches give different weights.
    different, _ = run(tmp_path / "diff", total=4, batch_size=4, grad_accum=1, dropout=0.0, use_queue=False)
    assert not torch.allclose(different.encoder.weight, full.encoder.weight, atol=1e-4)


def test_validation_picks_the_best_checkpoint_and_keeps_it(tmp_path):
    scores = iter([0.1, 0.9, 0.3, 0.2])
    model, result = run(tmp_path, total=8, validate=lambda m: {"score": next(scores)})
    assert [v["step"] for v in result.validation] == [2, 4, 6, 8]
    assert result.chosen_checkpoint.name == checkpoint_name(4)
    assert result.final_checkpoint.name == checkpoint_name(8)
    assert result.chosen_checkpoint.is_dir() and result.final_checkpoint.is_dir()
    assert json.loads((tmp_path / "checkpoints" / "latest.json").read_text())["step"] == 8
    logged = [line for line in read_metrics_log(tmp_path) if "val/score" in line]
    assert [line["val/score"] for line in logged] == [0.1, 0.9, 0.3, 0.2]


def test_diverging_loss_stops_with_a_clear_error(tmp_path):
    with pytest.raises(TrainingDiverged, match="lower optim.lr"):
        run(tmp_path, total=3, lr=1e30)


def test_metrics_log_has_step_lr_losses_and_throughput(tmp_path):
    run(tmp_path, total=3)
    lines = read_metrics_log(tmp_path)
    assert [line["step"] for line in lines] == [1, 2, 3]
    for line in lines:
        assert {"epoch", "lr", "loss", "lm", "itc", "samples_per_s"} <= set(line)
        assert line["loss"] == pytest.approx(line["lm"] + line["itc"], rel=1e-5)
    # Linear warm-up over 2 steps, then cosine: lr after step 1 is half the peak.
    assert lines[0]["lr"] == pytest.approx(0.025)
