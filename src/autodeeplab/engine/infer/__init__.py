"""Inference on trained networks: evaluation, prediction and their memory check."""
