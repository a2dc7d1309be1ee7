"""The sandbox's wire protocol: messages of JSON and plain numpy arrays, validated on arrival.

Both sides of :mod:`course_grader.sandbox` speak it over a Unix socket. A message is an
8-byte length, a JSON header and ``np.save``'d arrays, each length-prefixed; arrays are loaded
with ``allow_pickle=False`` and only numeric dtypes are accepted, so nothing the sandbox sends
can run code in the grader. Values are described by :func:`encode` as JSON specs pointing into
the arrays, nested at most :data:`MAX_DEPTH` deep: exact ``torch.Tensor`` (never a subclass: its
methods could lie) of a numeric dtype, contiguous or not, ``None``, numbers, strings, and tuples,
lists and dicts (keys: numbers, strings or tuples of them) of those. **Data types are sent as the
plain value they hold**: a ``Counter``, ``defaultdict`` or ``OrderedDict`` as a dict, a namedtuple
or ``torch.Size`` as a tuple, an ``IntEnum`` or numpy scalar as a number. This is safe because
:func:`encode` runs in the sandbox and reads them with the base type's own methods (``dict.items``,
``tuple.__iter__``), never the object's: what arrives is plain data that the checks judge like any
other. Anything else (objects with their own ``__eq__``, numpy arrays, tensor subclasses) becomes an
``other`` spec that :func:`decode` refuses with :class:`ForbiddenResult`::

    arrays = []
    spec = encode((torch.ones(2), 3), arrays)   # {'t': 'tuple', 'items': [{'t': 'tensor', 'i': 0}, ...]}
    decode(spec, arrays, "cpu")                  # (tensor([1., 1.]), 3)

:func:`same_value` and :func:`copy_into` let the sandbox mirror a student's in-place changes of
its arguments back onto the caller's own tensors, lists and dicts.

Not covered: processes, isolation and timeouts (:mod:`~course_grader.sandbox`,
:mod:`~course_grader.sandbox_child`). The zygote imports it before any student code runs; it
imports nothing from course_lib.
"""
from __future__ import annotations

import builtins
import io
import json
import socket
import struct

import numpy as np
import torch

__all__ = [
    "ALLOWED_DTYPES", "MAX_DEPTH", "MAX_ITEMS", "MAX_LENGTH", "ForbiddenResult", "SandboxCrashed", "SandboxError", "SandboxTimeout",
    "StudentException", "StudentExit", "copy_into", "decode", "encode", "rebuild_exception", "recv", "safe_text", "same_value", "send",
]

ALLOWED_DTYPES = {np.dtype(n) for n in ("bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32",
                                        "int64", "float16", "float32", "float64")}
MAX_ITEMS = 64  # arrays per message: a result and the arguments a call changed (a decoder layer has 26 tensors)
MAX_LENGTH = 1 << 16  # items of a list, tuple or dict, characters of a str (a BPE lab's ids, pair counts)
MAX_DEPTH = 4  # nesting of containers, e.g. a dict of (int, int) pairs to counts is 2 deep


class SandboxError(Exception):
    """The sandboxed code could not be run or called (reported as that part's failure)."""


class SandboxTimeout(SandboxError):
    pass


class SandboxCrashed(SandboxError):
    pass


class ForbiddenResult(SandboxError, TypeError):
    pass


class StudentExit(SandboxError):
    """The student's cells called ``sys.exit()`` (or raised ``KeyboardInterrupt``) while they loaded."""


class StudentException(Exception):
    """An exception the student's code raised whose type is not a Python built-in one."""


# --- framing: 8-byte length, JSON header, then np.save'd arrays (each length-prefixed) --------

def send(sock: socket.socket, header: dict, arrays=()) -> None:
    blobs = []
    for array in arrays:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        blobs.append(buffer.getvalue())
    head = json.dumps(header).encode()
    body = b"".join([struct.pack("!II", len(head), len(blobs)), head]
                    + [struct.pack("!Q", len(b)) + b for b in blobs])
    sock.sendall(struct.pack("!Q", len(body)) + body)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buffer, got = bytearray(size), 0
    view = memoryview(buffer)
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise EOFError("connection closed")
        got += n
    return bytes(buffer)


def recv(sock: socket.socket, max_bytes: int) -> tuple[dict, list[np.ndarray]]:
    """One message; :class:`SandboxError` for an oversized or malformed one, before reading it if possible."""
    (size,) = struct.unpack("!Q", _recv_exact(sock, 8))
    if size > max_bytes:
        raise SandboxError(f"a message of {size} bytes exceeds the limit of {max_bytes}")
    body = _recv_exact(sock, size)
    head_size, count = struct.unpack_from("!II", body)
    if count > MAX_ITEMS or 8 + head_size > size:
        raise SandboxError("malformed message")
    header, offset, arrays = json.loads(body[8:8 + head_size]), 8 + head_size, []
    for _ in range(count):
        (length,) = struct.unpack_from("!Q", body, offset)
        array = np.load(io.BytesIO(body[offset + 8:offset + 8 + length]), allow_pickle=False)
        if array.dtype not in ALLOWED_DTYPES:
            raise ForbiddenResult(f"an array of dtype {array.dtype} is not accepted")
        arrays.append(array)
        offset += 8 + length
    if not isinstance(header, dict):
        raise SandboxError("malformed message")
    return header, arrays


# --- values <-> JSON specs + arrays ----------------------------------------------------------

NUMPY_SCALARS = {np.dtype(n).type: kind for kind, names in
                 ((bool, ("bool",)), (int, ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")),
                  (float, ("float16", "float32", "float64"))) for n in names}


def _plain_scalar(value, kind):
    """``value`` as an exact ``bool``/``int``/``float``/``str`` read with the base type's own method
    (an ``IntEnum``, a ``str`` subclass, a numpy scalar), or ``None`` when it is not a scalar."""
    if kind in (bool, int, float, str):
        return value
    for base, read in ((bool, bool), (int, int.__int__), (float, float.__float__), (str, str.__str__)):
        if issubclass(kind, base):  # the real type (type(value)), not a __class__ the object claims
            return read(value)
    if kind in NUMPY_SCALARS:  # numpy's own exact types only
        return NUMPY_SCALARS[kind](value)
    return None


def encode(value, arrays: list, depth: int = 0) -> dict:
    """Describe ``value`` as JSON, appending tensors to ``arrays``; unsupported values become 'other'.

    Runs where ``value`` was made (in the sandbox, for results): containers and scalars of a subclass
    are read with the base type's methods, so no method of the student's classes runs here.
    """
    kind = type(value)
    if kind is torch.Tensor and len(arrays) < MAX_ITEMS:
        try:
            # .contiguous() rather than np.ascontiguousarray, which turns a 0-d tensor into shape (1,)
            array = value.detach().cpu().resolve_conj().resolve_neg().contiguous().numpy()
        except Exception:  # bfloat16, sparse, meta, ...: not a plain array
            return {"t": "other", "type": f"torch.Tensor of dtype {value.dtype}, layout {value.layout}"}
        if array.dtype not in ALLOWED_DTYPES:
            return {"t": "other", "type": f"torch.Tensor of dtype {value.dtype}"}
        arrays.append(array)
        return {"t": "tensor", "i": len(arrays) - 1}
    if value is None:
        return {"t": "none"}
    scalar = _plain_scalar(value, kind)
    if scalar is not None and (type(scalar) is not str or len(scalar) <= MAX_LENGTH):
        return {"t": type(scalar).__name__, "v": scalar}
    for base in (tuple, list):
        if issubclass(kind, base) and depth < MAX_DEPTH and base.__len__(value) <= MAX_LENGTH:
            return {"t": base.__name__, "items": [encode(item, arrays, depth + 1) for item in base.__iter__(value)]}
    if issubclass(kind, dict) and depth < MAX_DEPTH and dict.__len__(value) <= MAX_LENGTH:
        return {"t": "dict", "items": [[encode(k, arrays, depth + 1), encode(v, arrays, depth + 1)]
                                       for k, v in dict.items(value)]}
    return {"t": "other", "type": f"{kind.__module__}.{kind.__qualname__}"}


def same_value(spec, arrays: list[np.ndarray], other_spec, other_arrays: list[np.ndarray]) -> bool:
    """Whether two encodings describe the same value, tensors compared bit for bit (NaN equals NaN)."""
    if spec != other_spec or len(arrays) != len(other_arrays):
        return False
    return all(a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
               for a, b in zip(arrays, other_arrays))


def copy_into(target, source) -> None:
    """Make the caller's ``target`` equal ``source`` (what the student's function left in its copy of
    that argument) in place, as if the function had changed ``target`` itself: tensors get the new
    values (or shape), lists and dicts the new items; tuples and numbers cannot change and are left."""
    if isinstance(target, torch.Tensor) and isinstance(source, torch.Tensor):
        with torch.no_grad():
            if target.shape == source.shape and target.dtype == source.dtype:
                target.copy_(source.to(target.device))
            else:  # resize_, t_, a new .data: the tensor object now holds something else
                target.data = source.to(target.device)
    elif isinstance(target, (list, tuple)) and isinstance(source, (list, tuple)):
        for index, (old, new) in enumerate(zip(target, source)):
            if _same_kind(old, new):
                copy_into(old, new)
            elif isinstance(target, list):
                target[index] = new
        if isinstance(target, list):
            target[len(source):] = list(source[len(target):])
    elif isinstance(target, dict) and isinstance(source, dict):
        for key in [k for k in target if k not in source]:
            del target[key]
        for key, new in source.items():
            if key in target and _same_kind(target[key], new):
                copy_into(target[key], new)
            else:
                target[key] = new


def _same_kind(old, new) -> bool:
    """Both tensors, both sequences or both dicts: ``old`` is updated in place rather than replaced."""
    return any(isinstance(old, kind) and isinstance(new, kind) for kind in (torch.Tensor, (list, tuple), dict))


def safe_text(text, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters, unprintable ones replaced: safe to show and to log."""
    text = str(text)
    shown = "".join(c if c.isprintable() or c == "\n" else "?" for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


SCALARS = {"bool": bool, "int": int, "float": float, "str": str}


def _plain_key(key) -> bool:
    """A dict key we rebuilt ourselves: a number, a string, None, or a tuple of those (no tensors)."""
    return type(key) in (bool, int, float, str, type(None)) or (type(key) is tuple and all(map(_plain_key, key)))


def decode(spec, arrays: list[np.ndarray], device, depth: int = 0):
    """Inverse of :func:`encode`, trusting nothing: exact JSON types, indexes in range, depth bounded."""
    kind = spec.get("t") if isinstance(spec, dict) else None
    if kind == "tensor" and type(spec.get("i")) is int and 0 <= spec["i"] < len(arrays):
        return torch.from_numpy(np.array(arrays[spec["i"]], copy=True)).to(device)
    if kind == "none":
        return None
    if kind in SCALARS and type(spec.get("v")) is SCALARS[kind] and (kind != "str" or len(spec["v"]) <= MAX_LENGTH):
        return spec["v"]
    items = spec.get("items") if kind in ("tuple", "list", "dict") and depth < MAX_DEPTH else None
    if type(items) is list and len(items) <= MAX_LENGTH:
        if kind != "dict":
            decoded = [decode(item, arrays, device, depth + 1) for item in items]
            return tuple(decoded) if kind == "tuple" else decoded
        if all(type(pair) is list and len(pair) == 2 for pair in items):
            keys = [decode(k, arrays, device, depth + 1) for k, _ in items]
            if all(_plain_key(k) for k in keys):
                return {k: decode(v, arrays, device, depth + 1) for k, (_, v) in zip(keys, items)}
    if kind == "other":
        raise ForbiddenResult(f"returned a {safe_text(spec.get('type'), 120)}; grading accepts only plain "
                              "torch.Tensor results (not subclasses or other objects), Python numbers, strings, "
                              "None, and tuples, lists or dicts of them")
    raise SandboxError("malformed value in a message from the sandbox")


def rebuild_exception(name, message) -> Exception:
    """The student's exception as a built-in type by name, else a fresh :class:`StudentException`
    subclass of that name: no class from the sandbox is ever instantiated here."""
    name, message = safe_text(name, 60), safe_text(message, 1000)
    cls = getattr(builtins, name, None) if name.isidentifier() else None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:
            pass
    cls = type(name if name.isidentifier() else "StudentException", (StudentException,), {})
    return cls(message)
