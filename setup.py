"""Packages are found, not listed: every package under ``find_rl/``, plus the two top-level folders that install
inside it (``envs/`` as ``find_rl.envs``, ``tuning/`` as ``find_rl.tuning``: the layout users were promised).
Everything else is declared in ``pyproject.toml``; a test builds the wheel and imports every module from it."""

from setuptools import find_packages, setup

MAPPED = {"find_rl.envs": "envs", "find_rl.tuning": "tuning"}

setup(packages=find_packages(include=["find_rl", "find_rl.*"]) + list(MAPPED), package_dir=MAPPED)
