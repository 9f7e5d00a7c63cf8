"""The plane of the top-2 Hessian eigenvectors at a model's parameters.

It lives beside the engine's other analyses rather than in ``planes``: finding it evaluates
the model on data (Hessian-vector products), which the engine's checks and streams serve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vjp

from fastsurface._support.copying import copy_inputs_if_written, private_copy
from fastsurface._support.progress import Progress
from fastsurface.engine._losses import Loss, PerSampleLoss, resolve_loss
from fastsurface.engine._stream import PROBE_SAMPLES, is_pair, pair_tensors
from fastsurface.engine._tiles import model_errors
from fastsurface.errors import FastsurfaceError, check_bool, check_positive_int, check_seed
from fastsurface.planes.directions import parameters_of
from fastsurface.planes.plane import Plane, TensorDict, unflattener


@dataclass(frozen=True)
class HessianPlane:
    """The plane of the top-2 Hessian eigenvectors at a model's parameters.

    Attributes:
        plane: origin ``θ₀``; ``d₁``, ``d₂`` unit eigenvectors over all parameters, for
            the largest and second-largest eigenvalue (sign: largest-magnitude entry > 0).
        eigenvalues: the two eigenvalues, float64, shape ``(2,)``.
        iterations: Lanczos steps taken, for both eigenvectors together.
    """

    plane: Plane
    eigenvalues: np.ndarray
    iterations: int


def hessian_plane(
    model: nn.Module,
    data: tuple[object, object],
    *,
    loss: str | PerSampleLoss = "mse",
    iterations: int = 50,
    chunk_samples: int = 4096,
    seed: int = 0,
    progress: bool = False,
) -> HessianPlane:
    """The top-2 eigenvectors of the Hessian of the mean loss at ``model``'s parameters.

    Hessian-vector products come from ``torch.func`` (reverse-over-reverse: ``vjp`` of
    ``grad``, which for a symmetric Hessian is ``H v``; ``jvp`` of ``grad`` warns about
    ``torch.jit.script`` in torch 2.13) in float64 on the CPU, summed over chunks of ``chunk_samples`` samples, in
    eval mode. Lanczos iteration with full re-orthogonalisation, started from a seeded
    random vector, runs up to ``min(iterations, parameter count)`` steps for the top
    eigenpair, then again on the complement of that eigenvector for the second, so that a
    repeated top eigenvalue (a multi-output linear layer's Hessian has them) is found twice.
    The model must fit the data as in ``loss_surface`` (targets of the predictions' shape
    for MSE), checked on a forward pass before any work.

    Args:
        model: any module; only read.
        data: an ``(x, y)`` pair of arrays/tensors.
        loss: per-sample loss as in ``loss_surface``; the Hessian is of its mean.
        iterations: most Lanczos steps per eigenvector, >= 2.
        chunk_samples: samples per Hessian-vector product pass.
        seed: seed of the start vector (a private generator).
        progress: show a progress bar of Hessian-vector products on stderr (at most
            ``2 * min(iterations, parameter count)``; Lanczos may stop sooner).
    """
    check_positive_int("iterations", iterations)
    check_positive_int("chunk_samples", chunk_samples)
    check_seed("seed", seed)
    check_bool("progress", progress)
    if iterations < 2:
        raise FastsurfaceError(f"`iterations` must be >= 2 to find two eigenvectors, got {iterations}")
    theta = parameters_of(model)
    if not is_pair(data):
        raise FastsurfaceError(f"`data` must be an (x, y) pair of arrays or tensors, got {type(data).__name__}")
    product = _hessian_vector_product(model, theta, data, resolve_loss(loss), chunk_samples)
    size = sum(t.numel() for t in theta.values())
    if size < 2:
        raise FastsurfaceError(f"`model` must have at least 2 parameter entries for a Hessian plane, got {size}")
    generator = torch.Generator().manual_seed(int(seed))
    steps = min(iterations, size)
    starts = torch.randn(2, size, generator=generator, dtype=torch.float64)
    with Progress("hessian", "Hv", progress, total=2 * steps) as bar:
        counted = _counted(product, bar.update)
        value1, vector1, taken1 = _lanczos_top(counted, starts[0], steps, [])
        value2, vector2, taken2 = _lanczos_top(counted, starts[1], steps, [vector1])
    if value2 > value1:  # too few steps to converge on the first: keep the documented order
        (value1, vector1), (value2, vector2) = (value2, vector2), (value1, vector1)
    unflatten = unflattener(theta)
    plane = Plane(theta, unflatten(vector1), unflatten(vector2), ("h1", "h2"))
    return HessianPlane(plane, torch.stack([value1, value2]).numpy(), taken1 + taken2)


def _hessian_vector_product(
    model: nn.Module, theta: TensorDict, data: tuple[object, object], loss: Loss, chunk: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> H v`` for the Hessian of the mean per-sample loss over ``data``, flattened."""
    module = private_copy(model).to("cpu", torch.float64).eval()
    x, y = (t.to("cpu", torch.float64 if t.dtype.is_floating_point else torch.int64) for t in pair_tensors(data))
    with torch.no_grad(), model_errors(x):
        copy_inputs_if_written(module, x[:PROBE_SAMPLES])  # x may be the caller's own tensor
        probe = module(x[:PROBE_SAMPLES])
    loss.check_shapes(probe, y[:PROBE_SAMPLES])
    loss.check_targets(probe, y)
    unflatten = unflattener(theta)
    flat = torch.cat([t.reshape(-1) for t in theta.values()])

    def chunk_loss(vector: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return loss.per_sample(functional_call(module, unflatten(vector), (xs,)), ys).sum() / len(x)

    def product(v: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(flat)
        for start in range(0, len(x), chunk):
            xs, ys = x[start : start + chunk], y[start : start + chunk]
            total += vjp(lambda p, xs=xs, ys=ys: grad(chunk_loss)(p, xs, ys), flat)[1](v)[0]
        return total

    return product


def _counted(
    product: Callable[[torch.Tensor], torch.Tensor], done: Callable[[], object]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``product``, calling ``done`` after each call."""

    def counted(vector: torch.Tensor) -> torch.Tensor:
        result = product(vector)
        done()
        return result

    return counted


def _lanczos_top(
    product: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, steps: int, deflated: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The top Ritz pair of a symmetric operator on the complement of the unit vectors
    ``deflated`` (Lanczos with full re-orthogonalisation, against them too).

    Returns the eigenvalue (0-d), its unit eigenvector ``(D,)`` (largest-magnitude entry
    positive) and the steps taken.
    """
    known = list(deflated)

    def orthogonalised(vector: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(known, dim=1)
        for _ in range(2):  # twice is enough (Kahan–Parlett)
            vector = vector - stacked @ (stacked.T @ vector)
        return vector

    first = orthogonalised(start) if known else start
    if first.norm() <= 1e-12 * start.norm():
        raise FastsurfaceError("`seed`: its start vector lies in the span already found; try another seed")
    basis = [first / first.norm()]
    alphas, betas = [], []
    for k in range(steps):
        w = product(basis[k])
        alphas.append(torch.dot(w, basis[k]))
        known.append(basis[k])
        w = orthogonalised(w)
        beta = w.norm()
        if k == steps - 1 or beta <= 1e-12 * max(1.0, float(abs(alphas[-1]))):
            break
        betas.append(beta)
        basis.append(w / beta)
    tridiagonal = torch.diag(torch.stack(alphas))
    if betas:
        off = torch.stack(betas)
        tridiagonal = tridiagonal + torch.diag(off, 1) + torch.diag(off, -1)
    values, ritz = torch.linalg.eigh(tridiagonal)
    vector = torch.stack(basis[: len(alphas)], dim=1) @ ritz[:, -1]
    return values[-1], vector * torch.sign(vector[vector.abs().argmax()]), len(alphas)
