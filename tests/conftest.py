from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SAMPLES = ROOT / "data" / "samples"


@pytest.fixture(scope="session")
def analyzer():
    """Real models, loaded once per test session."""
    from cxnlp.pipeline import Analyzer

    return Analyzer(device="cpu")


@pytest.fixture(scope="session")
def mixed_result(analyzer):
    return analyzer.analyze([str(FIXTURES / "mixed.jsonl")])


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> Path:
    """60 sample reviews with ids, dates and ratings (enough for a few pain points)."""
    path = tmp_path_factory.mktemp("in") / "reviews.jsonl"
    lines = (SAMPLES / "reviews.jsonl").read_text(encoding="utf-8").splitlines()[:60]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
