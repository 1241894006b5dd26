"""docs/dataset-errors.md must show exactly the codes the code can emit."""

from __future__ import annotations

from pathlib import Path

from longtune.datasets.errors import ERROR_CODES, DatasetError, render_error_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "dataset-errors.md"


def test_docs_table_matches_error_codes():
    text = DOC.read_text()
    table = text.split("<!-- BEGIN ERROR TABLE -->\n", 1)[1].split("<!-- END ERROR TABLE -->", 1)[0]
    assert table == render_error_table(), "regenerate the table in docs/dataset-errors.md"


def test_undocumented_codes_cannot_be_raised():
    try:
        DatasetError("made_up_code", "x")
    except ValueError:
        pass
    else:
        raise AssertionError("DatasetError accepted an undocumented code")


def test_every_documented_code_is_emitted_somewhere_in_the_tests():
    """Each code in ERROR_CODES appears as an expected value in a test module."""
    sources = "".join(
        p.read_text()
        for p in Path(__file__).parent.glob("test_dataset_*.py")
        if p != Path(__file__)
    )
    missing = [code for code in ERROR_CODES if f'"{code}"' not in sources]
    assert missing == []
