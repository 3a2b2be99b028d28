"""What a policy is trained toward: reward calibration, the anchor, replay, mass-covering objectives (no Ray)."""
