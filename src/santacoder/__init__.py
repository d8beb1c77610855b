"""Train SantaCoder-style code models: GPT-2 with multi-query attention and fill-in-the-middle.

The public API is ``santacoder.api``'s, re-exported here. The package is arranged in layers, each importing only
those below it (``make lint`` checks it; siblings in one layer never import each other), from the bottom up:
``errors`` -> ``config`` -> ``model``, ``text``, ``conf`` -> ``data``, ``checkpoints``, ``inference`` ->
``training``, ``evaluation``, ``search`` -> ``bench`` -> ``api``, ``cli``.
"""

from santacoder import legacy_paths
from santacoder.api import *  # noqa: F403 (the facade: every name of santacoder.api.__all__)
from santacoder.api import __all__  # noqa: F401

legacy_paths.install()  # run directories and checkpoints from before the layers name old module paths
