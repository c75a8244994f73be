"""LLVM instructions numba does not offer, as numba intrinsics for the codec's kernels.

Each is a single instruction, not hand-written vector code: popcount,
count-trailing-zeros, and unaligned 32/64-bit loads and stores into byte
arrays. The packing kernels (:mod:`spikestore.codecs._kernels`) and the gap
coder's kernels (:mod:`spikestore.codecs._gap_kernels`) share them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llvmlite import ir
from numba import types

if TYPE_CHECKING:
    # numba types an intrinsic by its typing function (typingctx, *args), not by
    # how compiled code calls it (*args): to mypy, an intrinsic is Any.
    def intrinsic(func: Any) -> Any: ...
else:
    from numba.extending import intrinsic

__all__ = ["ctpop64", "cttz64", "load64", "store32", "store64"]


@intrinsic
def ctpop64(typingctx, x):  # type: ignore[no-untyped-def]
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ctpop(args[0])

    return sig, codegen


@intrinsic
def cttz64(typingctx, x):  # type: ignore[no-untyped-def]
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))

    return sig, codegen


@intrinsic
def load64(typingctx, arr, i):  # type: ignore[no-untyped-def]
    """Little-endian uint64 from bytes ``arr[i:i+8]`` (an unaligned load)."""
    sig = types.uint64(arr, i)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        a = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(a.data, [args[1]]), ir.IntType(64).as_pointer())
        return builder.load(ptr, align=1)

    return sig, codegen


def _unaligned_store(bits: int):  # type: ignore[no-untyped-def]
    """An intrinsic storing an unsigned ``bits``-bit ``v`` little endian into bytes ``arr[i:]``."""

    @intrinsic
    def store(typingctx, arr, i, v):  # type: ignore[no-untyped-def]
        sig = types.void(arr, i, v)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            a = context.make_array(signature.args[0])(context, builder, args[0])
            ptr = builder.bitcast(builder.gep(a.data, [args[1]]), ir.IntType(bits).as_pointer())
            builder.store(args[2], ptr, align=1)
            return context.get_dummy_value()

        return sig, codegen

    return store


store32 = _unaligned_store(32)
store64 = _unaligned_store(64)
