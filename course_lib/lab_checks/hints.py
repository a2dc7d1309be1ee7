"""What an exception raised by a student's code probably means: one hint per family of errors.

:func:`hint_for_exception` reads the exception's type and PyTorch's (or Python's) message and names
the likely cause and what to check, quoting the sizes the message gives::

    RuntimeError: Expected size for first two dimensions of batch2 tensor to be: [2, 8] but got: [2, 5].
    Hint: a @ b multiplies (..., n, m) by (..., m, p): b's second-to-last axis has 5 where a's last has 8. ...

Families: the stub's ``NotImplementedError``; shapes (matrix products, einsum, broadcasting,
view/reshape, cat/stack, permute, boolean indexing, layer norm); dtypes (float and integer mixed,
non-boolean masks, ``~`` on floats, ``-inf`` in an integer tensor, softmax of integers); devices;
indexes and axes (an index past the end, a ``dim`` the tensor does not have, top-k over the wrong
axis, list indexes, dict keys); ``None`` where a value was expected (a missing ``return``); truth
values of tensors; a changed signature; division by zero; endless recursion.

Not covered: ``topk``'s "selected index k out of range" (the decoding lab's checks explain it
themselves, knowing k and the vocabulary size), calling the student's code
(:func:`~course_lib.lab_checks.toolkit.call_student`), messages of failed checks (:mod:`.toolkit`).
"""
from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["hint_for_exception"]

_SHAPES = "print the shapes just before that line (print(x.shape))"


def _batched_matmul(m: re.Match) -> str:
    return (f"a @ b multiplies (..., n, m) by (..., m, p): b's second-to-last axis has {m[2].split(', ')[-1]} "
            f"where a's last axis has {m[1].split(', ')[-1]}. For attention scores transpose the keys: "
            "q @ k.transpose(-2, -1) gives (..., T_q, T_k); then weights @ v gives (..., T_q, d_v).")


def _matmul(m: re.Match) -> str:
    return (f"a matrix product ({m[1]} @ {m[2]}) needs a's last size to equal b's first: transpose the operand "
            "that is the wrong way round (k.transpose(-2, -1)); a weight stored like nn.Linear's, "
            "(out_features, in_features), is applied with F.linear(x, W) = x @ W.T.")


def _broadcast(m: re.Match) -> str:
    return (f"two tensors combined element-wise (+, *, masked_fill, torch.where) must match axis by axis, "
            f"counting from the right, or have size 1 there; at axis {m[3]} one has {m[1]} and the other {m[2]}. "
            f"{_SHAPES.capitalize()}: a mask may be missing an axis (a (B, L) padding mask needs [:, None, None, :] to line up "
            "with (B, H, T_q, T_k)), two axes may be swapped (transpose), or a max/sum/topk ran over the wrong axis "
            "(dim=0 instead of dim=-1).")


def _reshape(m: re.Match) -> str:
    return (f"view/reshape must keep the number of elements ({m[2]} here, asked for {m[1]}): compute the new sizes "
            "from x.shape (batch, seq_len, dim = x.shape; dim // num_heads), not from fixed numbers, and split or "
            "join only axes that sit next to each other.")


def _dtypes(m: re.Match | None = None) -> str:
    return ("two tensors of different dtypes met (e.g. float and long): create new tensors with the inputs' dtype "
            "(dtype=x.dtype, or torch.zeros_like(x)), turn integer tensors into floats (.float()) before arithmetic, "
            "and keep -inf for float tensors.")


def _dimension(m: re.Match) -> str:
    return (f"the tensor has fewer axes than your code assumes (dims {m[1]} to {m[2]} exist, you asked for {m[3]}): "
            "count axes from the end (dim=-1 is the last) so the code works with or without batch and head axes.")


def _index(m: re.Match) -> str:
    return (f"an index past the end: axis {m[2]} has size {m[3]}, you asked for {m[1]}. Check the axis you index "
            "(top-k indices are positions along the last axis) and your loop bounds.")


_NONE = ("a value is None where a tensor (or a list) was expected: a function you call returned nothing. "
         "Check that each of your functions ends with `return ...`, and that you use the result of a function "
         "that returns one rather than one that changes its argument.")

# (exception types or None for any, pattern of the message, hint or function of the match); first match wins.
_HINTS: list[tuple[tuple[type, ...] | None, str, str | Callable[[re.Match], str]]] = [
    ((NotImplementedError,), r"^$", "replace the `raise NotImplementedError()` line with your implementation."),
    (None, r"not implemented for '(Long|Int|Short|Byte|Bool|Char)'",
     lambda m: f"this operation needs floating-point numbers, and got an integer tensor ({m[1]}): make it a float "
               "tensor first (.float(), or create it with dtype=torch.float / dtype=x.dtype)."),
    ((NotImplementedError,), r"", "replace the `raise NotImplementedError()` line with your implementation."),
    (None, r"view size is not compatible",
     ".view() needs a contiguous tensor; after .transpose() use .reshape() or .contiguous().view()."),
    (None, r"Expected all tensors to be on the same device|on the same device|same device as",
     "a tensor you create inside the function must go on the inputs' device (device=x.device)."),
    (None, r"Expected size for first two dimensions of batch2 tensor to be: \[([\d, ]+)\] but got: \[([\d, ]+)\]",
     _batched_matmul),
    (None, r"mat1 and mat2 shapes cannot be multiplied \((\d+x\d+) and (\d+x\d+)\)", _matmul),
    (None, r"size mismatch, got input \((\d+)\), mat \((\d+x\d+)\)|inconsistent tensor size", _matmul),
    (None, r"einsum\(\): subscript (\w) has size (\d+) for operand (\d+) which does not broadcast with "
           r"previously seen size (\d+)",
     lambda m: f"in your einsum the letter {m[1]} labels axes of sizes {m[4]} and {m[2]}: write each operand's "
               "letters in the order of its axes (q (b, i, d) and k (b, j, d): 'bid,bjd->bij')."),
    (None, r"The size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\) at non-singleton "
           r"dimension (-?\d+)", _broadcast),
    (None, r"shape '\[([-\d, ]+)\]' is invalid for input of size (\d+)", _reshape),
    (None, r"Provided sizes \[([\d, ]+)\] don't multiply up to the size of dim (\d+) \((\d+)\)",
     lambda m: f"unflatten's sizes {m[1]} must multiply to the size of axis {m[2]} ({m[3]}): use -1 for the one "
               "size you compute, e.g. x.unflatten(-1, (num_heads, -1))."),
    (None, r"Sizes of tensors must match except in dimension|stack expects each tensor to be equal size",
     f"torch.cat and torch.stack need the same sizes on every other axis: {_SHAPES}."),
    (None, r"number of dimensions in the tensor input does not match the length of the desired ordering|"
           r"number of dims don't match in permute",
     "permute takes one position per axis of the tensor (a 4-axis tensor needs 4 numbers); to swap two axes "
     "use .transpose(i, j)."),
    (None, r"The shape of the mask \[([\d, ]+)\] at index (\d+) does not match the shape of the indexed tensor "
           r"\[([\d, ]+)\]",
     lambda m: f"a boolean index must have the shape of the tensor it indexes (mask [{m[1]}], tensor [{m[3]}]): "
               "to keep the shape, use torch.where or masked_fill instead of x[mask]."),
    (None, r"Given normalized_shape=\[([\d, ]+)\], expected input with shape \[\*, ([\d, ]+)\]",
     lambda m: "layer norm normalises the last axis: F.layer_norm(x, x.shape[-1:], weight, bias), with a weight "
               "and bias of the size of x's last axis."),
    (None, r"only supports boolean masks|masked_select: expected BoolTensor",
     "masks are boolean here: build them with dtype=torch.bool (torch.ones(T, T, dtype=torch.bool).tril()) or by a "
     "comparison (i >= j), not as float 0/1 tensors."),
    ((TypeError,), r"~ \(operator.invert\) is only implemented on integer and Boolean",
     "~ flips a boolean mask, and your mask is a float tensor: make it boolean (dtype=torch.bool, or mask.bool())."),
    (None, r"value cannot be converted to type (int|long|int64_t|int32_t|uint8_t)",
     "-inf (or another float) cannot be stored in an integer tensor: the scores you fill must be floats."),
    (None, r"expected (m1 and m2|both vectors|mat1 and mat2|scalar type \w+ but found|self and mask|input and "
           r"weight)|can't be cast to the desired output type|must have the same dtype|dtype mismatch|"
           r"expected .*dtype", _dtypes),
    (None, r"Dimension out of range \(expected to be in range of \[(-?\d+), (-?\d+)\], but got (-?\d+)\)",
     _dimension),
    (None, r"index (-?\d+) is out of bounds for dimension (\d+) with size (\d+)", _index),
    (None, r"indexing tensors could not be broadcast together with shapes (.*)",
     lambda m: f"index tensors used together must broadcast to one shape, got {m[1]}: indices from topk over the "
               "wrong axis have shape (k, V), not (B, k); take the top k along the last axis, x.topk(k, dim=-1)."),
    (None, r"tensors used as indices must be long, int, byte or bool",
     "indices must be integer tensors (dtype=torch.long): a float index tensor cannot index."),
    ((IndexError,), r"list index out of range",
     "a list index past its end: a sequence of n items has n - 1 adjacent pairs, so loop i over range(len(ids) - 1) "
     "when you read ids[i + 1]."),
    (None, r"NoneType", _NONE),
    (None, r"Boolean value of Tensor with more than one value is ambiguous",
     "`if tensor:`, `and`/`or` or `not` on a tensor of several values: use .any() or .all(), and & | ~ to combine "
     "masks element-wise."),
    ((TypeError,), r"(missing \d+ required positional argument|takes \d+ positional arguments? but \d+ (were|was) "
                   r"given|got an unexpected keyword argument)",
     "the grader calls your function with the lab's signature: keep the parameters the lab gives (names, order "
     "and defaults), and call your other functions with theirs."),
    ((KeyError,), r"", "a dict has no such key: print its keys (list(d)) and use the names the lab gives."),
    ((ZeroDivisionError,), r"",
     "a division by zero: an empty input (no tokens, no pairs) or a length of 0; handle that case first."),
    ((RecursionError,), r"", "the function calls itself without end: make each call work on a smaller input, and "
                             "stop at the smallest."),
]


def hint_for_exception(error: BaseException) -> str | None:
    """A hint on the likely cause of ``error``, raised by a student's code; None when none applies."""
    text = str(error)
    for types, pattern, hint in _HINTS:
        if types is not None and not isinstance(error, types):
            continue
        match = re.search(pattern, text)
        if match:
            return hint(match) if callable(hint) else hint
    return None
