"""The architecture search stage: its loop, step, data, schedule, strategies, checkpoints
and report."""
