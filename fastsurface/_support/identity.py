"""Stable descriptions of what decides a run's numbers besides its parameters and buffers:
a model's structure and the callables it uses, as text that is equal across processes for
equal behaviour (the run keys of ``checkpoint``); and evaluation data as a description
(counts, shapes, a fingerprint of the values) that a surface keeps instead of the data.

A function is described by its qualified name, its code (bytecode, names, constants,
nested code), its defaults and the values it closes over; a ``functools.partial`` by its
function and bound arguments; a class by its name; another object by its class, its own
``__call__`` and all its attributes, followed as deep as they go (an object met again is
referred to by the order of first meeting, which also ends cycles). Names a function
reads from its module's globals are not part of it: a key cannot see a global constant
changed between runs.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import types

import numpy as np
import torch
from torch import nn

from fastsurface.results import DataDescription

_PLAIN = (bool, int, float, complex, str, bytes, torch.dtype, torch.device, type(None))
# What every nn.Module holds (parameters, buffers, submodules and hooks are described apart).
_MODULE_INTERNALS = frozenset(vars(nn.Module()))
# Nesting followed before a value counts by its type only (Python's recursion limit is 1,000).
_MAX_DEPTH = 200
# Values converted and hashed at a time when fingerprinting data (8 MiB of float64).
_DIGEST_CHUNK = 2**20


def architecture(model: nn.Module) -> str:
    """Each submodule's name, ``forward`` code, other attributes (``eps``, ``inplace``, a
    stored activation function or class, private settings, ...) and forward hooks."""
    describer = _Describer()
    lines = []
    for name, module in model.named_modules():
        attributes = {key: value for key, value in vars(module).items() if key not in _MODULE_INTERNALS}
        hooks = [*module._forward_pre_hooks.values(), *module._forward_hooks.values()]
        forward = inspect.getattr_static(type(module), "forward", None)  # no descriptor runs (TorchScript's fail)
        lines.append(f"{name} {describer(forward)} {describer(attributes)} {describer(hooks)}")
    return "\n".join(lines)


def describe(value: object) -> str:
    """``value`` as text: equal for values that behave the same, in any process."""
    return _Describer()(value)


def tensor_digest(values: torch.Tensor | np.ndarray) -> str:
    """A digest of an array's dtype, shape and contents (any dtype, sparse included)."""
    if isinstance(values, torch.Tensor):
        dense = values.detach().to_dense() if values.layout != torch.strided else values.detach()
        contiguous = dense.cpu().contiguous()
        raw = contiguous.reshape(-1).view(torch.uint8).numpy().tobytes() if contiguous.numel() else b""
        header = f"{contiguous.dtype} {tuple(contiguous.shape)}"
    else:
        raw = np.ascontiguousarray(values).tobytes()
        header = f"{values.dtype.str} {values.shape}"
    return hashlib.sha256(header.encode() + raw).hexdigest()[:16]


class _Describer:
    """Describes values, each object once: later meetings refer to the first."""

    def __init__(self) -> None:
        self.seen: dict[int, int] = {}
        self.kept: list[object] = []  # keeps described objects alive, so their ids stay theirs
        self.depth = 0

    def __call__(self, value: object) -> str:
        if isinstance(value, _PLAIN):
            return repr(value)
        if isinstance(value, np.generic):
            return repr(value.item())
        if id(value) in self.seen:
            return f"<seen {self.seen[id(value)]}>"
        if self.depth >= _MAX_DEPTH:  # a chain this long is data, not settings: by type
            return _name(type(value))
        self.seen[id(value)] = len(self.seen)
        self.kept.append(value)
        self.depth += 1
        try:
            return self._compound(value)
        finally:
            self.depth -= 1

    def _compound(self, value: object) -> str:
        if isinstance(value, np.ndarray) and value.dtype == object:
            return f"objects{value.shape}({self(value.tolist())})"
        if isinstance(value, (torch.Tensor, np.ndarray)):
            return f"array({tensor_digest(value)})"
        if isinstance(value, (tuple, list)):
            return f"{type(value).__name__}({', '.join(map(self, value))})"
        if isinstance(value, (set, frozenset)):
            return f"set({', '.join(sorted(map(describe, value)))})"  # fresh: sorted text must not depend on order
        if isinstance(value, dict):
            return f"dict({', '.join(f'{self(k)}: {self(v)}' for k, v in value.items())})"
        if isinstance(value, (type, types.ModuleType)):
            return _name(value)
        return self._callable(value) if callable(value) else self._object(value)

    def _callable(self, value: object) -> str:
        if isinstance(value, functools.partial):
            return f"partial({self(value.func)}, {self(value.args)}, {self(value.keywords)})"
        if isinstance(value, types.MethodType):
            return f"method({self(value.__func__)}, {self(value.__self__)})"
        if isinstance(value, types.FunctionType):
            closure = [_cell(cell) for cell in value.__closure__ or ()]
            parts = (value.__defaults__, value.__kwdefaults__, closure)
            return f"{_name(value)} {_code_digest(value.__code__)} {' '.join(map(self, parts))}"
        if isinstance(value, (types.BuiltinFunctionType, types.BuiltinMethodType)):
            bound = getattr(value, "__self__", None)  # a tensor for t.mul; a module for torch.tanh
            return _name(value) + ("" if bound is None or isinstance(bound, types.ModuleType) else f" {self(bound)}")
        return self._object(value)

    def _object(self, value: object) -> str:
        call = vars(type(value)).get("__call__")  # the class's own: code that may differ between classes
        code = self(call) if isinstance(call, types.FunctionType) else ""
        return f"{_name(type(value))} {code} {self(_attributes(value))}"


def _attributes(value: object) -> dict[str, object]:
    """An object's attributes: its ``__dict__`` and its slots."""
    attributes = dict(vars(value)) if hasattr(value, "__dict__") else {}
    for cls in type(value).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            if slot not in ("__dict__", "__weakref__") and hasattr(value, slot):
                attributes[slot] = getattr(value, slot)
    return attributes


def _cell(cell: types.CellType) -> object:
    try:
        return cell.cell_contents
    except ValueError:  # a cell not yet filled
        return "<empty cell>"


def _name(value: object) -> str:
    return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', getattr(value, '__name__', ''))}"


def _code_digest(code: types.CodeType) -> str:
    """Bytecode, names and constants, nested code included (sets in a stable order)."""
    digest = hashlib.sha256(code.co_code + repr(code.co_names).encode())
    for constant in code.co_consts:
        digest.update((_code_digest(constant) if isinstance(constant, types.CodeType) else describe(constant)).encode())
    return digest.hexdigest()[:16]


def describe_data(data: object) -> DataDescription | None:
    """What identifies ``data``: for an ``(x, y)`` pair of arrays or tensors, its sample
    count, per-sample shapes, dtypes and a fingerprint of its values; ``None`` for anything
    else (an iterable of batches cannot be read again to check, and a shuffling loader's
    order would change a fingerprint without changing the loss)."""
    if not (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(part, (np.ndarray, torch.Tensor)) and part.ndim >= 1 for part in data)
    ):
        return None
    x, y = data
    digest = hashlib.sha256()
    for part in (x, y):
        _digest_values(digest, part)
    return DataDescription(
        samples=len(x),
        input_shape=tuple(x.shape[1:]),
        input_dtype=_dtype_name(x),
        target_shape=tuple(y.shape[1:]),
        target_dtype=_dtype_name(y),
        fingerprint=digest.hexdigest()[:16],
    )


def _digest_values(digest: hashlib._Hash, values: np.ndarray | torch.Tensor) -> None:
    """Add ``values``' shape and its values as float64 to ``digest``, a bounded chunk at a
    time (a dataset on a GPU is copied to the host in pieces)."""
    digest.update(f"{tuple(values.shape)}\n".encode())
    flat = values.detach().reshape(-1) if isinstance(values, torch.Tensor) else np.ravel(values)
    for start in range(0, len(flat), _DIGEST_CHUNK):
        piece = flat[start : start + _DIGEST_CHUNK]
        host = piece.to("cpu", torch.float64).numpy() if isinstance(piece, torch.Tensor) else piece
        digest.update(np.ascontiguousarray(host, dtype=np.float64).tobytes())


def _dtype_name(values: np.ndarray | torch.Tensor) -> str:
    return str(values.dtype).removeprefix("torch.")
