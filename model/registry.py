"""Methods by name: the one place a vision-language method (MOTOR, M3AE, ARL, MedViLL) is registered.

A method is a name that resolves to its config class, its model class and its presets, the way
LAVIS registers models and PyKEEN resolves classes by name. A new method is one module (its
composition) plus one :func:`register_method` line below and its presets; nothing else in the
project lists methods. Entries name their classes as ``"module:attribute"`` so that looking a
method up does not import torch.

Typical use::

    from model.registry import get_method
    motor = get_method("motor")
    config = motor.config_class().preset("tiny")
    model = motor.build(config, tokenizer)
    model = motor.model_class().from_pretrained("runs/pretrain/model")
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from kg.errors import InputError


@dataclass(frozen=True)
class Method:
    """One registered method.

    Attributes:
        name: the method's name (``"motor"``).
        config: ``"module:Class"`` of its config dataclass (``preset``, ``from_dict``, ``to_dict``).
        model: ``"module:Class"`` of its model (``from_pretrained``, ``save_pretrained``).
        builder: ``"module:function"`` building the model from ``(config, tokenizer)``.
    """

    name: str
    config: str
    model: str
    builder: str

    def config_class(self) -> type:
        """The config dataclass."""
        return _resolve(self.config)

    def model_class(self) -> type:
        """The model class."""
        return _resolve(self.model)

    def build(self, config: Any, tokenizer: Any, **inputs: Any) -> Any:
        """A freshly initialised model for ``config`` (``inputs``: what the builder also takes, e.g.
        ARL's ``entity_names``)."""
        return _resolve(self.builder)(config, tokenizer, **inputs)


_METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add ``method`` to the registry.

    Raises:
        ValueError: a method of that name is already registered.
    """
    if method.name in _METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    _METHODS[method.name] = method
    return method


def method_names() -> tuple[str, ...]:
    """The registered method names, in registration order."""
    return tuple(_METHODS)


def get_method(name: str) -> Method:
    """The method called ``name``.

    Raises:
        InputError: no method of that name (naming the registered ones).
    """
    if name not in _METHODS:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(_METHODS)}", field="method")
    return _METHODS[name]


def _resolve(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


#: The method every pipeline uses unless told otherwise.
DEFAULT_METHOD = "motor"

MOTOR = register_method(
    Method(name="motor", config="model.config:MotorConfig", model="model.motor:MotorModel", builder="model.motor:build_model")
)
M3AE = register_method(
    Method(name="m3ae", config="model.m3ae_config:M3AEConfig", model="model.m3ae:M3AEModel", builder="model.m3ae:build_model")
)
ARL = register_method(
    Method(name="arl", config="model.m3ae_config:ARLConfig", model="model.m3ae:ARLModel", builder="model.m3ae:build_arl")
)

MEDVILL = register_method(
    Method(name="medvill", config="model.medvill_config:MedVillConfig", model="model.medvill:MedVillModel",
           builder="model.medvill:build_medvill")
)
