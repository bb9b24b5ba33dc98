"""Deprecated import path: the training code moved to `pskd.training` (so that `pskd.train`, the function that
trains a config, keeps its name however often it is called). `import pskd.train.<module>` still works for this
release, with a DeprecationWarning, and gives the very module of `pskd.training`."""

import importlib
import sys
import warnings

warnings.warn("pskd.train.<module> is now pskd.training.<module>; the old path goes in the next release",
              DeprecationWarning, stacklevel=2)

MOVED = ("diagnose", "distributed", "inference", "loop", "outputs", "recipe", "session", "state", "student",
         "teachers")

_function = sys.modules["pskd"].train  # `import pskd.train.loop as x` reads x from the attribute pskd.train
for _name in MOVED:
    _module = importlib.import_module(f"pskd.training.{_name}")
    sys.modules[f"{__name__}.{_name}"] = _module
    setattr(_function, _name, _module)
