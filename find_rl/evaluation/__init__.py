"""Scoring fresh samples of a policy: alignment, diversity, grids and reports."""
