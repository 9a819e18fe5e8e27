"""contiguous_nbytes: the same size however a table's rows are chunked, close to Arrow's own count."""

from __future__ import annotations

import pyarrow as pa
import pytest

from builder.arrow_size import contiguous_nbytes
from builder.features import crossmed_features


def crossmed_like_table(rows: int) -> pa.Table:
    """Rows in the CrossMed schema: classification rows have null masks and boxes, segmentation rows do not."""
    features = crossmed_features()
    records = []
    for index in range(rows):
        segmentation = index % 3 == 0
        records.append(
            {
                "id": f"q{index:04d}",
                "image": {"bytes": bytes(range(index % 200)), "path": None},
                "question": "Which finding is present?" * (1 + index % 4),
                "options": ["A text", "B text", "C text", "D text"],
                "answer": "A",
                "answer_index": 0,
                "modality": 0,
                "anatomy": 0,
                "task": 1 if segmentation else 0,
                "triplet": index % 5,
                "source": 0,
                "subject_id": f"s{index}",
                "slice_index": -1,
                "source_file": f"case/{index}.png",
                "template_id": 0,
                "mask": {"bytes": b"mask" * index, "path": None} if segmentation else None,
                "bbox": [1, 2, 3, 4] if segmentation else None,
                "option_boxes": [[1, 2, 3, 4]] * 4 if segmentation else None,
            }
        )
    return pa.Table.from_pylist([features.encode_example(record) for record in records], schema=features.arrow_schema)


def rechunked(table: pa.Table, cuts: list[int]) -> pa.Table:
    """The same rows as separate tables cut at ``cuts``, concatenated into one table of several chunks."""
    bounds = [0, *cuts, table.num_rows]
    pieces = [table.slice(start, stop - start) for start, stop in zip(bounds, bounds[1:], strict=False)]
    return pa.concat_tables(pieces)


@pytest.mark.parametrize("cuts", [[1], [50], [7, 8, 90], [33, 66]])
def test_same_size_for_any_chunking(cuts: list[int]) -> None:
    table = crossmed_like_table(100).combine_chunks()
    split = rechunked(table, cuts)

    assert split.column("id").num_chunks == len(cuts) + 1
    assert contiguous_nbytes(split) == contiguous_nbytes(table)


def test_slices_in_the_middle_of_a_chunk() -> None:
    table = crossmed_like_table(100).combine_chunks()

    assert contiguous_nbytes(rechunked(table, [13, 61]).slice(10, 60)) == contiguous_nbytes(table.slice(10, 60))


def test_close_to_arrow_nbytes_of_one_chunk() -> None:
    table = crossmed_like_table(200).combine_chunks()

    assert contiguous_nbytes(table) == pytest.approx(table.nbytes, rel=0.01)


def test_arrow_nbytes_itself_depends_on_chunking() -> None:
    # The reason contiguous_nbytes exists: a one-process and a two-process build differ only in chunking.
    table = crossmed_like_table(100).combine_chunks()

    assert rechunked(table, [50]).nbytes != table.nbytes


def test_counts_string_values_and_offsets() -> None:
    table = pa.table({"text": pa.array(["ab", "cde", None])})

    # Validity bitmap 1 byte, 4 int32 offsets, 5 bytes of characters.
    assert contiguous_nbytes(table) == 1 + 16 + 5
