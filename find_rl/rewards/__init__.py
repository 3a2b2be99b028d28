"""Rewards: the registry, the released-weight loaders, the scorer actors."""
