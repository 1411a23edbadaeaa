"""Assembling processes: the supervisor of `laurel serve`, its intake, API and worker children; the in-process
node."""
