"""Frozen diffusion pipelines: loading, sampling from given initial noise, random-weight stand-ins."""
