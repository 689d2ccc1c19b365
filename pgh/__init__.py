"""Progressive Generative Hashing and its baselines."""
