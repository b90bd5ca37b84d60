"""The one JSONL reader: line numbers as an editor shows them, bad lines reported by number, not raised."""

from __future__ import annotations

import json

import pytest

from hf_hardneg.data.jsonl import read_jsonl


def test_lines_keep_their_file_numbers_across_blank_lines_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n   \n[2, 3]\n"text"\n')
    lines = list(read_jsonl(path))
    assert [(line.number, line.value, line.error) for line in lines] == [(1, {"a": 1}, None), (4, [2, 3], None),
                                                                         (5, "text", None)]


def test_a_line_that_is_not_json_is_yielded_with_its_error_and_the_rest_still_read(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": \n{"b": 2}\n', encoding="utf-8")
    first, bad, last = read_jsonl(path)
    assert bad.number == 2 and bad.value is None and isinstance(bad.error, json.JSONDecodeError)
    assert bad.error.colno == 7
    assert (first.value, last.value, last.number) == ({"a": 1}, {"b": 2}, 3)


def test_a_file_that_is_not_utf8_names_the_file_and_the_byte(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"caption": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.jsonl: not UTF-8 text \(invalid continuation byte at byte 16\)"):
        list(read_jsonl(path))


def test_every_jsonl_reader_of_the_library_names_the_same_line(tmp_path):
    """Plan, export table and caption file: a bad line 3 (after a blank line 2) is called line 3 by all."""
    from hf_hardneg.data.coco import read_captions
    from hf_hardneg.data.inpaintcoco_export import REQUIRED_COLUMNS, read_table
    from hf_hardneg.inpaint.batch import read_plan

    path = tmp_path / "table.jsonl"
    row = {"caption": "a red car", **{column: "x" for column in REQUIRED_COLUMNS}}
    path.write_text(json.dumps(row) + '\n\n{"caption": \n', encoding="utf-8")
    assert read_plan(path)[1][0] == "table.jsonl line 3"
    rows, _ = read_table(path)
    assert rows[1].where == "table.jsonl line 3" and "is not a JSON object" in rows[1].parse_error
    with pytest.raises(ValueError, match=r"table\.jsonl: line 3 is not valid JSON \(column 13\)"):
        read_captions(path)
