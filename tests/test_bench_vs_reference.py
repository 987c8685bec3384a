"""The reference comparison script refuses a missing checkout and unusable sizes before building anything."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_vs_reference.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("bench_vs_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script loads
    spec.loader.exec_module(module)
    return module


def test_missing_reference_dir_exits_naming_it_and_the_file_it_needs(tmp_path: Path) -> None:
    bench = _load_benchmark()
    missing = tmp_path / "no_motor_here"
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--reference-dir", str(missing), "--steps", "1"])
    message = str(exit_info.value.code)
    assert str(missing) in message
    assert "models/blip_pretrain.py" in message


def test_directory_without_the_pretraining_model_is_refused(tmp_path: Path) -> None:
    bench = _load_benchmark()
    (tmp_path / "models").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        bench.check_reference_dir(tmp_path)
    assert "not a MOTOR reference checkout" in str(exit_info.value.code)


def test_checkout_with_the_pretraining_model_is_accepted(tmp_path: Path) -> None:
    bench = _load_benchmark()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "blip_pretrain.py").write_text("")
    assert bench.check_reference_dir(tmp_path) == tmp_path.resolve()


def test_defaults_are_the_issue_settings(tmp_path: Path) -> None:
    args = _load_benchmark().parse_args(["--reference-dir", str(tmp_path)])
    assert (args.batch, args.threads, args.queue_size) == (8, 1, 256)


@pytest.mark.parametrize("batch", ["1", "7"])
def test_batch_that_cannot_fill_the_reference_queue_is_a_usage_error(
    tmp_path: Path, batch: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _load_benchmark().parse_args(["--reference-dir", str(tmp_path), "--batch", batch])
    assert exit_info.value.code == 2
    assert "--batch" in capsys.readouterr().err


def test_checkout_that_cannot_be_imported_exits_naming_it_and_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = _load_benchmark()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "blip_pretrain.py").write_text("")
    (tmp_path / "models" / "med.py").write_text("import a_module_that_is_not_installed\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in [n for n in sys.modules if n == "models" or n.startswith("models.")]:
        monkeypatch.delitem(sys.modules, name)
    try:
        with pytest.raises(SystemExit) as exit_info, bench.patched_reference(tmp_path, None, None):
            pass
    finally:
        for name in [n for n in sys.modules if n == "models" or n.startswith("models.")]:
            del sys.modules[name]
    message = str(exit_info.value.code)
    assert str(tmp_path) in message
    assert "a_module_that_is_not_installed" in message
