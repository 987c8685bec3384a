"""Run configurations as dataclasses, loaded from YAML and overridden from the command line.

A config file is a YAML mapping whose sections mirror the dataclasses below::

    model: {preset: tiny, knowledge: full}
    data: {synthetic_n: 600}
    optim: {lr: 1.0e-4, weight_decay: 0.05, warmup_steps: 10}
    train: {epochs: 2, batch_size: 16, checkpoint_every: 50}

``--set train.batch_size=8`` (any number of times) replaces one value; the value is read as YAML
(``8``, ``true``, ``null``, ``[1, 2]``) and converted to the field's type, so ``1e-4`` is a float
even though YAML alone would read it as a string. Unknown keys and values of the wrong type raise
:class:`kg.errors.InputError` naming the file and the dotted key.

The ``model`` section is a plain mapping: ``preset`` names a ``model/presets`` file and every other
key overrides a field of ``model.config.MotorConfig``; it is checked against that dataclass when
the model is built (:func:`resolve_model_config`).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kg.errors import InputError
from pipelines.tasks import TASKS

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
SCHEDULES = ("cosine", "constant")
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

C = TypeVar("C")


@dataclass
class DataConfig:
    """Where the studies come from.

    Attributes:
        manifest: a manifest JSONL (or a directory holding ``manifest.jsonl``); ``None`` generates the
            embedded synthetic set into the run directory.
        vqa_manifest: VQA manifest JSONL for ``--task vqa``; ``None`` uses ``vqa.jsonl`` beside the
            manifest.
        synthetic_n: studies in the generated synthetic set.
        synthetic_seed: seed of the generated synthetic set.
        num_workers: DataLoader worker processes (0 loads in the main process).
        missing: what a missing image does: ``"error"`` or ``"skip"`` the study.
    """

    manifest: str | None = None
    vqa_manifest: str | None = None
    synthetic_n: int = 600
    synthetic_seed: int = 0
    num_workers: int = 0
    missing: str = "error"


@dataclass
class TokenizerConfig:
    """The report tokenizer: a saved one (``path``) or a WordPiece vocabulary trained on the reports."""

    path: str | None = None
    vocab_size: int = 4000


@dataclass
class KnowledgeConfig:
    """Specific knowledge (SK) for pretraining.

    Attributes:
        store: an existing ``kg`` store to read SK sentences from; ``None`` builds one from the
            training split's reports into the run directory.
        sk_max_tokens: token budget of each study's SK sentence (MOTOR uses 90).
    """

    store: str | None = None
    sk_max_tokens: int = 90


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule (linear warm-up, then cosine decay to 0 or constant).

    Weight decay applies to weight matrices only; biases, norms and embeddings of size 1 are
    exempt, as in open_clip and BLIP's finetuning code.
    """

    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: str = "cosine"
    warmup_steps: int = 0
    grad_clip: float | None = None


@dataclass
class TrainConfig:
    """The training budget and its mechanics.

    Attributes:
        epochs: passes over the training split (ignored when ``max_steps`` is set).
        max_steps: optimizer steps to run in total; ``None`` means ``epochs`` full epochs.
        batch_size: studies per micro-batch per process.
        grad_accum: micro-batches per optimizer step; the effective batch is
            ``batch_size * grad_accum * world_size``.
        seed: seed of initialisation, data order and every random draw of the run.
        precision: ``auto`` (bf16 autocast on a GPU that supports it, else fp16 with loss scaling;
            fp32 on CPU), ``fp32``, ``bf16`` or ``fp16``.
        device: ``auto``, ``cpu`` or ``cuda``.
        checkpoint_every: save every N optimizer steps (0: only at the end).
        keep_checkpoints: periodic checkpoints kept besides the final and the chosen one.
        log_every: write a metrics line every N optimizer steps.
        validate: score each checkpoint on the validation split and record the best as chosen.
        find_unused_parameters: passed to DistributedDataParallel; only needed when a forward pass
            may leave parameters without gradient.
        deterministic: make the run bitwise repeatable (:func:`pipelines.prepare.make_deterministic`):
            one CPU thread per process, and deterministic CUDA kernels, at a cost in speed. Without
            it, multi-threaded CPU kernels sum in a varying order, and two runs with the same seed
            drift apart (measured in ``benchmarks/RESULTS.md``).
    """

    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 16
    grad_accum: int = 1
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 10
    validate: bool = True
    find_unused_parameters: bool = False
    deterministic: bool = False


@dataclass
class EvalConfig:
    """Evaluation settings.

    Attributes:
        batch_size: studies per forward pass.
        max_length: longest generated report, in tokens.
        num_beams: beam width of beam-search generation (greedy is always reported too).
        zero_shot: also evaluate the model before finetuning (retrieval).
        itm_k: retrieval also re-ranks each query's top ``itm_k`` ITC candidates by ITM (0: ITC only).
        meteor: METEOR of generated reports: ``java`` (METEOR 1.5, needs a Java runtime), ``nltk``
            (NLTK's approximation, no Java) or ``off``.
        radgraph_annotations: ``[HYPS.json, REFS.json]``, the ``radgraph`` package's annotations of
            the greedy generated and the reference test reports, for F1-RadGraph; ``None``:
            motor-kg's rules annotator annotates them (:mod:`pipelines.metrics.radgraph`).
    """

    batch_size: int = 32
    max_length: int = 60
    num_beams: int = 3
    zero_shot: bool = True
    itm_k: int = 0
    meteor: str = "java"
    radgraph_annotations: tuple[str, str] | None = None


@dataclass
class PretrainConfig:
    """Everything a pretraining run needs; ``pipelines/configs/pretrain_*.yaml`` are instances."""

    model: dict[str, Any] = field(default_factory=lambda: {"preset": "tiny"})
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        _check_common(self.train, self.optim, self.data)
        _check_eval(self.eval)


@dataclass
class FinetuneConfig:
    """A downstream finetuning run; ``pipelines/configs/finetune_<task>.yaml`` are instances.

    Attributes:
        task: ``retrieval``, ``generation``, ``diagnosis`` or ``vqa``.
        init_from: a pretraining run directory or a saved model directory (``--from``).
        model: MotorConfig overrides applied to the loaded model's config (e.g. dropout).
        knowledge_at_finetune: keep a MOTOR model's GK / SK paths while finetuning and evaluating
            (``true``, the default) or drop them and finetune plain BLIP from the pretrained
            weights (``false``, what the reference code does for every task).
        vqa_head: ``single`` (one classifier over every answer) or ``question_type`` (a
            question-type classifier and separate closed / open answer classifiers, the
            reference code's); VQA only.
    """

    task: str = "retrieval"
    init_from: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    knowledge_at_finetune: bool = True
    vqa_head: str = "single"
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        _check_choice(self.task, TASKS, "task")
        if not isinstance(self.knowledge_at_finetune, bool):
            raise InputError(f"must be true or false; got {self.knowledge_at_finetune!r}",
                             field="knowledge_at_finetune")
        _check_choice(self.vqa_head, ("single", "question_type"), "vqa_head")
        _check_common(self.train, self.optim, self.data)
        _check_eval(self.eval)


def _check_choice(value: Any, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise InputError(f"must be one of {', '.join(choices)}; got {value!r}", field=key)


def _check_common(train: TrainConfig, optim: OptimConfig, data: DataConfig) -> None:
    _check_choice(train.precision, PRECISIONS, "train.precision")
    _check_choice(train.device, DEVICES, "train.device")
    _check_choice(optim.schedule, SCHEDULES, "optim.schedule")
    _check_choice(data.missing, ("error", "skip"), "data.missing")
    positive = {
        "train.batch_size": train.batch_size,
        "train.grad_accum": train.grad_accum,
        "train.epochs": train.epochs,
        "train.log_every": train.log_every,
        "data.synthetic_n": data.synthetic_n,
    }
    if train.max_steps is not None:
        positive["train.max_steps"] = train.max_steps
    for key, value in positive.items():
        if value < 1:
            raise InputError(f"must be at least 1; got {value}", field=key)
    for key, value in {
        "train.checkpoint_every": train.checkpoint_every,
        "train.keep_checkpoints": train.keep_checkpoints,
        "optim.warmup_steps": optim.warmup_steps,
        "data.num_workers": data.num_workers,
    }.items():
        if value < 0:
            raise InputError(f"must not be negative; got {value}", field=key)
    if optim.lr <= 0:
        raise InputError(f"must be positive; got {optim.lr}", field="optim.lr")


def _check_eval(evaluation: EvalConfig) -> None:
    _check_choice(evaluation.meteor, ("java", "nltk", "off"), "eval.meteor")
    for key, value, least in (
        ("eval.batch_size", evaluation.batch_size, 1),
        ("eval.max_length", evaluation.max_length, 2),
        ("eval.num_beams", evaluation.num_beams, 1),
        ("eval.itm_k", evaluation.itm_k, 0),
    ):
        if value < least:
            raise InputError(f"must be at least {least}; got {value}", field=key)


def from_dict(cls: type[C], data: Any, *, file: str | Path | None = None, prefix: str = "") -> C:
    """Build dataclass ``cls`` from a mapping, converting values to the declared field types.

    Raises:
        InputError: an unknown key, a value that does not fit its field's type, or an invalid
            setting; the message names ``file`` and the dotted key.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping, got {type(data).__name__}", file=file, field=prefix.rstrip(".") or None)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(
            f"unknown key; expected one of {', '.join(sorted(names))}", file=file, field=prefix + str(unknown[0])
        )
    values = {name: _convert(data[name], hints[name], file=file, key=prefix + name) for name in data}
    try:
        return cls(**values)
    except InputError as err:
        raise InputError(err.message, file=file, field=err.field) from None


def _convert(value: Any, hint: Any, *, file: str | Path | None, key: str) -> Any:
    """``value`` as an instance of type ``hint`` (dataclass, scalar, Optional, tuple or dict)."""
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, file=file, prefix=key + ".")
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _convert(value, inner, file=file, key=key)
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"expected a mapping, got {value!r}", file=file, field=key)
        return dict(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise InputError(f"expected a list of {len(args)} values, got {value!r}", file=file, field=key)
        return tuple(_convert(v, a, file=file, key=f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    return _scalar(value, hint, file=file, key=key)


def _scalar(value: Any, hint: type, *, file: str | Path | None, key: str) -> Any:
    def bad() -> InputError:
        return InputError(f"expected {hint.__name__}, got {value!r}", file=file, field=key)

    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad()
    if hint is float:
        # PyYAML reads "1e-4" (no dot) as a string; accept any number spelling a user would write.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad() from None
        raise bad()
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad()
    raise TypeError(f"unsupported config field type {hint!r} for {key}")


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, Any]]:
    """``["a.b=1", ...]`` → ``[("a.b", 1), ...]`` with each value read as YAML.

    Raises:
        InputError: an item without ``=`` or with an empty key.
    """
    parsed = []
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"override {item!r} must look like key.sub=value", field="--set")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise InputError(f"value {raw!r} is not valid YAML: {err}", field=key.strip()) from None
        parsed.append((key.strip(), value))
    return parsed


def _set_path(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise InputError(f"{'.'.join(parts[: depth + 1])} is not a section", field=key)
        node = child
    node[parts[-1]] = value


def load_config(
    cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None, *, base: dict | None = None
) -> C:
    """Read a config of type ``cls`` from YAML ``path`` and apply ``key=value`` overrides.

    Args:
        cls: :class:`PretrainConfig` or :class:`FinetuneConfig`.
        path: YAML file; ``None`` starts from the dataclass defaults (or ``base``).
        overrides: ``--set`` items, applied in order after the file.
        base: a mapping to start from before the file (e.g. a saved run's resolved config).

    Raises:
        InputError: missing file, invalid YAML, unknown key or wrongly typed value.
    """
    data: dict[str, Any] = to_dict(from_dict(cls, base or {}))
    source: str | None = None
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise InputError("config file not found", file=path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise InputError(f"not valid YAML: {err}", file=path) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise InputError("a config file must be a YAML mapping of sections", file=path)
        _merge(data, loaded or {})
    config = from_dict(cls, data, file=source)
    pairs = parse_overrides(overrides)
    if not pairs:
        return config
    data = to_dict(config)
    for key, value in pairs:
        _set_path(data, key, value)
    return from_dict(cls, data, file="--set")


def _merge(target: dict[str, Any], updates: dict[str, Any]) -> None:
    """Deep-merge ``updates`` into ``target`` (mappings merge, everything else replaces)."""
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def to_dict(config: Any) -> dict[str, Any]:
    """A config as plain YAML-ready data (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))


def dump_config(config: Any) -> str:
    """The config as YAML text, in field order."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def builtin_config(name: str) -> Path:
    """Path of a shipped config, e.g. ``builtin_config("pretrain_tiny")``.

    Raises:
        InputError: no such shipped config (the available names are listed).
    """
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise InputError(f"no shipped config {name!r}; available: {', '.join(names)}")
    return path


def finetune_config_for(task: str, method: str) -> Path:
    """The shipped finetuning config of ``task`` for a model of ``method``: ``finetune_<task>_<method>.yaml``
    when the method has its own (its loss weights differ from MOTOR's), else ``finetune_<task>.yaml``."""
    own = CONFIG_DIR / f"finetune_{task}_{method}.yaml"
    return own if own.is_file() else builtin_config(f"finetune_{task}")


def resolve_model_config(model: dict[str, Any], *, base: Any = None) -> Any:
    """The model config of a ``model`` section, of its method's config class.

    Args:
        model: ``{"method": name, "preset": name, field: value, ...}``; ``method`` (default
            ``motor``) picks the config class from :mod:`model.registry`, the preset (default
            ``tiny``; for M3AE / ARL ``tiny`` reads ``<method>_tiny.yaml``) is the starting point
            unless ``base`` is given, then the other keys replace fields.
        base: an existing model config to override instead of a preset (finetuning); its method is
            kept.

    Raises:
        InputError: an unknown method or field, or a value the model config rejects.
    """
    from model.pretrained import saved_method_name
    from model.registry import DEFAULT_METHOD, get_method

    overrides = dict(model)
    preset = overrides.pop("preset", None)
    method = overrides.pop("method", None)
    if base is not None:
        if method is not None and method != saved_method_name(base):
            raise InputError(f"the loaded model is {saved_method_name(base)}, not {method}", field="model.method")
        method = saved_method_name(base)
    try:
        config_class = get_method(method or DEFAULT_METHOD).config_class()
    except InputError as err:
        raise InputError(err.message, field="model.method") from None
    if base is None:
        base = config_class.preset(preset or "tiny")
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise InputError(f"unknown model setting; {config_class.__name__} has {', '.join(sorted(names))}",
                         field=f"model.{unknown[0]}")
    data = base.to_dict()
    _merge(data, overrides)  # nested sections (``coattention.mim.enabled``) change field by field
    try:
        return config_class.from_dict(data)
    except InputError as err:
        raise InputError(err.message, field=f"model.{err.field}" if err.field else "model") from None
