from __future__ import annotations

import pytest
import yaml

from cxnlp.errors import ConfigError
from cxnlp.schema import DEFAULT_STAGES
from cxnlp.taxonomy import load_taxonomy, parse_taxonomy


def test_taxonomy_default_has_the_nine_stages_in_journey_order():
    tax = load_taxonomy("default")
    assert tuple(tax.ids) == DEFAULT_STAGES
    assert all(s.description and len(s.examples) >= 150 for s in tax.stages)
    assert len(tax.none_examples) >= 100


def test_taxonomy_examples_never_overlap_the_stage_test_set():
    import json

    from tests.conftest import ROOT

    tax = load_taxonomy("default")
    train = {t.lower().strip() for t, _ in tax.labelled}
    test = {
        json.loads(l)["text"].lower().strip()
        for l in (ROOT / "data/eval/stages.jsonl").read_text().splitlines()
        if l.strip()
    }
    assert not train & test


@pytest.mark.parametrize(
    "data, problem",
    [
        ({"stages": []}, "non-empty 'stages'"),
        ({"stages": [{"id": "Bad Id", "examples": ["a"] * 5}]}, "must be lowercase"),
        ({"stages": [{"id": "a", "examples": ["x"] * 4}]}, "give at least 5"),
        (
            {"stages": [{"id": "a", "examples": ["x"] * 5}, {"id": "a", "examples": ["y"] * 5}]},
            "appears twice",
        ),
        ({"stages": [{"id": "a", "examples": ["x"] * 5}], "colour": 1}, "unknown top-level keys"),
        (
            {
                "stages": [{"id": "a", "examples": ["x"] * 5}],
                "mixed_examples": [{"text": "y", "stages": ["a", "b"]}],
            },
            "mixed example #1 names unknown stages ['b']",
        ),
        (
            {"stages": [{"id": "a", "examples": ["x"] * 5}], "mixed_examples": [{"text": "y"}]},
            "mixed example #1 must be a mapping with a non-empty 'text' and a 'stages' list",
        ),
        (
            {"stages": [{"id": "a", "examples": ["x"] * 5}], "mixed_examples": "y"},
            "mixed_examples must be a list",
        ),
    ],
)
def test_taxonomy_invalid_files_are_explained(data, problem):
    with pytest.raises(ConfigError) as exc:
        parse_taxonomy(data, "my.yaml")
    assert "[E204] Taxonomy 'my.yaml' is invalid" in str(exc.value) and problem in str(exc.value)


def test_taxonomy_hash_changes_with_content():
    a = parse_taxonomy({"stages": [{"id": "a", "examples": ["x1", "x2", "x3", "x4", "x5"]}]})
    b = parse_taxonomy({"stages": [{"id": "a", "examples": ["x1", "x2", "x3", "x4", "x6"]}]})
    assert a.hash != b.hash
    # An empty mixed_examples leaves the hash as it was (cached custom heads stay valid) ...
    assert parse_taxonomy({"stages": a_stages(), "mixed_examples": []}).hash == a.hash
    # ... and mixed examples change it.
    c = parse_taxonomy({"stages": a_stages(2), "mixed_examples": [{"text": "y", "stages": ["b", "a"]}]})
    assert c.hash != parse_taxonomy({"stages": a_stages(2)}).hash


def a_stages(n: int = 1) -> list[dict]:
    return [{"id": "ab"[i], "examples": [f"x{j}" for j in range(1, 6)]} for i in range(n)]


def test_taxonomy_mixed_examples_are_multi_label_training_rows_after_the_others():
    from cxnlp.finetune import stage_holdout
    from cxnlp.train import stage_training_data

    tax = parse_taxonomy(
        {
            "stages": a_stages(2),
            "none_examples": ["hi"],
            "mixed_examples": [{"text": " both of them ", "stages": ["b", "a", "b"]}],
        }
    )
    assert tax.labelled[-2:] == [("hi", ("none",)), ("both of them", ("a", "b"))]
    data = stage_training_data(tax, None)
    assert (data.texts[-1], data.labels[-1]) == ("both of them", ["a", "b"])
    assert len(data) == 12 and data.labels[:5] == [["a"]] * 5
    # The encoder's held-out fold is drawn over the same rows as the stage head's folds.
    assert stage_holdout(len(tax.labelled), 0, 5, 0).shape == (12,)


HOTEL = {
    "name": "hotel",
    "stages": [
        {
            "id": "booking",
            "description": "Finding and booking a room.",
            "examples": [
                "the booking website kept timing out",
                "booked the room in two clicks",
                "could not find a room for my dates online",
                "the reservation form rejected my card",
                "booking through the app was easy",
                "I reserved a suite for our anniversary",
            ],
        },
        {
            "id": "check_in",
            "description": "Arrival and check-in at reception.",
            "examples": [
                "we waited forty minutes at reception to check in",
                "check-in was quick and the receptionist was friendly",
                "our room was not ready when we arrived",
                "the front desk lost our reservation on arrival",
                "early check-in was granted with a smile",
                "the key cards did not work when we got to the room",
            ],
        },
        {
            "id": "room",
            "description": "The room and the stay itself.",
            "examples": [
                "the bed was comfortable and the room spotless",
                "the air conditioning in our room was broken",
                "the shower had no hot water",
                "lovely view from the balcony",
                "the walls were thin and it was noisy all night",
                "the minibar was empty and the towels were stained",
            ],
        },
    ],
}


def test_taxonomy_custom_stages_train_a_working_head(analyzer, tmp_path, monkeypatch):
    import cxnlp.train as train_mod
    from cxnlp.journey import StageModel
    from cxnlp.models import encode

    monkeypatch.setattr(train_mod, "CACHE_DIR", tmp_path)
    path = tmp_path / "hotel.yaml"
    path.write_text(yaml.safe_dump(HOTEL))
    model = StageModel.for_taxonomy(analyzer.heads, str(path))
    assert model.stage_ids == ["booking", "check_in", "room"]
    texts = [
        "the receptionist made us wait an hour to check in",
        "the mattress was lumpy and the room smelled",
        "the online booking page crashed twice",
    ]
    stages = model.active_stages(model.predict(encode(analyzer.encoder, texts), texts))
    assert [s[:1] for s in stages] == [["check_in"], ["room"], ["booking"]]
    # A custom head gives a text that no stage passes its most likely label; the shipped head does not.
    assert model.fallback and not StageModel(analyzer.heads).fallback
    # A threshold the user sets decides alone.
    assert not StageModel.for_taxonomy(analyzer.heads, str(path), threshold=0.7).fallback
    # Cached by the taxonomy hash: the second load does not retrain.
    assert list(tmp_path.glob("stage-heads/*/head.safetensors"))
    again = StageModel.for_taxonomy(analyzer.heads, str(path))
    assert again.stage_ids == model.stage_ids
    # A custom head runs where its heads run (torch's "meta" device stands in for a GPU).
    on_meta = StageModel.for_taxonomy(analyzer.heads.on("meta"), str(path))
    assert {p.device.type for p in on_meta.module.parameters()} == {"meta"}


def test_taxonomy_custom_head_is_cached_per_encoder_runtime(analyzer, tmp_path, monkeypatch):
    # A head trained on one encoder runtime (fp32, int8, torch) is never reused on another.
    import cxnlp.models as models_mod
    import cxnlp.train as train_mod
    from cxnlp.journey import StageModel
    from cxnlp.models import TaskSpec, make_mlp

    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(train_mod, "CACHE_DIR", tmp_path)
    loaded = []

    def fake_load_encoder(name, device, backend="auto", quantize="none"):
        loaded.append((backend, quantize))
        return "encoder"

    def fake_train(tax, encoder, cfg, seed, embed, weak=None):
        # The stages' descriptions train with the examples (HOTEL's have no "summary: items" form).
        assert weak.texts == [s["description"] for s in HOTEL["stages"]]
        assert weak.labels == [[s["id"]] for s in HOTEL["stages"]]
        names = [*tax.ids, "none"]
        spec = TaskSpec("stage", "multilabel", names, hidden=0, thresholds=[0.5] * len(names))
        return (
            spec,
            make_mlp(spec.in_dim(analyzer.heads.embedding_dim), 0, len(names)),
            {"cv": {"macro_f1": 0}},
        )

    monkeypatch.setattr(models_mod, "load_encoder", fake_load_encoder)
    monkeypatch.setattr(train_mod, "train_stage_head", fake_train)
    path = tmp_path / "hotel.yaml"
    path.write_text(yaml.safe_dump(HOTEL))
    for quantize in ("none", "int8-static", "int8-static"):
        StageModel.for_taxonomy(analyzer.heads, str(path), backend="onnx", quantize=quantize)
    assert loaded == [("onnx", "none"), ("onnx", "int8-static")]
    assert len(list(tmp_path.glob("stage-heads/*/head.safetensors"))) == 2


def test_stage_description_phrases_split_a_summary_and_its_items():
    from cxnlp.journey import description_examples
    from cxnlp.taxonomy import Stage, Taxonomy

    delivery = Stage(
        "delivery",
        "Getting the product to the customer:  shipping, couriers; tracking and returns, or pick-up.",
        ("x",) * 5,
    )
    assert delivery.description_phrases == [
        "Getting the product to the customer: shipping, couriers; tracking and returns, or pick-up.",
        "Getting the product to the customer",
        "shipping",
        "couriers",
        "tracking and returns",
        "pick-up",
    ]
    plain = Stage("check_in", "Arrival and check-in at reception.", ("x",) * 5)
    assert plain.description_phrases == ["Arrival and check-in at reception."]
    assert Stage("room", "  ", ("x",) * 5).description_phrases == []
    examples = description_examples(Taxonomy("t", (plain, delivery)))
    assert examples is not None and len(examples.texts) == 7
    assert examples.labels[0] == ["check_in"] and examples.labels[-1] == ["delivery"]
    assert description_examples(Taxonomy("t", (Stage("room", "", ("x",) * 5),))) is None
