"""Ray Tune search spaces for find_rl, installed as ``find_rl.tuning``."""
