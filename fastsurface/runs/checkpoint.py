"""Resumable surfaces: a grid cut into blocks of rows, each block saved when it finishes.

A run is keyed by a hash of everything that decides its numbers (the model's structure,
the plane, the model's other parameters and buffers, data, axes, loss, reduction, batch
size, device, dtype, tiling, block size), and its finished blocks live in
``checkpoint_dir/<key>/`` as verified surface files (``fastsurface.runs.storage``), each
written atomically. Started again with the same arguments, a run finds its folder, skips
the finished blocks and computes the rest, so a killed run loses at most the block in
flight. Each block is evaluated by the engine (as ``loss_surface``) on its rows, and the
result is always assembled from the block files, so an interrupted and resumed run equals
an uninterrupted one bit for bit where the engine is deterministic (CPU).

Blocks are independent: several processes may each ``compute`` their own share of
``Checkpoint.blocks`` into one folder, and ``pending()`` says which are left. The same run
started twice at once is safe too: each process skips blocks the other has finished, and
each holds a shared lock on the folder's ``run.lock`` (POSIX ``flock``) while it runs, so
the folder is deleted only by the last one to finish, never under the other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from fastsurface._support.files import atomic_write_text, checked_path, os_errors_refused
from fastsurface._support.identity import architecture, describe, describe_data, tensor_digest
from fastsurface.engine import _stream as stream
from fastsurface.engine.evaluate import checked_grid, grid_surface
from fastsurface.engine.options import OPTION_NAMES, EvalOptions, surface_keywords
from fastsurface.errors import FastsurfaceError, check_bool, check_positive_int
from fastsurface.planes.plane import Plane, check_plane, default_plane
from fastsurface.results import Surface
from fastsurface.runs.storage import load, save

# Grid points per block when `block_rows` is not given: a few seconds of work on a CPU
# for the seed model, small enough that an interruption loses little.
_BLOCK_POINTS = 2**16
# Version 4: modules moved into sub-packages, so class paths in model descriptions changed.
_KEY_VERSION = "fastsurface-checkpoint-4"
# The file each process of a run holds a shared lock on (POSIX `flock`).
_LOCK = "run.lock"
# Evaluation options that do not change the numbers, left out of the key.
_UNKEYED = frozenset({"progress"})


def default_block_rows(columns: int) -> int:
    """Rows per block when none is given: about ``_BLOCK_POINTS`` points."""
    return max(1, _BLOCK_POINTS // columns)


@dataclass(frozen=True)
class Block:
    """Rows ``start:stop`` of the grid (all columns), number ``index`` of the run."""

    index: int
    start: int
    stop: int


def plan_blocks(rows: int, block_rows: int) -> tuple[Block, ...]:
    """Cut ``rows`` grid rows into consecutive blocks of ``block_rows`` (the last may be shorter).

    >>> plan_blocks(5, 2)
    (Block(index=0, start=0, stop=2), Block(index=1, start=2, stop=4), Block(index=2, start=4, stop=5))
    """
    check_positive_int("block_rows", block_rows)
    return tuple(Block(i, start, min(rows, start + block_rows)) for i, start in enumerate(range(0, rows, block_rows)))


class Checkpoint:
    """One resumable surface run and its folder of finished blocks.

    Made by ``Checkpoint.open``; ``compute`` evaluates pending blocks, ``assemble``
    joins the finished ones into the full ``Surface``, ``remove`` deletes the folder.
    """

    def __init__(
        self,
        folder: Path,
        model: nn.Module,
        data: object,
        w1: np.ndarray,
        w2: np.ndarray,
        blocks: tuple[Block, ...],
        plane: Plane | None,
        options: EvalOptions,
        lock: BinaryIO,
    ) -> None:
        self.folder = folder
        self.model = model
        self.data = data
        self.w1 = w1
        self.w2 = w2
        self.blocks = blocks
        self.plane = plane
        self.options = options
        self._lock = lock
        # A run left without `remove` (kept, or failed) lets go of the folder when it is collected.
        weakref.finalize(self, lock.close)

    @classmethod
    def open(
        cls,
        checkpoint_dir: str | os.PathLike[str],
        model: nn.Module,
        data: object,
        w1: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        w2: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        *,
        block_rows: int | None = None,
        key: str | None = None,
        **options: Any,
    ) -> Checkpoint:
        """Find or create the run's folder under ``checkpoint_dir``.

        Args:
            checkpoint_dir: a folder; created if missing (its parent must exist).
            model, data, w1, w2: as in ``loss_surface``.
            block_rows: grid rows per block; by default about 65,536 points per block.
            key: stands for the data in the run's identity, for data that cannot be
                hashed (an iterable of batches); the model, plane, axes and options are
                hashed beside it, so changing any of them starts a new run.
            options: keyword arguments of ``loss_surface`` (``plane``, ``loss``, ...).
        """
        plane, evaluation = surface_keywords(options)
        return cls.with_options(checkpoint_dir, model, data, w1, w2, block_rows, key, plane, evaluation)

    @classmethod
    def with_options(
        cls,
        checkpoint_dir: str | os.PathLike[str],
        model: nn.Module,
        data: object,
        w1: Sequence[float] | np.ndarray | torch.Tensor | None,
        w2: Sequence[float] | np.ndarray | torch.Tensor | None,
        block_rows: int | None,
        key: str | None,
        plane: Plane | None,
        options: EvalOptions,
    ) -> Checkpoint:
        """``open`` with the plane and evaluation options already checked."""
        first, second = checked_grid(w1, w2, options)
        rows = block_rows if block_rows is not None else default_block_rows(len(second))
        blocks = plan_blocks(len(first), rows)
        stream.check_reusable("data", data, len(blocks), "once per block")
        if key is not None and (not isinstance(key, str) or not key.strip()):
            raise FastsurfaceError(f"`key` must be a non-empty string, got {key!r}")
        identity = run_key(model, data, first, second, rows, plane, options, key=key)
        folder = _checkpoint_folder(checkpoint_dir) / hashlib.sha256(identity.encode()).hexdigest()[:20]
        lock = _joined(folder)
        description = {"key": identity, "grid": [len(first), len(second)], "block_rows": rows, "blocks": len(blocks)}
        atomic_write_text(folder / "run.json", json.dumps(description, indent=1))
        return cls(folder, model, data, first, second, blocks, plane, options, lock)

    def block_path(self, block: Block) -> Path:
        """The file of ``block``'s surface."""
        return self.folder / f"block-{block.index:06d}.npz"

    def load_block(self, block: Block) -> Surface | None:
        """``block``'s saved surface, or None when it is missing or fails verification
        (a damaged block is deleted, to be computed again)."""
        path = self.block_path(block)
        if not path.is_file():
            return None
        try:
            surface = load(path).surface
        except FastsurfaceError:
            surface = None
        if surface is None or not (
            np.array_equal(surface.w1, self.w1[block.start : block.stop]) and np.array_equal(surface.w2, self.w2)
        ):
            path.unlink(missing_ok=True)
            return None
        return surface

    def finished(self) -> list[Block]:
        """Blocks whose verified file is in the folder."""
        return [block for block in self.blocks if self.load_block(block) is not None]

    def pending(self) -> list[Block]:
        """Blocks still to compute."""
        return [block for block in self.blocks if self.load_block(block) is None]

    def compute(self, blocks: Sequence[Block] | None = None) -> int:
        """Evaluate and save each block of ``blocks`` (all by default) that is not finished.

        Returns:
            The number of blocks computed now.
        """
        computed = 0
        for block in self.blocks if blocks is None else blocks:
            if self.load_block(block) is not None:
                continue
            rows = self.w1[block.start : block.stop]
            surface = grid_surface(self.model, self.data, rows, self.w2, self.plane, self.options)
            save(
                self.block_path(block),
                surface=dataclasses.replace(surface, plane=None),  # one plane for the run, not a copy per block
                provenance={"block": block.index, "rows": [block.start, block.stop]},
                timing=True,  # the assembled surface's seconds add up the blocks'
            )
            computed += 1
        return computed

    def assemble(self) -> Surface:
        """The full surface from the block files; loss on the CPU, float64.

        ``seconds`` adds up the blocks' evaluation times, whenever they ran.
        """
        loaded = [self.load_block(block) for block in self.blocks]
        missing = [block.index for block, part in zip(self.blocks, loaded, strict=True) if part is None]
        if missing:
            raise FastsurfaceError(
                f"the run in {str(self.folder)!r} has {len(missing)} unfinished block(s), e.g. {missing[:5]}; "
                "compute them first"
            )
        parts = [part for part in loaded if part is not None]  # all of them: none is missing
        whole = dataclasses.replace(
            parts[0],
            w1=self.w1,
            w2=self.w2,
            loss_tensor=torch.cat([part.loss_tensor for part in parts]),
            seconds=sum(part.seconds for part in parts),
        )
        return remembered(whole, self.model, self.data, self.plane, self.options)

    def remove(self) -> None:
        """Delete the run's folder and its block files, unless another process is still in
        the same run (the same command started twice, or workers sharing the folder): the
        last one to finish deletes it."""
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another process holds the run; it removes the folder when it finishes
        else:
            shutil.rmtree(self.folder, ignore_errors=True)
        finally:
            self._lock.close()


def resumable_loss_surface(
    model: nn.Module,
    data: object,
    w1: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    w2: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    *,
    checkpoint_dir: str | os.PathLike[str],
    block_rows: int | None = None,
    key: str | None = None,
    keep: bool = False,
    **options: Any,
) -> Surface:
    """``loss_surface`` in blocks of rows, saving each finished block under ``checkpoint_dir``.

    Called again with the same arguments after an interruption, it reuses the finished
    blocks. The run's folder is deleted at the end unless ``keep``.

    Args:
        checkpoint_dir, block_rows, key: as in ``Checkpoint.open``.
        keep: keep the block files after success.
        Other arguments as in ``loss_surface``.

    Returns:
        The same ``Surface`` as ``loss_surface``, its loss on the CPU.

    >>> import tempfile, fastsurface as fs
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     s = resumable_loss_surface(fs.ANN(1, 1, 1), fs.piecewise_dataset(100), fs.axis(0, 1, 0.25),
    ...                                fs.axis(0, 1, 0.5), checkpoint_dir=folder, block_rows=3)
    >>> s.loss.shape
    (4, 2)
    """
    check_bool("keep", keep)
    checkpoint = Checkpoint.open(checkpoint_dir, model, data, w1, w2, block_rows=block_rows, key=key, **options)
    checkpoint.compute()
    surface = checkpoint.assemble()
    if not keep:
        checkpoint.remove()
    return surface


def remembered(surface: Surface, model: nn.Module, data: object, plane: Plane | None, options: EvalOptions) -> Surface:
    """``surface`` with the plane, callable loss and data description of the whole run, for a
    surface assembled from parts (blocks read back from files, ranks' shares)."""
    return dataclasses.replace(
        surface,
        plane=default_plane(model) if plane is None else plane,
        loss_function=None if isinstance(options.loss, str) else options.loss,
        data_description=describe_data(data),
    )


def run_key(
    model: nn.Module,
    data: object,
    w1: np.ndarray,
    w2: np.ndarray,
    block_rows: int,
    plane: Plane | None,
    options: EvalOptions,
    key: str | None = None,
) -> str:
    """A hex digest of everything that decides a checkpointed run's numbers: the model's
    structure (``identity.architecture``), its parameters and buffers, the plane, the data
    (or ``key`` in its place), the axes, the block size and every option (a callable loss
    by ``identity.describe``)."""
    if not isinstance(model, nn.Module):
        raise FastsurfaceError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    if key is None and not stream.is_pair(data):
        raise FastsurfaceError(
            "`key` is required when `data` is not an (x, y) pair of arrays: an iterable of batches cannot be "
            f"hashed to recognise the run, got {type(data).__name__}"
        )
    pair = stream.pair_tensors(data) if key is None and stream.is_pair(data) else None  # validated, as the engine will
    plane = default_plane(model) if plane is None else plane
    check_plane(model, plane)
    digest = hashlib.sha256(_KEY_VERSION.encode())
    _update(digest, "model", architecture(model))
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):  # non-persistent buffers too
        if name not in plane.origin:  # a moving parameter's values are the plane's origin
            _update(digest, f"model.{name}", tensor)
    _update(digest, "plane", repr(plane.labels))
    for part in ("origin", "first", "second"):
        for parameter, tensor in getattr(plane, part).items():
            _update(digest, f"plane.{part}.{parameter}", tensor)
    if pair is None:
        _update(digest, "key", key)
    else:
        for name, tensor in zip(("x", "y"), pair, strict=True):
            _update(digest, name, tensor)
    _update(digest, "w1", w1)
    _update(digest, "w2", w2)
    _update(digest, "block_rows", block_rows)
    for name in OPTION_NAMES:
        if name not in _UNKEYED:
            _update(digest, name, _option_text(options, name))
    return digest.hexdigest()


def _option_text(options: EvalOptions, name: str) -> str:
    """An option as the key sees it: the device and dtype resolved, a callable described."""
    if name == "device":
        return str(options.compute_device)
    if name == "dtype":
        return str(options.compute_dtype)
    value = getattr(options, name)
    return describe(value) if callable(value) else repr(value)


def _update(digest: Any, name: str, value: object) -> None:
    text = tensor_digest(value) if isinstance(value, (np.ndarray, torch.Tensor)) else value
    digest.update(f"\n{name} {text}\n".encode())


def _checkpoint_folder(checkpoint_dir: str | os.PathLike[str]) -> Path:
    """The checkpoint folder, made if missing; a name the operating system cannot take (empty,
    a NUL byte, not UTF-8, too long) is refused as ``checkpoint_dir``, as an output file's is."""
    folder = checked_path("checkpoint_dir", checkpoint_dir)
    with os_errors_refused("checkpoint_dir", checkpoint_dir):
        if folder.exists() and not folder.is_dir():
            raise FastsurfaceError(f"`checkpoint_dir` must be a folder, got the file {str(checkpoint_dir)!r}")
        if not folder.parent.is_dir():
            raise FastsurfaceError(f"`checkpoint_dir` must be in an existing folder, got {str(checkpoint_dir)!r}")
        if not os.access(folder if folder.exists() else folder.parent, os.W_OK):
            raise FastsurfaceError(f"`checkpoint_dir` is not writable: {str(checkpoint_dir)!r}")
    _make_folder(folder)
    return folder


def _joined(folder: Path) -> BinaryIO:
    """A shared lock on the run folder's lock file, the folder made if needed. Every process
    in a run holds one while it runs, so that no process deletes the folder under another."""
    while True:
        _make_folder(folder)
        try:
            lock = open(folder / _LOCK, "a+b")  # noqa: SIM115 -- held open for the run's lifetime
        except OSError as error:
            raise FastsurfaceError(f"`checkpoint_dir`: cannot open {str(folder / _LOCK)!r}: {error}") from error
        fcntl.flock(lock, fcntl.LOCK_SH)
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(lock.fileno()).st_ino == os.stat(folder / _LOCK).st_ino:
                return lock
        lock.close()  # a finishing run removed the folder meanwhile: make it again


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(exist_ok=True)
    except OSError as error:
        raise FastsurfaceError(f"`checkpoint_dir`: cannot create {str(folder)!r}: {error.strerror or error}") from error
