"""Label-aware transferability baselines (LogME, linear-probe Dice): a shared layer beside fine-tuning and the report."""
