"""Training: fine-tuning with the Hugging Face Trainer, and task data preparation."""
