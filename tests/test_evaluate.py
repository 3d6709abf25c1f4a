from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from cxnlp.cli import cli
from cxnlp.evaluate import multilabel_metrics, read_labelled, singlelabel_metrics


def test_evaluate_metrics_on_a_known_example():
    m = singlelabel_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert m["accuracy"] == 0.75
    assert m["per_label"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}
    assert m["per_label"]["b"]["precision"] == 0.6667 and m["per_label"]["b"]["recall"] == 1.0
    assert m["confusion"]["matrix"] == [[1, 1], [0, 2]]
    ml = multilabel_metrics([["x", "y"], ["y"]], [["x"], ["y"]], ["x", "y"])
    assert ml["accuracy"] == 0.5 and ml["per_label"]["y"]["recall"] == 0.5


def test_evaluate_reads_sst2_goemotions_and_jsonl_files(tmp_path):
    (tmp_path / "sst.tsv").write_text("label\tsentence\n1\ta lovely film .\n0\tdull .\n")
    assert read_labelled(tmp_path / "sst.tsv", "sentiment") == (["a lovely film .", "dull ."], [["1"], ["0"]])
    ge = tmp_path / "ge"
    ge.mkdir()
    (ge / "labels.txt").write_text("joy\nanger\nneutral\n")
    (ge / "dev.tsv").write_text("so happy\t0\tid1\nugh\t1,2\tid2\n")
    assert read_labelled(ge / "dev.tsv", "emotion") == (["so happy", "ugh"], [["joy"], ["anger", "neutral"]])
    (tmp_path / "s.jsonl").write_text(json.dumps({"text": "late box", "stages": ["delivery"]}) + "\n")
    assert read_labelled(tmp_path / "s.jsonl", "stage") == (["late box"], [["delivery"]])


def test_evaluate_cli_prints_metrics_and_writes_json(tmp_path):
    src = tmp_path / "s.jsonl"
    rows = [
        {"text": "My parcel arrived broken and two weeks late.", "stages": ["delivery"]},
        {"text": "I was charged twice for one order.", "stages": ["billing"]},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "m.json"
    result = CliRunner().invoke(cli, ["eval", "--task", "stage", str(src), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "macro-F1" in result.output and "confusion" in result.output
    metrics = json.loads(out.read_text())
    assert metrics["n"] == 2 and metrics["per_label"]["delivery"]["support"] == 1


def test_evaluate_vader_labels_three_way_and_binary():
    from cxnlp.evaluate import vader_sentiment

    texts = ["I love it, wonderful service", "terrible, awful delay", "The box is blue."]
    assert vader_sentiment(texts) == ["positive", "negative", "neutral"]
    # Binary gold: the sign decides and no signal (compound 0) counts as positive.
    assert vader_sentiment(texts, binary=True) == ["positive", "negative", "positive"]


def test_evaluate_compare_with_vader_reports_the_difference_in_points():
    from cxnlp.evaluate import compare_with_vader

    texts = ["I love it", "awful", "It arrived on Tuesday."]
    gold = ["positive", "negative", "negative"]
    result = compare_with_vader(texts, gold, ["positive", "negative", "negative"])
    assert result["ours_macro_f1"] == 1.0 and result["vader_macro_f1"] < 1.0
    assert result["difference_points"] == round(100 * (1.0 - result["vader_macro_f1"]), 1)
    assert result["labels"].startswith("binary") and result["vader_no_signal_share"] == round(1 / 3, 4)


def test_evaluate_module_cli_adds_vader_and_names_the_backend(tmp_path, capsys):
    from cxnlp.evaluate import main

    src = tmp_path / "s.jsonl"
    rows = [
        {"text": "The delivery was late again and nobody answered.", "sentiment": "negative"},
        {"text": "Lovely fresh food, thank you!", "sentiment": "positive"},
        {"text": "I ordered on Monday.", "sentiment": "neutral"},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    main([str(src), "--task", "sentiment", "--vader", "--backend", "torch"])
    out = capsys.readouterr().out
    assert "encoder backend: torch" in out and "VADER (3-way" in out and "points)" in out


def test_evaluate_segments_unit_gives_a_text_the_stages_analyze_gives_the_document(analyzer, tmp_path):
    from cxnlp.evaluate import evaluate_file, predict_stages
    from cxnlp.journey import StageModel
    from cxnlp.models import encode

    rows = [
        {"text": "The courier left my parcel in the rain. I was charged twice for one order.",
         "stages": ["delivery", "billing"]},
        {"text": "Setup took two minutes, but the app crashes every day.", "stages": ["onboarding", "usage"]},
        {"text": "hello", "stages": []},
    ]  # fmt: skip
    src = tmp_path / "s.jsonl"
    src.write_text("".join(json.dumps({"id": str(i), **r}) + "\n" for i, r in enumerate(rows)))
    texts = [r["text"] for r in rows]
    got = predict_stages(texts, StageModel(analyzer.heads), lambda t: encode(analyzer.encoder, t), "segments")
    plain = tmp_path / "a.jsonl"  # the same texts as analyze reads them
    plain.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    documents = analyzer.analyze([str(plain)]).documents.set_index("doc_id")
    assert got == [list(documents.loc[str(i), "stages"]) for i in range(len(rows))]
    assert {"delivery", "billing"} <= set(got[0])  # one stage from each sentence
    result = evaluate_file(src, "stage", unit="segments")
    assert result["unit"] == "segments" and result["n"] == 3
    assert (
        result["per_label"]["delivery"]["recall"] == 1.0 and result["per_label"]["billing"]["recall"] == 1.0
    )


def test_evaluate_segments_unit_is_for_the_stage_task_only(tmp_path):
    import pytest

    from cxnlp.errors import ConfigError
    from cxnlp.evaluate import evaluate_file

    src = tmp_path / "s.jsonl"
    src.write_text(json.dumps({"text": "fine", "sentiment": "neutral"}) + "\n")
    with pytest.raises(ConfigError, match="use text, or segments with --task stage"):
        evaluate_file(src, "sentiment", unit="segments")


def _tweeteval_folder(root, rows):
    """A TweetEval emotion task folder: <split>_text.txt, <split>_labels.txt and mapping.txt."""
    folder = root / "emotion"
    folder.mkdir()
    (folder / "mapping.txt").write_text("0\tanger\n1\tjoy\n2\toptimism\n3\tsadness\n")
    for split, pairs in rows.items():
        (folder / f"{split}_text.txt").write_text("".join(t + " \n" for t, _ in pairs), encoding="utf-8")
        (folder / f"{split}_labels.txt").write_text("".join(f"{l}\n" for _, l in pairs))
    return folder


def test_evaluate_reads_the_tweeteval_layout_folder_or_split(tmp_path):
    import pytest

    from cxnlp.errors import InputError

    folder = _tweeteval_folder(tmp_path, {"train": [("so angry 😡", 0), ("yay", 1)], "val": [("sigh", 3)]})
    assert read_labelled(folder / "val_text.txt", "emotion") == (["sigh"], [["sadness"]])
    texts, labels = read_labelled(folder, "emotion")  # every split in the folder
    assert texts == ["so angry 😡", "yay", "sigh"] and labels == [["anger"], ["joy"], ["sadness"]]
    (folder / "val_labels.txt").write_text("3\n1\n")
    with pytest.raises(InputError, match=r"1 texts but 2 labels in val_labels\.txt"):
        read_labelled(folder, "emotion")
    (folder / "val_labels.txt").write_text("7\n")
    with pytest.raises(InputError, match=r"label ids \['7'\] are not in mapping\.txt"):
        read_labelled(folder / "val_text.txt", "emotion")


def test_evaluate_scores_tweeteval_emotions_as_a_choice_and_as_polarity(tmp_path):
    """Four single emotions are scored as a choice among them (not 28-label multi-label metrics), and
    for the sentiment task anger and sadness are negative, joy and optimism positive."""
    from cxnlp.evaluate import choose_among, evaluate_file

    probs = np.array([[0.1, 0.7, 0.2, 0.3], [0.9, 0.05, 0.3, 0.0]])  # joy and love are not choices
    assert choose_among(probs, ["anger", "joy", "love", "sadness"], ["anger", "sadness"]) == [
        "sadness",
        "anger",
    ]
    rows = [
        ("I am so angry at this airline, furious 😡", 0),
        ("Best day ever, so happy 😂", 1),
        ("Tomorrow will be better, keep going", 2),
        ("Crying all night, I miss her so much 😭", 3),
    ]
    folder = _tweeteval_folder(tmp_path, {"val": rows})
    emotion = evaluate_file(folder, "emotion", backend="onnx")
    assert emotion["n"] == 4 and list(emotion["per_label"]) == ["anger", "joy", "optimism", "sadness"]
    assert emotion["accuracy"] >= 0.75  # plain cases: the shipped heads get at least three of four
    sentiment = evaluate_file(folder, "sentiment", backend="onnx", vader=True)
    assert list(sentiment["per_label"]) == ["negative", "positive"] and sentiment["accuracy"] == 1.0
    assert sentiment["vader"]["n"] == 4
    out = tmp_path / "m.json"
    result = CliRunner().invoke(
        cli, ["eval", str(folder), "--task", "emotion", "--backend", "onnx", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["accuracy"] == emotion["accuracy"]  # the folder, from the command line
