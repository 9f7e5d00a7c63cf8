"""Names a caller chooses from, in a module that imports nothing of the package: the
library checks its arguments against them, and the command line declares them as
``choices`` without importing the engine, the distributed runner or the benchmark."""

from typing import Literal, get_args

# `reduction=`: the exact mean over samples, or the mean of batch means (the article's loop).
Reduction = Literal["mean", "batch_mean"]
REDUCTIONS: tuple[Reduction, ...] = get_args(Reduction)
# `method=` of the engine: "auto" picks one of the others for the model and the grid.
Method = Literal["auto", "closed_form", "vmap", "compiled"]
METHODS: tuple[Method, ...] = get_args(Method)
# `shard=` of a distributed run: "auto" picks "grid" or "data" for the world and the grid.
SHARDS = ("auto", "grid", "data")
# `training_method=` of train_many: "auto" compiles a fused step where it pays off.
TRAINING_METHODS = ("auto", "vmap", "compiled")
# `color=` of plot_basins: each start coloured by its attractor, its final loss or its settling time.
COLOURINGS = ("attractor", "loss", "time")
# The methods `fastsurface bench` times, in the order of its table.
BENCH_METHODS: tuple[Method, ...] = ("closed_form", "compiled", "vmap")
# The model cases `fastsurface bench --model` times (fastsurface.model_bench), in the order of its table.
BENCH_MODELS = ("mlp-2-8-1-tanh", "mlp-10-32-32-1-tanh", "mlp-8-32-32-1-relu", "mlp-8-128-128-1-relu", "cnn-digits")
