"""Evaluation: FID, precision/recall, toy and digits metrics, sample grids."""
