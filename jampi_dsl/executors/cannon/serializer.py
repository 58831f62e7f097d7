"""A PySpark serializer for ``((bi, bj), ndarray)`` blocks: raw bytes, no pickle.

PySpark's default serializer pickles each block, which copies it on both ends
of every JVM↔Python hop. This one writes a small fixed header and then the
array's own memory (``write(memoryview)``, no copy), and reads the payload with
``readinto`` into a fresh, writable, C-contiguous array, which a Cannon task can
use directly as a receive buffer later. It is a ``Serializer`` like any other:
set it as an RDD's ``_jrdd_deserializer`` before its JVM RDD is built and every
PySpark operation on the RDD (map, collect, zip, ...) decodes it.
"""

from __future__ import annotations

import struct

import numpy as np
from pyspark.serializers import Serializer, SpecialLengths, read_int, write_int

_HEADER = struct.Struct("<4sqqqq8s")  # magic, bi, bj, rows, cols, dtype.str
_MAGIC = b"JBK1"
_MAX_FRAME = (1 << 31) - 1  # the JVM side frames with a signed 32-bit length


def _read_into(stream, view: memoryview) -> None:
    got, total = 0, len(view)
    readinto = getattr(stream, "readinto", None)
    while got < total:
        if readinto is not None:
            n = readinto(view[got:])
        else:
            chunk = stream.read(total - got)
            n = len(chunk)
            view[got : got + n] = chunk
        if not n:
            raise EOFError(f"block stream ended after {got} of {total} bytes")
        got += n


class RawBlockSerializer(Serializer):
    """Frames of ``header + raw C-order bytes``; elements are ``((bi, bj), 2-D ndarray)``."""

    def dump_stream(self, iterator, stream):
        for key, arr in iterator:
            bi, bj = key
            arr = np.ascontiguousarray(arr)
            if arr.ndim != 2:
                raise ValueError(f"block {key} is {arr.ndim}-D; blocks are 2-D")
            size = _HEADER.size + arr.nbytes
            if size > _MAX_FRAME:
                raise ValueError(
                    f"block {key} of {arr.nbytes} bytes exceeds Spark's 2 GiB frame limit; use a finer grid"
                )
            write_int(size, stream)
            stream.write(
                _HEADER.pack(_MAGIC, bi, bj, arr.shape[0], arr.shape[1], arr.dtype.str.encode())
            )
            if arr.nbytes:
                stream.write(memoryview(arr).cast("B"))

    def load_stream(self, stream):
        while True:
            try:
                length = read_int(stream)
            except EOFError:
                return
            if length == SpecialLengths.END_OF_DATA_SECTION:
                return
            if length < _HEADER.size:
                raise ValueError(f"bad block frame length {length}")
            head = stream.read(_HEADER.size)
            if len(head) < _HEADER.size:
                raise EOFError("block stream ended inside a header")
            magic, bi, bj, rows, cols, dt = _HEADER.unpack(head)
            dtype = np.dtype(dt.rstrip(b"\0").decode())
            if (
                magic != _MAGIC
                or rows < 0
                or cols < 0
                or rows * cols * dtype.itemsize != length - _HEADER.size
            ):
                raise ValueError(
                    f"corrupt block frame: {magic!r} {rows}x{cols} {dtype} in {length} bytes"
                )
            arr = np.empty((rows, cols), dtype)
            if arr.nbytes:
                _read_into(stream, memoryview(arr).cast("B"))
            yield (bi, bj), arr

    def __eq__(self, other):
        return isinstance(other, RawBlockSerializer)

    def __hash__(self):
        return hash(RawBlockSerializer)

    def __repr__(self):
        return "RawBlockSerializer()"
