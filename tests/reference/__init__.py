"""Slow, obvious implementations that the fast paths are tested against."""
