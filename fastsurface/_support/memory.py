"""Memory guard: refuse, before any work, a surface that cannot fit in memory.

A surface run holds, at its peak, the float64 per-point sums and their reduced copy
(16 bytes per grid point) and one tile's working set, which the engine keeps within
``memory_budget`` for tiles of up to ``_BUDGETED_TILE_POINTS`` points (an explicit,
larger ``tile_points`` scales it up). The run is refused when that exceeds a share of
the memory available now on the compute device.
"""

from __future__ import annotations

import os

import torch

from fastsurface.errors import FastsurfaceError

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


def usable_bytes(device: torch.device) -> tuple[int, int] | None:
    """``(usable, available)`` bytes on ``device`` now: what a run may plan to use, of what
    is free; None if unknown."""
    available = available_bytes(device)
    return None if available is None else (int(available * _USABLE_SHARE), available)


def check_figure_fits(points: int, name: str) -> None:
    """Raise ``FastsurfaceError`` when a figure of a ``points``-point grid cannot be built
    in the memory available now (plotly copies the grid and writes it out as text).

    Args:
        points: grid points to draw.
        name: the argument to name in the message.
    """
    check_host_fits(
        name,
        f"a figure of {points:,} grid points needs",
        points * _FIGURE_BYTES_PER_POINT,
        "draw a coarser grid (a saved surface may be larger: fastsurface.save, `fastsurface surface --save`)",
    )


def check_host_fits(name: str, what: str, needed: int, advice: str) -> None:
    """Refuse, before any is allocated, ``needed`` bytes that the host's memory cannot hold
    now: a ``FastsurfaceError`` "`name`: what about N, more than ...; advice"."""
    limits = usable_bytes(torch.device("cpu"))
    if limits is None:
        return
    usable, available = limits
    if needed > usable:
        raise FastsurfaceError(
            f"`{name}`: {what} about {format_bytes(needed)}, more than the {format_bytes(usable)} this run may use "
            f"on the host ({format_bytes(available)} available); {advice}"
        )


def format_bytes(count: float) -> str:
    """``count`` bytes in the largest binary unit below 1024 of it, e.g. ``"256 MiB"``."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.3g} {unit}"
        count /= 1024
    return f"{count:.3g} TiB"
