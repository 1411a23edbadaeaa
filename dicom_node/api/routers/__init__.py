"""Routers of the node API, one per resource."""
