"""Data: image decoding, classification sets for pretraining, image targets for scoring, segmentation targets."""
