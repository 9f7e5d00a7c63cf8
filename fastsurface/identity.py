"""Stable descriptions of what decides a run's numbers besides its tensors: a model's
structure and the callables it uses, as text that is equal across processes for equal
behaviour (the run keys of ``checkpoint``).

A function is described by its qualified name, its code (bytecode, names, constants,
nested code), its defaults and the values it closes over; a ``functools.partial`` by its
function and bound arguments; another callable object by its class, its ``__call__``
and its attributes. Names a function reads from its module's globals are not part of
it: a key cannot see a global constant changed between runs.
"""

from __future__ import annotations

import functools
import hashlib
import types

import numpy as np
import torch
from torch import nn

# Nesting followed into containers and objects; deeper values count by their type.
_DEPTH = 4
_PLAIN = (bool, int, float, complex, str, bytes, torch.dtype, torch.device, type(None))


def architecture(model: nn.Module) -> str:
    """Each submodule's name, ``forward`` code, public attributes (``eps``, ``inplace``,
    ``negative_slope``, a stored activation function, ...) and hooks, one line each."""
    lines = []
    for name, module in model.named_modules():
        attributes = {key: value for key, value in vars(module).items() if not key.startswith("_")}
        hooks = [*module._forward_pre_hooks.values(), *module._forward_hooks.values()]
        lines.append(f"{name} {describe(type(module).forward)} {describe(attributes)} {describe(hooks)}")
    return "\n".join(lines)


def describe(value: object, depth: int = 0) -> str:
    """``value`` as text: equal for values that behave the same, in any process."""
    if isinstance(value, _PLAIN):
        return repr(value)
    if isinstance(value, np.generic):
        return repr(value.item())
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return _array_digest(value)
    if depth >= _DEPTH:
        return _name(type(value))
    return _describe_composite(value, depth)


def _describe_composite(value: object, depth: int) -> str:
    def describe_inner(item: object) -> str:
        return describe(item, depth + 1)

    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}({', '.join(map(describe_inner, value))})"
    if isinstance(value, (set, frozenset)):
        return f"set({', '.join(sorted(map(describe_inner, value)))})"
    if isinstance(value, dict):
        return f"dict({', '.join(sorted(f'{describe_inner(k)}: {describe_inner(v)}' for k, v in value.items()))})"
    if isinstance(value, functools.partial):
        return f"partial({describe_inner(value.func)}, {describe_inner(value.args)}, {describe_inner(value.keywords)})"
    if isinstance(value, types.MethodType):
        return f"method({describe_inner(value.__func__)}, {describe_inner(value.__self__)})"
    if isinstance(value, types.FunctionType):
        closure = [_cell(cell) for cell in value.__closure__ or ()]
        parts = (value.__defaults__, value.__kwdefaults__, closure)
        return f"{_name(value)} {_code_digest(value.__code__)} {' '.join(map(describe_inner, parts))}"
    if not hasattr(value, "__dict__"):  # builtins such as torch.tanh, and other plain objects
        return _name(value) if hasattr(value, "__qualname__") else _name(type(value))
    call = vars(type(value)).get("__call__") if callable(value) else None  # a class's own __call__
    code = describe_inner(call) if isinstance(call, types.FunctionType) else ""
    return f"{_name(type(value))} {code} {describe_inner(vars(value))}"


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


def _array_digest(array: torch.Tensor | np.ndarray) -> str:
    values = np.ascontiguousarray(array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else array)
    digest = hashlib.sha256(f"{values.dtype.str} {values.shape}".encode() + values.tobytes())
    return f"array({digest.hexdigest()[:16]})"
