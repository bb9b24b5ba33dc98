"""Datasets, protocols and preprocessing: everything that happens to a clip before a model sees it.

The built-in datasets register themselves (pskd.data.registry) as a user's plugin does; importing the package
imports them."""

from pskd.data import berkeley_mhad, folder, mmact, synthetic, utd_mhad  # noqa: F401  (built-ins register here)
