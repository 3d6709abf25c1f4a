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


def test_schema_columns_match_the_pinned_snapshot():
    """Column names and types are a contract: a rename or a type change must fail loudly here."""
    import json

    from cxnlp.about import SCHEMA_VERSION
    from cxnlp.schema import snapshot

    major = SCHEMA_VERSION.split(".")[0]
    path = ROOT / "tests" / "fixtures" / f"schema_v{major}.json"
    assert path.is_file(), (
        f"no pinned schema for major version {major}: write {path} from cxnlp.schema.snapshot()"
    )
    pinned, now = json.loads(path.read_text(encoding="utf-8")), snapshot()
    problems = []
    for table in sorted(set(pinned["tables"]) | set(now["tables"])):
        old, new = pinned["tables"].get(table, {}), now["tables"].get(table, {})
        problems += [f"{table}.{c} was renamed or removed (pinned as {old[c]})" for c in old if c not in new]
        problems += [
            f"{table}.{c} changed type: pinned {old[c]}, now {new[c]}"
            for c in old
            if c in new and old[c] != new[c]
        ]
        problems += [
            f"{table}.{c} was added ({new[c]}): if deliberate, update the snapshot"
            for c in new
            if c not in old
        ]
    for name in ("rejects.jsonl", "summary.json"):
        problems += [f"{name}: key {k} was renamed or removed" for k in pinned[name] if k not in now[name]]
        problems += [
            f"{name}: key {k} was added: if deliberate, update the snapshot"
            for k in now[name]
            if k not in pinned[name]
        ]
    assert not problems, (
        "The output schema no longer matches tests/fixtures/"
        + path.name
        + ":\n  "
        + "\n  ".join(problems)
        + "\n"
        "Renames and removals need a new major schema version (cxnlp/about.py SCHEMA_VERSION). For a deliberate "
        'addition, regenerate the snapshot: python -c "import json, cxnlp.schema as s; '
        'print(json.dumps(s.snapshot(), indent=2))" > ' + str(path.relative_to(ROOT))
    )


def test_schema_positions_finds_each_value_first_row_without_python_strings():
    import numpy as np
    import pandas as pd

    from cxnlp.schema import positions

    keys = pd.Series(["a", "b", "a", None], dtype=pd.StringDtype(na_value=np.nan))
    values = pd.Series(["b", "a", "z", None], dtype=object)
    assert positions(values, keys).tolist() == [1, 0, -1, -1]  # first row of "a"; missing and null: -1
    assert positions(pd.Series([2, 1]), pd.Series(["1", "2"])).tolist() == [1, 0]  # compared as strings
    assert positions(pd.Series([], dtype=object), keys).tolist() == []
    assert positions(pd.Series(["a"]), pd.Series([], dtype=object)).tolist() == [-1]
