"""Training and inference machinery shared by every model family: devices, precision, batching, checkpoints."""
