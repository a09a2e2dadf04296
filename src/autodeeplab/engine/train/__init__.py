"""The retraining stage: its loop, data, model and resumable state."""
