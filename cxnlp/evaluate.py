"""Metrics for the sentiment, emotion and stage models, and ``cxnlp eval`` on a labelled file.

Metrics: accuracy (exact match for multi-label), macro-F1, per-label precision/recall/F1 with support,
and a confusion matrix (single-label tasks; for multi-label tasks, of the top label against the first
gold label).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from .corpora import TWEET_EMOTION_POLARITY, CorpusFileError, tweeteval_labels_file, tweeteval_split
from .errors import ConfigError, Errors, InputError

UNITS = ("text", "segments")
TASKS = ("sentiment", "emotion", "stage")


def multilabel_metrics(gold: list[list[str]], pred: list[list[str]], labels: list[str]) -> dict[str, Any]:
    idx = {l: i for i, l in enumerate(labels)}
    G = np.zeros((len(gold), len(labels)), dtype=bool)
    P = np.zeros_like(G)
    for r, (g, p) in enumerate(zip(gold, pred)):
        for l in g:
            if l in idx:
                G[r, idx[l]] = True
        for l in p:
            if l in idx:
                P[r, idx[l]] = True
    tp = (G & P).sum(0).astype(float)
    fp = (~G & P).sum(0).astype(float)
    fn = (G & ~P).sum(0).astype(float)
    prec = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    rec = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=(prec + rec) > 0)
    support = G.sum(0)
    present = support > 0
    micro_tp, micro_fp, micro_fn = tp.sum(), fp.sum(), fn.sum()
    micro_f1 = 2 * micro_tp / max(2 * micro_tp + micro_fp + micro_fn, 1)
    per_label = {
        l: {
            "precision": round(float(prec[i]), 4),
            "recall": round(float(rec[i]), 4),
            "f1": round(float(f1[i]), 4),
            "support": int(support[i]),
        }
        for i, l in enumerate(labels)
    }
    return {
        "n": len(gold),
        "accuracy": round(float((G == P).all(1).mean()) if len(gold) else 0.0, 4),
        "macro_f1": round(float(f1[present].mean()) if present.any() else 0.0, 4),
        "macro_recall": round(float(rec[present].mean()) if present.any() else 0.0, 4),
        "micro_f1": round(float(micro_f1), 4),
        "per_label": per_label,
    }


def confusion(gold: list[str], pred: list[str], labels: list[str]) -> dict[str, Any]:
    idx = {l: i for i, l in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=int)
    for g, p in zip(gold, pred):
        if g in idx and p in idx:
            m[idx[g], idx[p]] += 1
    return {"labels": labels, "matrix": m.tolist(), "rows": "gold", "columns": "predicted"}


def singlelabel_metrics(gold: list[str], pred: list[str], labels: list[str]) -> dict[str, Any]:
    out = multilabel_metrics([[g] for g in gold], [[p] for p in pred], labels)
    out["confusion"] = confusion(gold, pred, labels)
    return out


# --------------------------------------------------------------------------------- eval files


def read_labelled(path: str | Path, task: str) -> tuple[list[str], list[list[str]]]:
    """JSONL ({"text", "label" | "labels" | "stages" | "sentiment" | "emotions"}), CSV/TSV with text and
    label columns, the GoEmotions TSV (text, comma-separated label ids, id) as it is, or the TweetEval
    layout: a task folder (every ``<split>_text.txt`` in it) or one split's ``<split>_text.txt``, with
    ``<split>_labels.txt`` and ``mapping.txt`` beside it."""
    path = Path(path)
    if path.is_dir() and (path / "mapping.txt").is_file():
        splits = sorted(p for p in path.glob("*_text.txt") if tweeteval_labels_file(p).is_file())
        if not splits:
            raise InputError(Errors.E211, path=str(path), problem="no <split>_text.txt with its _labels.txt")
        read = [_read_tweeteval(split) for split in splits]
        return [t for r in read for t in r[0]], [l for r in read for l in r[1]]
    if not path.is_file():
        raise InputError(Errors.E102, path=str(path))
    if path.name.endswith("_text.txt") and (path.parent / "mapping.txt").is_file():
        return _read_tweeteval(path)
    texts: list[str] = []
    labels: list[list[str]] = []
    key_order = {
        "sentiment": ("sentiment", "label", "labels"),
        "emotion": ("emotions", "labels", "label", "emotion"),
        "stage": ("stages", "labels", "label", "stage"),
    }[task]
    if path.suffix == ".jsonl":
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            obj = json.loads(line)
            key = next((k for k in key_order if k in obj), None)
            if key is None or not isinstance(obj.get("text"), str):
                continue
            value = obj[key]
            texts.append(obj["text"])
            labels.append([str(v) for v in value] if isinstance(value, list) else [str(value)])
        return texts, labels
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(
            csv.reader(
                fh, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
            )
        )
    if not rows:
        raise InputError(Errors.E211, path=str(path), problem="the file is empty")
    header = [h.strip().lower() for h in rows[0]]
    text_col = next((c for c in ("text", "sentence", "content", "review", "body") if c in header), None)
    if text_col is not None:
        ti = header.index(text_col)
        li = next((header.index(k) for k in (*key_order, "category") if k in header), None)
        if li is None:
            raise InputError(
                Errors.E211, path=str(path), problem=f"no label column (looked for {', '.join(key_order)})"
            )
        for r in rows[1:]:
            if len(r) > max(ti, li):
                texts.append(r[ti])
                labels.append([x.strip() for x in r[li].replace(";", ",").split(",") if x.strip()])
        return texts, labels
    # GoEmotions TSV: text, label ids, comment id; label names in labels.txt next to it.
    names_file = path.parent / "labels.txt"
    names = names_file.read_text().split() if names_file.is_file() else None
    for r in rows:
        if len(r) >= 2:
            ids = [x for x in r[1].split(",") if x.strip()]
            texts.append(r[0])
            labels.append([names[int(i)] if names and i.isdigit() else i for i in ids])
    return texts, labels


def _read_tweeteval(text_file: Path) -> tuple[list[str], list[list[str]]]:
    """A TweetEval split's rows with a text (:func:`cxnlp.corpora.tweeteval_split`), its problems as E211."""
    try:
        rows = tweeteval_split(text_file)
    except CorpusFileError as exc:
        raise InputError(Errors.E211, path=str(exc.path), problem=exc.problem) from exc
    kept = [(t, [label]) for t, label in rows if t]
    return [t for t, _ in kept], [l for _, l in kept]


def polarity(probs: np.ndarray) -> list[str]:
    """Positive or negative by which of P(positive) and P(negative) is larger (ties positive): how the
    sentiment head answers a binary set (columns negative, neutral, positive)."""
    return ["positive" if p[2] >= p[0] else "negative" for p in probs]


def choose_among(probs: np.ndarray, labels: list[str], choices: list[str]) -> list[str]:
    """Each row's most likely label among ``choices`` (a subset of ``labels``): how a single-label set
    over a few emotions (TweetEval's anger, joy, optimism, sadness) is scored."""
    idx = [labels.index(c) for c in choices]
    return [choices[int(j)] for j in probs[:, idx].argmax(1)] if len(probs) else []


def evaluate_file(
    path: str | Path,
    task: str,
    heads: str = "cx-heads",
    device: str = "cpu",
    taxonomy: str = "default",
    backend: str = "auto",
    quantize: str = "none",
    vader: bool = False,
    unit: str = "text",
) -> dict[str, Any]:
    """Score the heads on a labelled file; ``vader=True`` (sentiment) adds VADER on the same rows.

    ``unit="segments"`` (stage task) scores a text's stages as ``cxnlp analyze`` gives a document's: the
    text is split into segments as analyze splits it (default segment config; no redaction), each
    segment gets its stages, and the text's stages are their union; ``"text"`` (the default) runs the
    head once on the whole text."""
    from .emotion import CX_MAP, EmotionModel
    from .journey import StageModel
    from .models import Heads, encode, encoder_backend, load_encoder
    from .sentiment import SentimentModel

    if task not in TASKS:
        raise ConfigError(Errors.E210, task=task, valid=", ".join(TASKS))
    if unit not in UNITS or (unit == "segments" and task != "stage"):
        raise ConfigError(
            Errors.E002,
            key="eval unit",
            problem=f"'{unit}' for the {task} task; use text, or segments with --task stage",
            source="cxnlp eval",
        )
    texts, gold = read_labelled(path, task)
    if not texts:
        raise InputError(Errors.E211, path=str(path), problem=f"no rows with a text and a {task} label")
    h = Heads.load(heads)
    encoder = load_encoder(h.encoder, device, backend, quantize)
    if task == "sentiment":
        emb = encode(encoder, texts)
        model = SentimentModel(h)
        pred = model.labels_of(model.predict(emb, texts))
        gold1 = [_sentiment_name(g[0]) for g in gold]
        labels = list(model.labels)
        if set(gold1) <= {"negative", "positive"}:  # binary gold (SST-2): compare negative vs positive only
            probs = model.predict(emb, texts)
            pred = polarity(probs)
            labels = ["negative", "positive"]
        result = singlelabel_metrics(gold1, pred, labels)
        if vader:
            result["vader"] = compare_with_vader(texts, gold1, pred)
    elif task == "emotion":
        emb = encode(encoder, texts)
        emodel = EmotionModel(h)
        raw = emodel.predict(emb, texts)
        gold_names = {l for g in gold for l in g}
        if gold_names < set(emodel.labels) and all(len(g) == 1 for g in gold):
            # one label a row, from some of the GoEmotions labels: which of those is most likely
            choices = [l for l in emodel.labels if l in gold_names]
            result = singlelabel_metrics(
                [g[0] for g in gold], choose_among(raw, emodel.labels, choices), choices
            )
        elif gold_names <= set(emodel.labels):  # GoEmotions labels
            preds = emodel.active_labels(raw)
            result = multilabel_metrics(gold, preds, emodel.labels)
        else:  # CX emotion labels
            cx = emodel.to_cx(raw)
            preds = [[emodel.cx_labels[int(np.argmax(r))]] for r in cx]
            gold_cx = [[CX_MAP.get(l, l) for l in g][:1] for g in gold]
            result = singlelabel_metrics(
                [g[0] for g in gold_cx], [p[0] for p in preds], list(emodel.cx_labels)
            )
    else:
        smodel = StageModel.for_taxonomy(h, taxonomy)
        preds = predict_stages(texts, smodel, lambda t: encode(encoder, t), unit)
        gold_s = [[l for l in g if l != "none"] or ["none"] for g in gold]
        preds_s = [p or ["none"] for p in preds]
        result = multilabel_metrics(gold_s, preds_s, [*smodel.stage_ids, "none"])
        result["confusion"] = confusion(
            [g[0] for g in gold_s], [p[0] for p in preds_s], [*smodel.stage_ids, "none"]
        )
    result.update(
        {
            "task": task,
            "file": str(path),
            "model": h.meta.get("name", heads),
            "model_version": h.version,
            "encoder_backend": encoder_backend(encoder),
            **({"unit": unit} if task == "stage" else {}),
        }
    )
    return result


def predict_stages(texts: list[str], model: Any, embed: Any, unit: str = "text") -> list[list[str]]:
    """Each text's stages from a :class:`~cxnlp.journey.StageModel` and an ``embed(texts)`` function.
    ``unit="text"`` runs the head once on each whole text; ``"segments"`` gives a text the stages
    ``cxnlp analyze`` gives a document: segmented with the default segment config, stages per segment,
    then their union (in journey order)."""
    if unit == "text":
        return model.active_stages(model.predict(embed(texts), texts))
    import pandas as pd

    from .config import SegmentConfig
    from .journey import annotate_documents, annotate_segments
    from .segment import segment_documents

    docs = pd.DataFrame({"doc_id": [str(i) for i in range(len(texts))], "text": texts})
    segments = segment_documents(docs, SegmentConfig())
    seg_texts = segments["text"].tolist()
    annotate_segments(segments, model, model.predict(embed(seg_texts), seg_texts))
    annotate_documents(docs, segments, model.stage_ids)
    return [list(s) for s in docs["stages"]]


def _sentiment_name(label: str) -> str:
    """A sentiment label as the heads name it; TweetEval's four emotions stand for their polarity."""
    key = label.strip().lower()
    named = {"0": "negative", "1": "positive", "neg": "negative", "pos": "positive", "neu": "neutral"}
    return named.get(key) or TWEET_EMOTION_POLARITY.get(key, key)


def format_metrics(result: dict[str, Any]) -> str:
    lines = [
        f"task: {result['task']}   file: {result['file']}   n={result['n']}",
        f"accuracy {result['accuracy']:.4f}   macro-F1 {result['macro_f1']:.4f}   macro-recall {result['macro_recall']:.4f}   micro-F1 {result['micro_f1']:.4f}",
        "",
        f"{'label':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]
    for label, m in result["per_label"].items():
        lines.append(
            f"{label:<16}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>10.3f}{m['support']:>10}"
        )
    conf = result.get("confusion")
    if conf:
        labs = conf["labels"]
        width = max(6, max(len(l) for l in labs) + 1)
        lines += [
            "",
            "confusion (rows gold, columns predicted):",
            " " * width + "".join(f"{l[: width - 1]:>{width}}" for l in labs),
        ]
        for l, row in zip(labs, conf["matrix"]):
            lines.append(f"{l[: width - 1]:<{width}}" + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ VADER baseline

SENTIMENT_LABELS = ["negative", "neutral", "positive"]
VADER_THRESHOLD = 0.05


def vader_sentiment(texts: list[str], binary: bool = False) -> list[str]:
    """VADER's label from its compound score: >= 0.05 positive, <= -0.05 negative, else neutral.

    For binary gold (positive vs negative) the neutral band is dropped and the sign decides, with a
    compound of exactly 0 (no sentiment word found) counted as positive, so VADER, like our heads,
    answers every row."""
    from .models import vader_features

    compound = vader_features(texts)[:, 3] if texts else np.zeros(0)
    if binary:
        return ["positive" if c >= 0 else "negative" for c in compound]
    return [
        "positive" if c >= VADER_THRESHOLD else "negative" if c <= -VADER_THRESHOLD else "neutral"
        for c in compound
    ]


def compare_with_vader(texts: list[str], gold: list[str], ours: list[str]) -> dict[str, Any]:
    """Macro-F1 of our labels and of VADER's on the same rows, and the difference in points."""
    from .models import vader_features

    binary = set(gold) <= {"negative", "positive"}
    labels = ["negative", "positive"] if binary else SENTIMENT_LABELS
    ours_m = singlelabel_metrics(gold, ours, labels)
    vader_m = singlelabel_metrics(gold, vader_sentiment(texts, binary), labels)
    compound = vader_features(texts)[:, 3]
    return {
        "n": len(gold),
        "labels": "binary (negative/positive): VADER by the sign of compound, 0 counted positive"
        if binary
        else "3-way: VADER compound >= 0.05 positive, <= -0.05 negative, else neutral",
        "ours_macro_f1": ours_m["macro_f1"],
        "vader_macro_f1": vader_m["macro_f1"],
        "difference_points": round(100 * (ours_m["macro_f1"] - vader_m["macro_f1"]), 1),
        "ours_macro_recall": ours_m["macro_recall"],
        "vader_macro_recall": vader_m["macro_recall"],
        "vader_accuracy": vader_m["accuracy"],
        "vader_no_signal_share": round(float(np.mean(np.abs(compound) < VADER_THRESHOLD)), 4),
    }


def cx_emotion_rates(
    path: str | Path,
    heads: str = "cx-heads",
    device: str = "cpu",
    backend: str = "auto",
    quantize: str = "none",
    cx_map: dict[str, str] | None = None,
    cx_min_prob: dict[str, float] | None = None,
) -> dict[str, Any]:
    """How often each CX emotion is a segment's top emotion on a JSONL file of texts, segmented as
    ``cxnlp analyze`` does (default segment config). ``cx_map``/``cx_min_prob`` try another mapping."""
    import pandas as pd

    from .config import SegmentConfig
    from .emotion import EmotionModel
    from .models import Heads, encode, load_encoder
    from .segment import segment_documents

    rows = [json.loads(l) for l in Path(path).read_text(encoding="utf-8").splitlines() if l.strip()]
    docs = pd.DataFrame({"doc_id": [str(i) for i in range(len(rows))], "text": [r["text"] for r in rows]})
    texts = segment_documents(docs, SegmentConfig())["text"].tolist()
    h = Heads.load(heads)
    model = EmotionModel(h)
    if cx_map is not None or cx_min_prob is not None:
        spec = h.tasks["emotion"]
        extra = {**spec.extra, **({"cx_map": cx_map} if cx_map else {}), "cx_min_prob": cx_min_prob or {}}
        model = EmotionModel(_with_extra(h, extra))
    probs = model.predict(encode(load_encoder(h.encoder, device, backend, quantize), texts), texts)
    top, _ = model.top(model.to_cx(probs))
    counts = {e: top.count(e) for e in model.cx_labels}
    return {
        "file": str(path),
        "segments": len(texts),
        "top_emotion_share": {e: round(c / max(len(texts), 1), 4) for e, c in counts.items()},
        "top_emotion_count": counts,
    }


def _with_extra(heads: Any, extra: dict[str, Any]) -> Any:
    """A shallow stand-in for ``heads`` whose emotion spec carries ``extra`` (for trying mappings)."""
    import copy

    h = copy.copy(heads)
    h.tasks = dict(heads.tasks)
    spec = copy.copy(heads.tasks["emotion"])
    spec.extra = extra
    h.tasks["emotion"] = spec
    return h


def main(argv: list[str] | None = None) -> None:
    """``python -m cxnlp.evaluate FILE --task T [--backend B --quantize Q] [--vader]``: ``cxnlp eval``
    with the encoder backend as an option and, for sentiment, VADER on the same rows."""
    import argparse
    import logging

    from .models import BACKENDS

    ap = argparse.ArgumentParser(prog="python -m cxnlp.evaluate", description=main.__doc__)
    ap.add_argument("path")
    ap.add_argument("--task", choices=TASKS)
    ap.add_argument(
        "--cx-rates", action="store_true", help="PATH is JSONL texts: how often each CX emotion is on top"
    )
    ap.add_argument("--model", default="cx-heads")
    ap.add_argument("--taxonomy", default="default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default="auto", choices=list(BACKENDS))
    ap.add_argument(
        "--quantize",
        default="none",
        choices=["none", "int8", "int8-static"],
        help="onnx only; none (fp32, the default of cxnlp analyze and the card's figures), int8 (dynamic, batch-dependent) or int8-static",
    )
    ap.add_argument("--vader", action="store_true", help="sentiment only: VADER's macro-F1 on the same rows")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    quantize = args.quantize
    if args.cx_rates:
        rates = cx_emotion_rates(args.path, args.model, args.device, args.backend, quantize)
        print(json.dumps(rates, indent=2))
        return
    if args.task is None:
        ap.error("--task is required (or --cx-rates)")
    result = evaluate_file(
        args.path, args.task, args.model, args.device, args.taxonomy, args.backend, quantize, args.vader
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(format_metrics(result))
    print(f"\nencoder backend: {result['encoder_backend']}")
    if "vader" in result:
        v = result["vader"]
        print(
            f"VADER ({v['labels']}): macro-F1 {v['vader_macro_f1']:.4f} vs ours {v['ours_macro_f1']:.4f}"
            f" ({v['difference_points']:+.1f} points); no VADER signal on {v['vader_no_signal_share']:.1%} of rows"
        )


if __name__ == "__main__":
    main()
