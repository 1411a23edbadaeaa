"""Synthetic MR phantom of the lower leg and thigh (SYNTHETIC data, no patient)."""
