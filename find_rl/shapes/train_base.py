"""``python -m find_rl.shapes.train_base``: the shapes model's training command under its old name
(:mod:`find_rl.worlds.shapes.train_base`)."""

import sys

from find_rl.worlds.shapes.train_base import main

if __name__ == "__main__":
    sys.exit(main())
