"""One FIND run: its loop, its artefacts, its live tracking and metrics."""
