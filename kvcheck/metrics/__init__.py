"""Pure metric functions on kvcheck records and tensors."""
