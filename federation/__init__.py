"""Laurel's federation: the server that validates and merges site updates, and its client."""
