"""The engine: loss values at grid points or listed points of a plane, in a few kernel calls."""
