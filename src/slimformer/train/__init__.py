"""Training: Trainer arguments, checkpoints and resume, shared options, learning curves, task data as a dataset."""
