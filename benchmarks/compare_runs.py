"""How far two `cxnlp analyze` output folders agree, segment by segment: for a GPU run against a CPU run
of the same reviews (fp16 and another encoder runtime move scores in the last digits and can flip a label
that sits on a threshold), or for two code versions.

    python benchmarks/compare_runs.py OUT_CUDA OUT_CPU [--min-agree 0.97]

Segments are matched by (doc_id, segment_id); the segment texts must be identical, else the runs
segmented differently and nothing else is comparable. Prints one JSON object: the share of segments whose
stage set, top stage, sentiment and top CX emotion agree, the largest and mean absolute differences of
the scores, and the share of documents whose labels agree. Exits 1 when a label's agreement is below
``--min-agree`` (the GPU test's bar, ``tests/test_batch.py``), 2 when the segments differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

SEGMENT_LABELS = ("stages", "stage", "sentiment", "emotion")
SEGMENT_SCORES = ("stage_score", "sentiment_score", "emotion_score")
DOCUMENT_LABELS = ("stages", "primary_stage", "sentiment", "emotion")


def _key(value: object) -> str:
    """A comparable form of a cell: list-like stage sets as sorted tuples, the rest as text."""
    if hasattr(value, "__len__") and not isinstance(value, str):
        return repr(tuple(sorted(str(v) for v in value)))  # type: ignore[union-attr]
    return str(value)


def agreement(a: pd.DataFrame, b: pd.DataFrame, columns: tuple[str, ...]) -> dict[str, float]:
    return {
        c: round(float((a[c].map(_key).to_numpy() == b[c].map(_key).to_numpy()).mean()), 4)
        for c in columns
        if c in a and c in b
    }


def compare(first: Path, second: Path) -> dict[str, object]:
    seg = [
        pd.read_parquet(d / "segments.parquet").sort_values(["doc_id", "segment_id"]) for d in (first, second)
    ]
    doc = [pd.read_parquet(d / "documents.parquet").sort_values("doc_id") for d in (first, second)]
    a, b = (s.reset_index(drop=True) for s in seg)
    if len(a) != len(b) or not (a["text"].to_numpy() == b["text"].to_numpy()).all():
        return {"segments": [len(a), len(b)], "same_segments": False}
    scores = {}
    for c in SEGMENT_SCORES:
        if c in a and c in b:
            diff = (a[c].astype(float) - b[c].astype(float)).abs()
            scores[c] = {"max": round(float(diff.max()), 5), "mean": round(float(diff.mean()), 6)}
    da, db = (d.reset_index(drop=True) for d in doc)
    same_docs = len(da) == len(db) and bool((da["doc_id"].to_numpy() == db["doc_id"].to_numpy()).all())
    return {
        "segments": len(a),
        "documents": len(da),
        "same_segments": True,
        "segment_agreement": agreement(a, b, SEGMENT_LABELS),
        "score_abs_difference": scores,
        "document_agreement": agreement(da, db, DOCUMENT_LABELS) if same_docs else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    ap.add_argument("--min-agree", type=float, default=0.97)
    args = ap.parse_args(argv)
    result = compare(args.first, args.second)
    print(json.dumps(result, indent=2))
    if not result["same_segments"]:
        return 2
    worst = min(result["segment_agreement"].values())  # type: ignore[union-attr]
    return 0 if worst >= args.min_agree else 1


if __name__ == "__main__":
    sys.exit(main())
