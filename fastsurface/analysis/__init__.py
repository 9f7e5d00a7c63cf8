"""Analysis built on the engine: training paths, critical points, refinement, metrics."""
