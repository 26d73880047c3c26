"""The committed provenance table is complete and well-formed, and the parser
refuses malformed rows with a message that names them."""

from __future__ import annotations

import io
from collections import Counter

import pytest

from evaluation.realset.provenance import (
    FIELDS,
    STYLES,
    ProvenanceError,
    ProvenanceRow,
    parse_provenance,
    read_provenance,
)

MIN_DIGITS = 300
MIN_REPOSITORIES = 20
GOOD = {
    "id": "r0001",
    "repository": "someone/digits",
    "commit": "a" * 40,
    "path": "images/7.jpg",
    "crop": "",
    "label": "7",
    "style": "photo",
    "source_sha256": "b" * 64,
    "licence": "MIT",
    "notes": "crossed 7",
}


@pytest.fixture(scope="module")
def rows() -> list[ProvenanceRow]:
    return read_provenance()


def csv_text(*records: dict[str, str]) -> io.StringIO:
    lines = [",".join(FIELDS)]
    for record in records:
        lines.append(",".join(f'"{record[field]}"' for field in FIELDS))
    return io.StringIO("\n".join(lines) + "\n")


def test_the_table_has_enough_digits_from_enough_sources(rows: list[ProvenanceRow]) -> None:
    assert len(rows) >= MIN_DIGITS
    assert len({row.repository for row in rows}) >= MIN_REPOSITORIES


def test_every_row_is_well_formed(rows: list[ProvenanceRow]) -> None:
    for row in rows:
        assert row.label in range(10), row.id
        assert row.style in STYLES, row.id
        assert len(row.source_sha256) == 64 and set(row.source_sha256) <= set("0123456789abcdef")
        assert len(row.commit) == 40 and set(row.commit) <= set("0123456789abcdef")
        assert row.licence, row.id
        if row.crop is not None:
            x0, y0, x1, y1 = row.crop
            assert 0 <= x0 < x1 and 0 <= y0 < y1, row.id


def test_no_duplicate_ids_or_sources(rows: list[ProvenanceRow]) -> None:
    ids = Counter(row.id for row in rows)
    assert [i for i, n in ids.items() if n > 1] == []
    sources = Counter((row.repository, row.path, row.crop) for row in rows)
    assert [s for s, n in sources.items() if n > 1] == []


def test_every_digit_and_style_is_represented(rows: list[ProvenanceRow]) -> None:
    labels = Counter(row.label for row in rows)
    assert sorted(labels) == list(range(10))
    assert min(labels.values()) >= 15, labels
    assert sorted(Counter(row.style for row in rows)) == sorted(STYLES)


def test_a_good_row_parses() -> None:
    (row,) = parse_provenance(csv_text(GOOD))
    assert (row.label, row.style, row.crop, row.notes) == (7, "photo", None, "crossed 7")
    (_, cropped) = parse_provenance(csv_text(GOOD, {**GOOD, "id": "r0002", "crop": "1,2,30,40"}))
    assert cropped.crop == (1, 2, 30, 40)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("label", "10", "label"),
        ("label", "seven", "label"),
        ("style", "sketch", "style"),
        ("source_sha256", "b" * 63, "source_sha256"),
        ("source_sha256", "B" * 64, "source_sha256"),
        ("commit", "main", "commit"),
        ("repository", "digits", "repository"),
        ("path", "../etc/passwd", "path"),
        ("crop", "10,10,5,20", "crop"),
        ("crop", "1,2,3", "crop"),
        ("licence", "", "licence"),
        ("id", "7", "id"),
    ],
)
def test_a_bad_field_is_refused_by_name(field: str, value: str, message: str) -> None:
    with pytest.raises(ProvenanceError, match=message):
        parse_provenance(csv_text({**GOOD, field: value}))


def test_duplicates_are_refused() -> None:
    with pytest.raises(ProvenanceError, match="duplicate id"):
        parse_provenance(csv_text(GOOD, {**GOOD, "path": "other.png"}))
    with pytest.raises(ProvenanceError, match="listed twice"):
        parse_provenance(csv_text(GOOD, {**GOOD, "id": "r0002"}))
    # the same file with another crop is another digit
    assert len(parse_provenance(csv_text(GOOD, {**GOOD, "id": "r0002", "crop": "0,0,9,9"}))) == 2


def test_a_wrong_header_is_refused() -> None:
    with pytest.raises(ProvenanceError, match="header"):
        parse_provenance(io.StringIO("id,label\nr0001,7\n"))
