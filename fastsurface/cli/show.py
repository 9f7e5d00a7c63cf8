"""``fastsurface show``: what a saved ``.npz`` file holds."""

from __future__ import annotations

import argparse

import fastsurface as fs
from fastsurface.cli import _shared
from fastsurface.cli.exit_codes import ExitCode


def declare(parser: argparse.ArgumentParser) -> None:
    """The file to show."""
    parser.add_argument("path", help="the .npz file, or an HDF5 file in Li et al.'s layout (.h5, .hdf5)")


def handle(arguments: argparse.Namespace) -> ExitCode:
    """Verify the file, then print its surface, path, runs, plane and provenance."""
    if str(arguments.path).lower().endswith((".h5", ".hdf5")):
        return _show_hdf5(arguments.path)
    stored = fs.load(arguments.path)
    metadata = stored.metadata
    lines = [f"file      {arguments.path}: fastsurface format {metadata['format_version']}, content verified"]
    if stored.surface is not None:
        lines += _shared.surface_lines(stored.surface)
    if stored.trajectory is not None:
        path = stored.trajectory
        lines.append(
            f"path      {len(path.loss)} points ({path.record}), {path.reduction} loss "
            f"{path.loss[0]:.6g} -> {path.loss[-1]:.6g}"
        )
    if stored.trajectories is not None:
        lines += _runs_lines(stored.trajectories)
    if stored.plane is not None:
        lines.append(f"plane     {', '.join(stored.plane.labels)} over {', '.join(stored.plane.origin)}")
    facts = [f"{key} = {value}" for key, value in sorted(metadata["provenance"].items())]
    lines += ["provenance", *(f"{'':<10}{fact}" for fact in facts)] if facts else []
    print("\n".join(lines))
    return ExitCode.OK


def _show_hdf5(path: str) -> ExitCode:
    """Every surface of an HDF5 file in Li et al.'s layout, each checked as it is read."""
    from fastsurface.runs.interchange import hdf5_surfaces

    names = hdf5_surfaces(path)
    lines = [f"file      {path}: HDF5, Li et al.'s layout, {len(names)} surface(s)"]
    for name in names:
        lines += [f"surface   {name}", *_shared.surface_lines(fs.load_hdf5(path, name))]
    print("\n".join(lines))
    return ExitCode.OK


# Attractors listed by ``show``, largest basin first.
_SHOWN_ATTRACTORS = 3


def _runs_lines(runs: fs.Trajectories) -> list[str]:
    """Many runs (``train_many``): their count, records, optimisers and divergence, and for
    a map (a start grid, one optimiser) the attractors of ``basin_map`` at its tolerance."""
    diverged = int(runs.diverged.sum())
    lines = [
        f"runs      {runs.count:,} runs x {len(runs.step)} records ({runs.record}, {int(runs.step[-1]):,} steps), "
        f"{runs.space} space, {', '.join(runs.group_names)}; {runs.method} on {runs.device} ({runs.dtype})",
        f"diverged  {diverged:,} of {runs.count:,} runs",
    ]
    if runs.grid_w1 is None or runs.grid_w2 is None or len(runs.group_names) != 1:
        return lines
    basins = fs.basin_map(runs)
    largest = [
        f"({w1:.4g}, {w2:.4g}) {size:,} starts"
        for (w1, w2), size in zip(basins.attractors[:_SHOWN_ATTRACTORS], basins.sizes, strict=False)
    ]
    more = len(basins.sizes) - len(largest)
    listed = "; ".join(largest) + (f"; {more} more" if more else "")
    return [
        *lines,
        f"basins    {len(runs.grid_w1)} x {len(runs.grid_w2)} start grid, {len(basins.sizes)} attractors "
        f"(within {basins.tolerance:.3g}){': ' + listed if listed else ''}",
    ]


COMMAND = _shared.Command(
    name="show",
    summary="print what a saved .npz file holds",
    description="Verify a file written by --save (or fastsurface.save) and print its contents and provenance; "
    "or print the surfaces of an HDF5 file in Li et al.'s loss-landscape layout (fastsurface.save_hdf5).",
    declare=declare,
    handle=handle,
    formatter_class=argparse.HelpFormatter,
)
