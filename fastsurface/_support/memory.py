"""Memory guard: refuse, before any work, a surface that cannot fit in memory.

A surface run holds, at its peak, the float64 per-point sums and their reduced copy
(16 bytes per grid point) and one tile's working set, which the engine keeps within
``memory_budget`` for tiles of up to ``_BUDGETED_TILE_POINTS`` points (an explicit,
larger ``tile_points`` scales it up). The run is refused when that exceeds a share of
the memory available now on the compute device.
"""

from __future__ import annotations

import math
import os

import torch

from fastsurface.errors import FastsurfaceError

# Bytes per grid point: the float64 sums and the float64 result of the reduction.
_BYTES_PER_POINT = 16
# The engine sizes data chunks so that a tile of this many points fits the budget.
_BUDGETED_TILE_POINTS = 256
# Peak bytes per grid point of building a plotly figure and writing it (measured: 230-290).
_FIGURE_BYTES_PER_POINT = 300
# Share of the available memory a run may plan to use; the rest stays free for the
# interpreter, the evaluation data and the rest of the machine.
_USABLE_SHARE = 0.8


def available_bytes(device: torch.device) -> int | None:
    """Memory free now on ``device`` in bytes (host: ``MemAvailable``), or None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def working_bytes(memory_budget: int, tile_points: int | None) -> int:
    """Bytes one tile may use: the budget, scaled up by an explicit ``tile_points`` above
    the tile size the budget is planned for."""
    return memory_budget * max(1, math.ceil((tile_points or 0) / _BUDGETED_TILE_POINTS))


def check_fits(shape: tuple[int, int], device: torch.device, memory_budget: int, tile_points: int | None) -> None:
    """Raise ``FastsurfaceError`` when a surface of ``shape`` points cannot fit on ``device``.

    Args:
        shape: grid size ``(len(w1), len(w2))``.
        device: the compute device.
        memory_budget: the run's tile budget in bytes.
        tile_points: the caller's explicit tile size, if any.

    >>> check_fits((80, 80), torch.device("cpu"), 256 * 2**20, None)
    >>> check_fits((10**6, 10**6), torch.device("cpu"), 256 * 2**20, None)
    Traceback (most recent call last):
    ...
    fastsurface.errors.FastsurfaceError: `w1` x `w2`: a 1000000 x 1000000 grid needs ...
    """
    available = available_bytes(device)
    if available is None:
        return
    usable = int(available * _USABLE_SHARE)
    output = _BYTES_PER_POINT * shape[0] * shape[1]
    working = working_bytes(memory_budget, tile_points)
    if memory_budget > usable:
        raise FastsurfaceError(
            f"`memory_budget` of {memory_budget} bytes ({_size(memory_budget)}) exceeds the {_size(usable)} "
            f"this run may use on {device} ({_size(available)} available); lower it"
        )
    if working > usable:
        raise FastsurfaceError(
            f"`tile_points` of {tile_points} would need about {_size(working)} of working memory with a "
            f"`memory_budget` of {_size(memory_budget)}, more than the {_size(usable)} this run may use on "
            f"{device}; leave it unset or lower it"
        )
    if output + working > usable:
        raise FastsurfaceError(
            f"`w1` x `w2`: a {shape[0]} x {shape[1]} grid needs about {_size(output)} for its losses plus "
            f"{_size(working)} of tile working memory, more than the {_size(usable)} this run may use on "
            f"{device} ({_size(available)} available); use fewer grid points"
        )


def check_figure_fits(points: int, name: str) -> None:
    """Raise ``FastsurfaceError`` when a figure of a ``points``-point grid cannot be built
    in the memory available now (plotly copies the grid and writes it out as text).

    Args:
        points: grid points to draw.
        name: the argument to name in the message.
    """
    available = available_bytes(torch.device("cpu"))
    if available is None:
        return
    needed = points * _FIGURE_BYTES_PER_POINT
    usable = int(available * _USABLE_SHARE)
    if needed > usable:
        raise FastsurfaceError(
            f"`{name}`: a figure of {points:,} grid points needs about {_size(needed)}, more than the "
            f"{_size(usable)} this run may use ({_size(available)} available); draw a coarser grid "
            "(a saved surface may be larger: fastsurface.save, `fastsurface surface --save`)"
        )


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.3g} {unit}"
        count /= 1024
    return f"{count:.3g} TiB"
