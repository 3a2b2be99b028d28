"""Settings, metric names, the observation layout, progress rows, checkpoints (no Ray)."""
