"""``fastsurface surface``: a test-loss surface (the seed problem's, or ``--model``'s on ``--plane``),
resumable, saved to a file."""

from __future__ import annotations

import argparse

import fastsurface as fs
from fastsurface._support.choices import SHARDS
from fastsurface.cli import _models, _shared
from fastsurface.cli.exit_codes import ExitCode
from fastsurface.errors import FastsurfaceError


def declare(parser: argparse.ArgumentParser) -> None:
    """The flags of ``surface`` beyond the seed problem's: sharding and checkpoints."""
    parser.add_argument(
        "--shard",
        choices=SHARDS,
        default="auto",
        help="under torchrun: split the grid's blocks or the data among ranks",
    )
    parser.add_argument("--checkpoint-dir", help="folder for finished blocks; a rerun resumes from them")
    parser.add_argument("--block-rows", type=int, help="grid rows per checkpointed block (default: ~65,536 points)")
    parser.add_argument("--keep-checkpoint", action="store_true", help="keep the block files after success")


def handle(arguments: argparse.Namespace) -> ExitCode:
    """Evaluate the surface block by block (over every rank under torchrun); rank 0 saves and reports."""
    from fastsurface.runs.distributed import current_world

    saved = _shared.save_path(arguments)
    if arguments.keep_checkpoint and arguments.checkpoint_dir is None:
        raise FastsurfaceError("`--keep-checkpoint` keeps checkpointed blocks; it needs `--checkpoint-dir`")
    test: object
    if _models.uses_seed(arguments):
        problem = _shared.seed_problem(arguments)
        model, test, w1, w2 = problem.model, problem.test, problem.w1, problem.w2
        plane, keywords, described = fs.default_plane(model), {}, ""
    else:
        _models.check_plane_flags(arguments, "surface")
        chosen = _models.problem(arguments)
        model, test, w1, w2 = chosen.model, chosen.test, chosen.w1, chosen.w2
        plane, what = _models.build_plane(arguments, model, test)
        keywords = {"plane": plane, "loss": arguments.loss}
        described = f"model     {chosen.source}\nplane     {what}\n"
    run = fs.sharded_loss_surface(
        model,
        test,
        w1,
        w2,
        shard=arguments.shard,
        block_rows=arguments.block_rows,
        checkpoint_dir=arguments.checkpoint_dir,
        keep=arguments.keep_checkpoint,
        **keywords,
        **_shared.surface_options(arguments),
    )
    if current_world().rank != 0:  # rank 0 writes and reports for the whole job
        return ExitCode.OK
    reused = f", {run.blocks - run.computed} reused from {arguments.checkpoint_dir}" if arguments.checkpoint_dir else ""
    lines = [f"shards    {run.shard} sharding over {run.ranks} rank(s), {run.blocks} block(s){reused}"]
    if saved is not None:
        fs.save(saved, surface=run.surface, plane=plane, provenance=_shared.provenance(arguments))
        lines.append(f"wrote     {saved}")
    print(described + "\n".join(_shared.surface_lines(run.surface) + lines))
    return ExitCode.OK


COMMAND = _shared.Command(
    name="surface",
    summary="a test-loss surface (the seed problem's by default), resumable, saved to a .npz file",
    description="Evaluate the seed article's test loss (or, with --model and --data, your model's loss on "
    "--plane through its weights) on a w1 x w2 grid, in blocks of rows that are checkpointed with "
    "--checkpoint-dir (run the same command again to resume), and save it with --save.",
    declare=declare,
    handle=handle,
    flag_groups=(*_shared.SEED_PROBLEM_FLAGS, _models.add_model_flags),
)
