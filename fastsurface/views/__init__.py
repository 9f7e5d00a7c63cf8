"""Figures of surfaces and paths, and writing them to files."""
