"""Does the score predict Dice? Tables of checkpoints, correlations, selection rules, plots, report files."""
