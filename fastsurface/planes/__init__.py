"""Planes through a model's parameters: the `Plane` type and the directions that span it."""
