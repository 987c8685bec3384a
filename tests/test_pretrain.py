"""Pretraining: distributed helpers, precision, a 2-process DDP run, and few-step ``motor pretrain`` runs."""
from __future__ import annotations

import math
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


TINY = ["--set", "data.synthetic_n=24", "--set", "model.image_size=32", "--set", "train.batch_size=4",
        "--set", "eval.batch_size=8", "--set", "train.log_every=1"]


@pytest.mark.timeout(120)
def test_pretrain_cli_writes_the_bundle_and_resumes_a_killed_run_exactly(tmp_path, capsys):
    import hashlib
    import json
    import shutil

    import yaml
    from safetensors.torch import load_file

    from pipelines.cli import main

    full = tmp_path / "full"
    assert main(["pretrain", "--out", str(full), "--no-progress", "--knowledge", "full", *TINY,
                 "--set", "train.max_steps=3", "--set", "train.checkpoint_every=2"]) == 0
    for name in ("config.yaml", "env.json", "git.json", "run.json", "metrics.json", "metrics.md", "metrics.jsonl",
                 "model/model.safetensors", "tokenizer/tokenizer.json", "knowledge/sk.duckdb"):
        assert (full / name).is_file(), name
    config = yaml.safe_load((full / "config.yaml").read_text())
    assert config["model"]["knowledge"] == "full" and config["train"]["max_steps"] == 3
    env = json.loads((full / "env.json").read_text())
    assert "torch" in env["packages"] and env["device"] == "cpu"
    run_info = json.loads((full / "run.json").read_text())
    manifest = run_info["data"]["manifest"]
    assert manifest["sha256"] == hashlib.sha256(open(manifest["path"], "rb").read()).hexdigest()
    assert run_info["seeds"]["train"] == 0
    log = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in log if "loss" in row]
    assert [row["step"] for row in steps] == [1, 2, 3]
    for row in steps:
        assert {"lr", "itc", "itm", "lm", "mlc", "samples_per_s"} <= set(row)
        assert all(math.isfinite(row[key]) for key in ("loss", "itc", "itm", "lm", "mlc"))
    metrics = json.loads((full / "metrics.json").read_text())
    assert metrics["training"]["steps"] == 3
    assert 0.0 <= metrics["zero_shot_retrieval"]["itc"]["i2t_R@10"] <= 1.0

    # A run killed while its step-3 checkpoint was being copied: config.yaml, data, the step-2
    # checkpoint and a truncated step-3 one remain. Resume passes over the damaged one and says so.
    killed = tmp_path / "killed"
    shutil.copytree(full, killed)
    damaged = killed / "checkpoints" / "step_00000003" / "model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    for name in ("metrics.json", "metrics.md", "run.json", "env.json", "git.json"):
        (killed / name).unlink()
    shutil.rmtree(killed / "model")
    capsys.readouterr()
    assert main(["pretrain", "--resume", str(killed), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"resuming from step 2 ({killed / 'checkpoints' / 'step_00000002'})" in printed
    assert f"{damaged}: " in printed
    expected = load_file(full / "checkpoints" / "step_00000003" / "model.safetensors")
    resumed = load_file(killed / "checkpoints" / "step_00000003" / "model.safetensors")
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, resumed[name]), name
    assert json.loads((killed / "metrics.json").read_text())["zero_shot_retrieval"] == metrics["zero_shot_retrieval"]


def test_deterministic_runs_repeat_bit_for_bit_and_give_back_the_threads(tmp_path):
    from safetensors.torch import load_file

    from pipelines.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # what multi-threaded kernels need to vary between runs
    try:
        weights = []
        for name in ("a", "b"):
            out = tmp_path / name
            assert main(["pretrain", "--out", str(out), "--no-progress", *TINY, "--set", "train.max_steps=4",
                         "--set", "train.deterministic=true", "--set", "train.validate=false"]) == 0
            assert torch.get_num_threads() == 2  # the run lowered it to one and restored it
            weights.append(load_file(out / "model" / "model.safetensors"))
        assert weights[0].keys() == weights[1].keys()
        for name, tensor in weights[0].items():
            assert torch.equal(tensor, weights[1][name]), name
    finally:
        torch.set_num_threads(threads)


def test_make_deterministic_on_cpu_uses_one_thread_only_inside_the_run():
    from pipelines.prepare import keeps_thread_count, make_deterministic

    @keeps_thread_count
    def run(enabled: bool) -> int:
        make_deterministic(enabled, torch.device("cpu"))
        return torch.get_num_threads()

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert run(True) == 1 and torch.get_num_threads() == 2
        assert run(False) == 2
    finally:
        torch.set_num_threads(threads)


def test_pretrain_rejects_an_unknown_config_key(tmp_path, capsys):
    from pipelines.cli import main

    assert main(["pretrain", "--out", str(tmp_path), "--set", "train.batchsize=4"]) == 1
    assert "train.batchsize" in capsys.readouterr().err


@pytest.mark.timeout(180)
def test_demo_runs_every_stage_and_writes_the_summary(tmp_path, capsys):
    import json

    from pipelines.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n", "24", "--image-size", "32", "--steps", "2",
                 "--tasks", "diagnosis,vqa", "--finetune-epochs", "1", "--set", "train.batch_size=4",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for stage in range(1, 6):
        assert f"=== [{stage}/5]" in printed
    assert "knowledge store (radgraph)" in printed and "chance" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert [row["task"] for row in summary] == ["retrieval (zero-shot)", "diagnosis", "diagnosis", "vqa", "vqa", "vqa"]
    assert (out / "summary.md").read_text().startswith("# MOTOR demo")
    for task in ("diagnosis", "vqa"):
        assert (out / "finetune" / task / "metrics.json").is_file()
    assert str(out) in printed
