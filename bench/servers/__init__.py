"""The article's serving designs, rebuilt as baselines (S1, S2, S3)."""
