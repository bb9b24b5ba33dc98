"""Datasets, protocols and preprocessing: everything that happens to a clip before a model sees it."""
