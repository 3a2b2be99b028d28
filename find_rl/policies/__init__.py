"""The noise-policy families' math and the portable export format (no Ray)."""
