"""Old names kept after the shapes world moved to :mod:`find_rl.worlds.shapes`: the command
``python -m find_rl.shapes.train_base`` and the text-encoder module that pipelines saved before name in their
``model_index.json``. The code lives in the world's folder."""
