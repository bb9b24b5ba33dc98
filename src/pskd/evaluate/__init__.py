"""Metrics and reports, computed from predictions: nothing here trains or loads a model."""
