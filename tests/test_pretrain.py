"""Pretraining: distributed helpers, precision, a 2-process DDP run, and few-step ``motor pretrain`` runs."""
from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

from kg.errors import InputError
from loop_doubles import ddp_worker
from pipelines import distributed
from pipelines.precision import autocast, grad_scaler, resolve_precision

CPU = torch.device("cpu")


def test_distributed_helpers_are_no_ops_in_a_single_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = distributed.init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.is_distributed) == (0, 1, True, False)
    assert not distributed.is_initialized()
    distributed.barrier()
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.all_gather_object(3) == [3]
    value = torch.tensor([1.0, 2.0])
    mean = distributed.all_reduce_mean(value)
    assert torch.equal(mean, value) and mean is not value
    module = torch.nn.Linear(2, 2)
    assert distributed.unwrap(module) is module
    distributed.cleanup()


def test_device_and_precision_resolution():
    assert distributed.resolve_device("cpu") == CPU
    if not torch.cuda.is_available():
        assert distributed.resolve_device("auto") == CPU
        with pytest.raises(InputError, match="train.device=cpu"):
            distributed.resolve_device("cuda")
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    with pytest.raises(InputError, match="fp16 autocast needs a GPU"):
        resolve_precision("fp16", CPU)
    assert not grad_scaler("fp32", CPU).is_enabled()
    layer = torch.nn.Linear(4, 4)
    with autocast("bf16", CPU):
        assert layer(torch.randn(2, 4)).dtype == torch.bfloat16
    with autocast("fp32", CPU):
        assert layer(torch.randn(2, 4)).dtype == torch.float32


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # two fresh interpreters importing torch take ~20 s on 2 cores
def test_two_process_gloo_run_keeps_replicas_in_sync(tmp_path):
    mp.spawn(ddp_worker, args=(2, _free_port(), str(tmp_path / "run"), str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name in ("encoder.weight", "encoder.bias", "head.weight", "head.bias"):
        assert torch.equal(rank0["state"][name], rank1["state"][name]), name
    # 3 steps x batch 4 x 2 processes; each process saw its own shard.
    assert rank0["samples"] == 24
    checkpoint = tmp_path / "run" / "checkpoints" / "step_00000003"
    state = torch.load(checkpoint / "training_state.pt", weights_only=True)
    assert len(state["rng"]) == 2
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 3
