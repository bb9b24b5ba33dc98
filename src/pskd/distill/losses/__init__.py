"""One module per loss. Each takes student and teacher outputs as tensors and returns a scalar."""
