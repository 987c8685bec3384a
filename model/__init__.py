"""MOTOR model: encoders, knowledge paths, losses and task heads (no training code).

Entry points::

    from model import MotorConfig, MotorCollator, build_model, load_tokenizer, train_tokenizer

    config = MotorConfig.preset("tiny")              # or MotorConfig.from_yaml(path)
    tokenizer = train_tokenizer(reports, "run/tokenizer")
    model = build_model(config, tokenizer)
    output = model(MotorCollator.from_config(tokenizer, config)(samples))
    output.loss.backward()
"""
from model.config import KNOWLEDGE_VARIANTS, MotorConfig
from model.heads import DiagnosisHead, VQAHead
from model.motor import MotorModel, MotorOutput, build_model
from model.processing import MotorCollator
from model.tokenizer import load_tokenizer, train_tokenizer

__all__ = [
    "KNOWLEDGE_VARIANTS",
    "DiagnosisHead",
    "MotorCollator",
    "MotorConfig",
    "MotorModel",
    "MotorOutput",
    "VQAHead",
    "build_model",
    "load_tokenizer",
    "train_tokenizer",
]
