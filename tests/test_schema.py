from __future__ import annotations

from cxnlp.schema import render_markdown
from tests.conftest import ROOT


def test_schema_docs_match_the_schema_module():
    doc = (ROOT / "docs" / "schema.md").read_text(encoding="utf-8")
    assert doc == render_markdown(), "docs/schema.md is stale: run `python -m cxnlp.schema > docs/schema.md`"
