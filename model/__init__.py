"""MOTOR model: encoders, knowledge paths, losses and task heads (no training code)."""
