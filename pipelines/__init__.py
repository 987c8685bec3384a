"""motor-kg training package: data, pretraining, ablation, finetuning and evaluation of MOTOR."""
