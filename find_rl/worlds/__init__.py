"""Embedded procedural worlds: exact data generators and scorers to train and judge small diffusion models."""
