"""The training loop shared by every model and method."""
