"""Evaluation: reconstruction/prediction quality of models side by side, speed, and set-vs-set FVD/KVD."""
