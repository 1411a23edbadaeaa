"""Laurel."""
