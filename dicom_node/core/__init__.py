"""Shared by every process: configuration, the index (tables, migrations), the job queue, metrics, tokens."""
