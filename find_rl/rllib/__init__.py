"""FIND on RLlib: the config, the learner, its connectors, the RLModules, the Ray session."""
