"""The `laurel` console script and its command groups."""
