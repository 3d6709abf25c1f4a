from __future__ import annotations

from cxnlp.schema import render_markdown
from tests.conftest import ROOT


def test_schema_docs_match_the_schema_module():
    doc = (ROOT / "docs" / "schema.md").read_text(encoding="utf-8")
    assert doc == render_markdown(), "docs/schema.md is stale: run `python -m cxnlp.schema > docs/schema.md`"


def test_schema_every_error_code_is_documented():
    from cxnlp.errors import Errors

    doc = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    codes = [k for k in vars(Errors) if k[0] in "ER" and k[1:].isdigit()]
    assert codes and all(f"| {code} |" in doc for code in codes)
