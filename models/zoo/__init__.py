"""Shipped model packages (leg, thigh) and their definitions."""
