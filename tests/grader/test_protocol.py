"""The sandbox's wire protocol (:mod:`course_grader.protocol`), without processes.

Only plain arrays and JSON cross, nothing is unpickled, and what could lie is refused (tensor
subclasses, objects with their own ``__eq__``); data types a correct solution may well return
(a ``Counter``, a namedtuple, ``torch.Size``, a transposed tensor, an unsigned or 0-d tensor, a
numpy scalar) arrive as the plain value they hold. :func:`~course_grader.protocol.copy_into`
mirrors a function's in-place changes onto the caller's values.
"""
from __future__ import annotations

import io
import json
import socket
from collections import Counter, OrderedDict, defaultdict, namedtuple
from enum import IntEnum

import numpy as np
import pytest
import torch

from course_grader import protocol as sandbox_protocol
from course_grader.protocol import ForbiddenResult, SandboxError


def _round_trip(header: dict, arrays=()):
    ours, theirs = socket.socketpair()
    with ours, theirs:
        sandbox_protocol.send(ours, header, arrays)
        return sandbox_protocol.recv(theirs, 1 << 20)


def test_messages_carry_plain_arrays_and_json():
    header, arrays = _round_trip({"a": [1, 2.5, None]}, [np.arange(6, dtype=np.float32).reshape(2, 3)])
    assert header == {"a": [1, 2.5, None]}
    assert arrays[0].dtype == np.float32 and arrays[0].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_object_arrays_and_pickles_are_refused():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        buffer = io.BytesIO()
        np.save(buffer, np.array([object()], dtype=object), allow_pickle=True)
        blob, head = buffer.getvalue(), json.dumps({}).encode()
        body = sandbox_protocol.struct.pack("!II", len(head), 1) + head + sandbox_protocol.struct.pack("!Q", len(blob)) + blob
        ours.sendall(sandbox_protocol.struct.pack("!Q", len(body)) + body)
        with pytest.raises(ValueError, match="pickle"):
            sandbox_protocol.recv(theirs, 1 << 20)


def test_oversized_messages_are_refused_before_reading_them():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(sandbox_protocol.struct.pack("!Q", 1 << 40))
        with pytest.raises(SandboxError, match="exceeds the limit"):
            sandbox_protocol.recv(theirs, 1 << 20)


class _Subclass(torch.Tensor):
    pass


@pytest.mark.parametrize("value, shown", [
    (torch.zeros(2).as_subclass(_Subclass), "_Subclass"),
    (np.zeros(2), "numpy.ndarray"),
    ({1, 2}, "builtins.set"),
    ({"key": object()}, "builtins.object"),
    (torch.zeros(2, dtype=torch.bfloat16), "bfloat16"),
    ((torch.zeros(1), object()), "builtins.object"),
])
def test_only_exact_tensors_numbers_none_and_tuples_come_back(value, shown):
    arrays: list = []
    spec = sandbox_protocol.encode(value, arrays)
    with pytest.raises(ForbiddenResult, match=shown):
        sandbox_protocol.decode(spec, arrays, "cpu")


def test_results_are_rebuilt_as_plain_tensors_with_their_dtype():
    arrays: list = []
    value = (torch.arange(3.0), [torch.ones(2, dtype=torch.bool), 4, 2.5, None])
    back = sandbox_protocol.decode(sandbox_protocol.encode(value, arrays), arrays, "cpu")
    assert type(back) is tuple and type(back[0]) is torch.Tensor and torch.equal(back[0], value[0])
    assert back[1][0].dtype == torch.bool and back[1][1:] == [4, 2.5, None]


def test_strings_and_dicts_of_pairs_cross_for_labs_without_tensors():
    value = ("héllo", {(97, 98): 3, (98, 99): 1}, [[1, 2], (3,)], {})
    arrays: list = []
    back = sandbox_protocol.decode(sandbox_protocol.encode(value, arrays), arrays, "cpu")
    assert back == value and arrays == [] and type(back[1]) is dict


def test_containers_are_bounded_in_length_and_depth():
    for value in (list(range(sandbox_protocol.MAX_LENGTH + 1)), "x" * (sandbox_protocol.MAX_LENGTH + 1),
                  [[[[[1]]]]]):
        arrays: list = []
        with pytest.raises(ForbiddenResult):
            sandbox_protocol.decode(sandbox_protocol.encode(value, arrays), arrays, "cpu")


@pytest.mark.parametrize("spec", [{"t": "tensor", "i": 5}, {"t": "int", "v": "1"}, {"t": "tuple", "items": "x"},
                                  ["not", "a", "dict"], {"t": "pickle"},
                                  {"t": "dict", "items": [[{"t": "list", "items": []}, {"t": "none"}]]},
                                  {"t": "dict", "items": [[{"t": "none"}]]},
                                  {"t": "str", "v": 3}])
def test_malformed_specs_are_refused(spec):
    with pytest.raises(SandboxError):
        sandbox_protocol.decode(spec, [], "cpu")


def test_student_exceptions_keep_builtin_types_and_never_run_student_classes():
    assert type(sandbox_protocol.rebuild_exception("NotImplementedError", "")) is NotImplementedError
    custom = sandbox_protocol.rebuild_exception("MyError", "boom")
    assert isinstance(custom, sandbox_protocol.StudentException) and type(custom).__name__ == "MyError"
    assert type(sandbox_protocol.rebuild_exception("SystemExit", "0")).__name__ == "SystemExit"
    assert isinstance(sandbox_protocol.rebuild_exception("SystemExit", "0"), Exception)  # caught like any failure


# --- plain data in other types: no false alarm on correct code written differently --------------

Pair = namedtuple("Pair", "left right")


class Colour(IntEnum):
    RED = 3


@pytest.mark.parametrize("value, plain", [
    (Counter({(97, 98): 3, (98, 99): 1}), {(97, 98): 3, (98, 99): 1}),
    (defaultdict(int, {(1, 2): 2}), {(1, 2): 2}),
    (OrderedDict([("b", 1), ("a", 2)]), {"b": 1, "a": 2}),
    ({Pair(1, 2): 5}, {(1, 2): 5}),
    (Pair(1, [2, 3]), (1, [2, 3])),
    (torch.Size([2, 3]), (2, 3)),
    (Colour.RED, 3),
    (np.int64(7), 7),
    (np.float32(0.5), 0.5),
    (np.bool_(True), True),
])
def test_subclasses_and_numpy_scalars_arrive_as_the_plain_value_they_hold(value, plain):
    arrays: list = []
    back = sandbox_protocol.decode(sandbox_protocol.encode(value, arrays), arrays, "cpu")
    assert back == plain and type(back) is type(plain)
    if isinstance(back, dict):
        assert all(type(key) is type(expected) for key, expected in zip(back, plain))


def test_a_subclass_is_read_with_its_base_types_methods_never_its_own():
    class Lying(dict):
        def items(self):
            raise AssertionError("the student's method ran")

        def __len__(self):
            return 0

        def __eq__(self, other):
            return True

    arrays: list = []
    back = sandbox_protocol.decode(sandbox_protocol.encode(Lying(a=1), arrays), arrays, "cpu")
    assert back == {"a": 1} and type(back) is dict and back != {"a": 2}


@pytest.mark.parametrize("tensor", [
    torch.arange(6.0).view(2, 3).t(),  # transposed: not contiguous
    torch.arange(4.0).expand(3, 4),  # stride 0
    torch.arange(10)[::2],
    torch.tensor(2.5),  # 0-d keeps its shape
    torch.arange(5).to(torch.uint16), torch.arange(5).to(torch.uint32), torch.arange(5).to(torch.uint64),
    torch.arange(5, dtype=torch.int16), torch.ones(3, dtype=torch.bool),
    torch.ones(2, requires_grad=True) * 2,
])
def test_tensors_arrive_with_their_shape_dtype_and_values_whatever_their_layout(tensor):
    arrays: list = []
    back = sandbox_protocol.decode(sandbox_protocol.encode(tensor, arrays), arrays, "cpu")
    assert type(back) is torch.Tensor and back.shape == tensor.shape and back.dtype == tensor.dtype
    assert torch.equal(back, tensor.detach()) and not back.requires_grad


# --- mirroring in-place changes ---------------------------------------------------------------------

def test_same_value_compares_bit_for_bit():
    def encoded(value):
        arrays: list = []
        return sandbox_protocol.encode(value, arrays), arrays

    nan = torch.tensor([float("nan"), 1.0])
    assert sandbox_protocol.same_value(*encoded([nan, 1]), *encoded([nan.clone(), 1]))
    assert not sandbox_protocol.same_value(*encoded([torch.tensor([0.0])]), *encoded([torch.tensor([-0.0])]))
    assert not sandbox_protocol.same_value(*encoded([torch.ones(2)]), *encoded([torch.ones(2, dtype=torch.float64)]))
    assert not sandbox_protocol.same_value(*encoded([[1, 2]]), *encoded([[1, 2, 3]]))


def test_copy_into_changes_the_callers_own_objects_in_place():
    weight, bias, ids, cache = torch.ones(2, 2), torch.zeros(3), [1, 2, 3], (torch.ones(1), torch.ones(1))
    params, keep = {"weight": weight, "bias": bias, "gone": 1}, weight.data_ptr()
    args = (params, ids, cache, torch.arange(4.0))
    changed = [{"weight": torch.full((2, 2), 5.0), "bias": torch.arange(6.0), "new": 2}, [1, 9],
               (torch.zeros(1), torch.ones(1)), torch.arange(4.0)]
    sandbox_protocol.copy_into(args, changed)
    assert params["weight"] is weight and weight.data_ptr() == keep and torch.equal(weight, torch.full((2, 2), 5.0))
    assert params["bias"] is bias and torch.equal(bias, torch.arange(6.0))  # resized in place, like bias.resize_(6)
    assert set(params) == {"weight", "bias", "new"} and ids == [1, 9] and torch.equal(cache[0], torch.zeros(1))
    extended = [1]
    sandbox_protocol.copy_into(extended, [1, 2, torch.ones(1)])
    assert extended[:2] == [1, 2] and torch.equal(extended[2], torch.ones(1))
