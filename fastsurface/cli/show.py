"""``fastsurface show``: what a saved ``.npz`` file holds."""

from __future__ import annotations

import argparse

import fastsurface as fs
from fastsurface.cli import _shared
from fastsurface.cli.exit_codes import ExitCode


def declare(parser: argparse.ArgumentParser) -> None:
    """The file to show."""
    parser.add_argument("path", help="the .npz file")


def handle(arguments: argparse.Namespace) -> ExitCode:
    """Verify the file, then print its surface, path, plane and provenance."""
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
    if stored.plane is not None:
        lines.append(f"plane     {', '.join(stored.plane.labels)} over {', '.join(stored.plane.origin)}")
    facts = [f"{key} = {value}" for key, value in sorted(metadata["provenance"].items())]
    lines += ["provenance", *(f"{'':<10}{fact}" for fact in facts)] if facts else []
    print("\n".join(lines))
    return ExitCode.OK


COMMAND = _shared.Command(
    name="show",
    summary="print what a saved .npz file holds",
    description="Verify a file written by --save (or fastsurface.save) and print its contents and provenance.",
    declare=declare,
    handle=handle,
    formatter_class=argparse.HelpFormatter,
)
