"""Checkpoints: exact round trip of weights, optimizer, scheduler, RNGs and progress; no unpickling;
verification of every file and fallback past damaged checkpoints."""
from __future__ import annotations

import hashlib
import json
import pickle
import random

import numpy as np
import pytest
import torch
from torch import nn

from kg.errors import InputError
from pipelines import checkpoint as ckpt
from pipelines.checkpoint import (
    CheckpointError,
    TrainingProgress,
    capture_rng_state,
    find_resume_point,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


class TiedNet(nn.Module):
    """Two layers sharing one weight (as a decoder shares word embeddings) plus a queue buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.decoder = nn.Linear(4, 4)
        self.decoder.weight = self.encoder.weight
        self.register_buffer("queue", torch.zeros(6, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.relu(self.encoder(x)))


def trained(seed: int = 0) -> tuple[TiedNet, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(seed)
    model = TiedNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(5, 4)).pow(2).mean().backward()
        optimizer.step()
        scheduler.step()
    model.queue.copy_(torch.randn(6, 4))
    return model, optimizer, scheduler


def test_round_trip_restores_everything_exactly(tmp_path):
    model, optimizer, scheduler = trained()
    progress = TrainingProgress(step=3, epoch=1, batches_in_epoch=2, samples_seen=15, extra={"best": 0.5})
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    path = save_checkpoint(tmp_path / "checkpoints", model, progress, optimizer=optimizer, scheduler=scheduler)
    expected_draws = (random.random(), np.random.rand(), torch.rand(3))

    fresh, fresh_opt, fresh_sched = trained(seed=99)
    random.seed(0)
    loaded = load_checkpoint(path, fresh, optimizer=fresh_opt, scheduler=fresh_sched)
    assert loaded == progress
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, fresh.state_dict()[name]), name
    assert fresh.decoder.weight is fresh.encoder.weight  # sharing survives loading
    assert fresh_sched.state_dict() == scheduler.state_dict()
    for (_, a), (_, b) in zip(optimizer.state_dict()["state"].items(), fresh_opt.state_dict()["state"].items()):
        assert all(torch.equal(a[k], b[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    # The RNGs continue exactly where they were at save time.
    assert (random.random(), np.random.rand()) == expected_draws[:2]
    assert torch.equal(torch.rand(3), expected_draws[2])


def test_rng_capture_restore_round_trip():
    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(2))
    restore_rng_state(state)
    assert (random.random(), np.random.rand()) == first[:2]
    assert torch.equal(torch.rand(2), first[2])


def test_state_file_is_read_with_weights_only(tmp_path):
    model, optimizer, _ = trained()
    path = save_checkpoint(tmp_path, model, TrainingProgress(step=1), optimizer=optimizer)
    # Loads under the strict unpickler...
    torch.load(path / ckpt.STATE_FILE, weights_only=True)
    # ...and a state file carrying an arbitrary Python object is refused, not executed: by its
    # checksum first, and by the strict unpickler even when the checksums are rewritten to match.
    torch.save({"format_version": 2, "payload": pickle.loads(pickle.dumps(TrainingProgress()))}, path / ckpt.STATE_FILE)
    with pytest.raises(CheckpointError, match="training_state.pt: .*written"):
        load_checkpoint(path, TiedNet())
    rewrite_checksums(path)
    with pytest.raises(CheckpointError, match="training_state.pt: unreadable training state \\(UnpicklingError"):
        load_checkpoint(path, TiedNet())


def rewrite_checksums(path):
    """Record the files' current sizes and digests, as if they had been written so."""
    marker = path / ckpt.CHECKSUMS_FILE
    recorded = json.loads(marker.read_text())
    for name in recorded["files"]:
        data = (path / name).read_bytes()
        recorded["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    marker.write_text(json.dumps(recorded))


def test_latest_pointer_resolution_and_pruning(tmp_path):
    model, _, _ = trained()
    for step in (2, 4, 6):
        save_checkpoint(tmp_path / "checkpoints", model, TrainingProgress(step=step))
    assert latest_checkpoint(tmp_path).name == "step_00000006"
    assert resolve_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_00000006"
    assert resolve_checkpoint(tmp_path / "checkpoints" / "step_00000002").name == "step_00000002"
    assert json.loads((tmp_path / "checkpoints" / "latest.json").read_text())["step"] == 6
    assert latest_checkpoint(tmp_path / "elsewhere") is None
    removed = prune_checkpoints(tmp_path / "checkpoints", keep=1, protect={"step_00000002"})
    assert removed == ["step_00000004"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_00000002", "step_00000006"]
    with pytest.raises(InputError, match="no checkpoint"):
        resolve_checkpoint(tmp_path / "elsewhere")


def test_failed_save_leaves_previous_checkpoint_untouched(tmp_path, monkeypatch):
    model, _, _ = trained()
    path = save_checkpoint(tmp_path, model, TrainingProgress(step=5))
    before = {p.name: p.read_bytes() for p in path.iterdir()}

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    model.queue.fill_(7.0)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, model, TrainingProgress(step=5))
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_mismatched_model_and_missing_files_are_clear_errors(tmp_path):
    model, _, _ = trained()
    path = save_checkpoint(tmp_path, model, TrainingProgress(step=1))
    with pytest.raises(InputError, match="do not fit"):
        load_checkpoint(path, nn.Linear(4, 4))
    with pytest.raises(InputError, match="no optimizer state"):
        load_checkpoint(path, TiedNet(), optimizer=torch.optim.SGD(TiedNet().parameters(), lr=1))
    (path / ckpt.MODEL_FILE).unlink()
    with pytest.raises(InputError, match="model.safetensors is missing"):
        load_checkpoint(path, TiedNet())


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# Each way the newest checkpoint can be damaged, and the file a user must be told about.
DAMAGE = {
    "truncated weights": (lambda c: truncate(c / ckpt.MODEL_FILE), ckpt.MODEL_FILE),
    "truncated state": (lambda c: truncate(c / ckpt.STATE_FILE), ckpt.STATE_FILE),
    "empty state": (lambda c: (c / ckpt.STATE_FILE).write_bytes(b""), ckpt.STATE_FILE),
    "empty weights": (lambda c: (c / ckpt.MODEL_FILE).write_bytes(b""), ckpt.MODEL_FILE),
    "foreign pickle": (lambda c: (c / ckpt.STATE_FILE).write_bytes(pickle.dumps(TrainingProgress(step=6))),
                       ckpt.STATE_FILE),
    "missing marker": (lambda c: (c / ckpt.CHECKSUMS_FILE).unlink(), ckpt.CHECKSUMS_FILE),
    "same size, altered": (lambda c: (c / ckpt.MODEL_FILE).write_bytes(bytes(len((c / ckpt.MODEL_FILE).read_bytes()))),
                           ckpt.MODEL_FILE),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_resume_falls_back_past_a_damaged_newest_checkpoint(tmp_path, damage):
    model, optimizer, scheduler = trained()
    for step in (2, 4, 6):
        save_checkpoint(tmp_path / "checkpoints", model, TrainingProgress(step=step), optimizer=optimizer,
                        scheduler=scheduler)
    newest = tmp_path / "checkpoints" / "step_00000006"
    corrupt, culprit = DAMAGE[damage]
    corrupt(newest)

    point = find_resume_point(tmp_path)
    assert (point.checkpoint.name, point.step) == ("step_00000004", 4)
    assert [path for path, _ in point.skipped] == [newest]
    assert str(newest / culprit) in point.skipped[0][1]
    assert point.describe().startswith(f"resuming from step 4 ({tmp_path / 'checkpoints' / 'step_00000004'})")
    assert str(newest / culprit) in point.describe()
    assert latest_checkpoint(tmp_path) == resolve_checkpoint(tmp_path) == point.checkpoint
    fresh, fresh_opt, fresh_sched = trained(seed=5)
    assert load_checkpoint(point.checkpoint, fresh, optimizer=fresh_opt, scheduler=fresh_sched).step == 4
    # Named explicitly, the damaged checkpoint is refused, naming the file, never loaded.
    with pytest.raises(CheckpointError) as caught:
        find_resume_point(newest)
    assert caught.value.file == str(newest / culprit)
    with pytest.raises(CheckpointError):
        load_checkpoint(newest, TiedNet())


def test_no_checkpoint_that_verifies_is_an_error_naming_each_file(tmp_path):
    model, _, _ = trained()
    for step in (2, 4):
        save_checkpoint(tmp_path / "checkpoints", model, TrainingProgress(step=step))
    truncate(tmp_path / "checkpoints" / "step_00000004" / ckpt.MODEL_FILE)
    (tmp_path / "checkpoints" / "step_00000002" / ckpt.STATE_FILE).write_bytes(b"")
    with pytest.raises(CheckpointError, match="no checkpoint verifies") as caught:
        find_resume_point(tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "checkpoints" / "step_00000004" / ckpt.MODEL_FILE) in message
    assert str(tmp_path / "checkpoints" / "step_00000002" / ckpt.STATE_FILE) in message
    # `--resume auto` must not take this for a run without checkpoints (a fresh run would delete them).
    with pytest.raises(CheckpointError):
        latest_checkpoint(tmp_path)


def make_format_1(path):
    """A checkpoint as written before checksums.json existed."""
    state = torch.load(path / ckpt.STATE_FILE, weights_only=True)
    state["format_version"] = 1
    torch.save(state, path / ckpt.STATE_FILE)
    (path / ckpt.CHECKSUMS_FILE).unlink()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_format_1_checkpoints_verify_by_being_read_whole(tmp_path):
    model, optimizer, _ = trained()
    old = save_checkpoint(tmp_path / "checkpoints", model, TrainingProgress(step=3), optimizer=optimizer)
    make_format_1(old)
    assert find_resume_point(tmp_path).checkpoint == old
    fresh = TiedNet()
    assert load_checkpoint(old, fresh, optimizer=torch.optim.AdamW(fresh.parameters(), lr=0.1)).step == 3
    assert torch.equal(fresh.queue, model.queue)
    # Without checksums, damage is found by reading: truncated weights, a foreign state file.
    weights = (old / ckpt.MODEL_FILE).read_bytes()
    truncate(old / ckpt.MODEL_FILE)
    with pytest.raises(CheckpointError, match="model.safetensors: unreadable weights"):
        find_resume_point(old)
    (old / ckpt.MODEL_FILE).write_bytes(weights)
    (old / ckpt.STATE_FILE).write_bytes(pickle.dumps(TrainingProgress(step=3)))
    with pytest.raises(CheckpointError, match="training_state.pt: unreadable training state"):
        find_resume_point(old)
