from __future__ import annotations

import json

import numpy as np
import pytest

from cxnlp.errors import ModelError
from cxnlp.models import CONFIG_FILE, HEADS_FILE, Heads, find_model_dir
from tests.conftest import ROOT

MODEL = ROOT / "models" / "cx-heads"


def test_models_shipped_folder_is_complete_and_small():
    for name in (HEADS_FILE, CONFIG_FILE, "README.md", "metrics.json"):
        assert (MODEL / name).is_file(), name
    total = sum(p.stat().st_size for p in (ROOT / "models").rglob("*") if p.is_file())
    assert total < 60 * 2**20
    assert not list((ROOT / "models").rglob("*.bin")) and not list((ROOT / "models").rglob("*.pt"))


def test_models_config_records_labels_thresholds_and_versions():
    config = json.loads((MODEL / CONFIG_FILE).read_text())
    tasks = config["tasks"]
    assert tasks["sentiment"]["labels"] == ["negative", "neutral", "positive"]
    assert len(tasks["emotion"]["labels"]) == 28 and len(tasks["emotion"]["thresholds"]) == 28
    assert tasks["stage"]["labels"][-1] == "none" and len(tasks["stage"]["thresholds"]) == 10
    assert config["version"] and config["encoder"]["name"] and config["train_config"]["seed"] == 0


def test_models_card_reports_measured_metrics():
    card = (MODEL / "README.md").read_text()
    metrics = json.loads((MODEL / "metrics.json").read_text())
    acc = metrics["metrics"]["sentiment"]["sst2_dev"]["accuracy"]
    assert f"accuracy {acc:.3f}" in card
    assert "cxnlp train pipelines/train-heads.yaml" in card and "data/eval/stages.jsonl" in card


def test_models_missing_model_names_where_it_looked(tmp_path):
    with pytest.raises(ModelError) as exc:
        find_model_dir(str(tmp_path / "nope"))
    assert "[E201]" in str(exc.value) and "models.heads" in str(exc.value)


def test_models_corrupt_weights_are_reported(tmp_path):
    (tmp_path / CONFIG_FILE).write_text((MODEL / CONFIG_FILE).read_text())
    (tmp_path / HEADS_FILE).write_bytes(b"garbage")
    with pytest.raises(ModelError, match=r"\[E202\]"):
        Heads.load(str(tmp_path))


def test_models_predict_is_pure_and_shaped():
    heads = Heads.load("cx-heads")
    emb = np.random.default_rng(0).normal(size=(4, heads.embedding_dim)).astype(np.float32)
    texts = ["a", "b", "c", "d"]
    probs = heads.predict("sentiment", emb, texts)
    assert probs.shape == (4, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.array_equal(probs, heads.predict("sentiment", emb, texts))


def test_models_card_reports_vader_and_the_cross_validated_tweeteval_recall():
    card = (MODEL / "README.md").read_text()
    sentiment = json.loads((MODEL / "metrics.json").read_text())["metrics"]["sentiment"]
    recall = sentiment["cv"]["tweeteval_val"]["macro_recall"]
    assert f"**macro-recall {recall:.3f}**" in card and "python -m cxnlp.train models/cx-heads" in card
    baseline = sentiment["vader_baseline"]
    assert {"sst2_dev", "goemotions_group_dev_half", "stage_eval_set", "tweeteval_val_cv"} <= set(baseline)
    for row in baseline.values():
        assert row["difference_points"] == round(100 * (row["ours_macro_f1"] - row["vader_macro_f1"]), 1)
        assert (
            f"| {row['ours_macro_f1']:.3f} | {row['vader_macro_f1']:.3f} | {row['difference_points']:+.1f} |"
            in card
        )
    if any(row["difference_points"] < 10 for row in baseline.values()):
        assert "We do **not** beat VADER by 10 points everywhere" in card


def test_models_shipped_cx_map_matches_the_code():
    from cxnlp.emotion import CX_MAP, CX_MIN_PROB

    emotion = json.loads((MODEL / CONFIG_FILE).read_text())["tasks"]["emotion"]
    assert emotion["cx_map"] == CX_MAP and emotion["cx_min_prob"] == CX_MIN_PROB
