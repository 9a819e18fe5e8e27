"""The Arrow size of a table's rows, the same however the rows are split into chunks.

``pyarrow.Table.nbytes`` depends on the chunk layout: every chunk brings its
own offsets and validity buffers. A build with ``num_proc=2`` writes one
Arrow file per process, so a pool part that spans both files has one more
chunk boundary than in a one-process build, and its ``nbytes`` differs by a
few bytes. The export writes sizes into the card and sizes its Parquet shards
and row groups from them, so it uses :func:`contiguous_nbytes` instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc


def contiguous_nbytes(table: pa.Table) -> int:
    """Return the bytes the buffers of the table would take if every column were one chunk without an offset.

    The count differs from ``nbytes`` of such a table by a few bytes per column:
    it counts a validity bitmap for every column and nothing under null structs.
    """
    return sum(_column_nbytes(column.type, column.chunks) for column in table.columns)


def _column_nbytes(data_type: pa.DataType, chunks: Sequence[pa.Array]) -> int:
    # A validity bitmap is counted even without nulls: whether a chunk carries one depends on
    # how it was written, and values under a null parent may or may not be null themselves.
    length = sum(len(chunk) for chunk in chunks)
    size = math.ceil(length / 8)

    if pa.types.is_struct(data_type):
        # flatten() makes each field null where the struct is null, so values under null rows do not count.
        fields = [chunk.flatten() for chunk in chunks]
        for index in range(data_type.num_fields):
            size += _column_nbytes(data_type.field(index).type, [arrays[index] for arrays in fields])
        return size

    if pa.types.is_fixed_size_list(data_type):
        # Null slots still hold list_size child values, which flatten() would leave out.
        width = data_type.list_size
        children = [chunk.values.slice(chunk.offset * width, len(chunk) * width) for chunk in chunks]
        return size + _column_nbytes(data_type.value_type, children)

    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        size += (length + 1) * _offset_width(data_type)
        return size + _column_nbytes(data_type.value_type, [chunk.flatten() for chunk in chunks])

    if _is_variable_width(data_type):
        size += (length + 1) * _offset_width(data_type)
        return size + sum(_value_bytes(chunk) for chunk in chunks)

    if pa.types.is_null(data_type):
        return 0
    if pa.types.is_boolean(data_type):
        return size + math.ceil(length / 8)
    try:
        return size + length * data_type.bit_width // 8
    except ValueError:
        # Another variable-width type (dictionary, map, union): count its buffers as they are.
        return sum(chunk.nbytes for chunk in chunks)


def _is_variable_width(data_type: pa.DataType) -> bool:
    return any(
        check(data_type)
        for check in (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_string, pa.types.is_large_string)
    )


def _offset_width(data_type: pa.DataType) -> int:
    large = (
        pa.types.is_large_list(data_type) or pa.types.is_large_binary(data_type) or pa.types.is_large_string(data_type)
    )
    return 8 if large else 4


def _value_bytes(chunk: pa.Array) -> int:
    total = pc.sum(pc.binary_length(chunk)).as_py()
    return int(total or 0)
