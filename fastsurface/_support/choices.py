"""Names a caller chooses from, in a module that imports nothing: the library checks its
arguments against them, and the command line declares them as ``choices`` without importing
the engine, the distributed runner or the benchmark behind them."""

# `method=` of the engine: "auto" picks one of the others for the model and the grid.
METHODS = ("auto", "closed_form", "vmap", "compiled")
# `shard=` of a distributed run: "auto" picks "grid" or "data" for the world and the grid.
SHARDS = ("auto", "grid", "data")
# The methods `fastsurface bench` times, in the order of its table.
BENCH_METHODS = ("closed_form", "compiled", "vmap")
