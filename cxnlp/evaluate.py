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

from .errors import ConfigError, Errors, InputError

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
    label columns, or the GoEmotions TSV (text, comma-separated label ids, id) as it is."""
    path = Path(path)
    if not path.is_file():
        raise InputError(Errors.E102, path=str(path))
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


def evaluate_file(
    path: str | Path, task: str, heads: str = "cx-heads", device: str = "cpu", taxonomy: str = "default"
) -> dict[str, Any]:
    from .emotion import CX_MAP, EmotionModel
    from .journey import StageModel
    from .models import Heads, encode, load_encoder
    from .sentiment import SentimentModel

    if task not in TASKS:
        raise ConfigError(Errors.E210, task=task, valid=", ".join(TASKS))
    texts, gold = read_labelled(path, task)
    if not texts:
        raise InputError(Errors.E211, path=str(path), problem=f"no rows with a text and a {task} label")
    h = Heads.load(heads)
    emb = encode(load_encoder(h.encoder, device), texts)
    if task == "sentiment":
        model = SentimentModel(h)
        pred = model.labels_of(model.predict(emb, texts))
        gold1 = [_sentiment_name(g[0]) for g in gold]
        labels = list(model.labels)
        if set(gold1) <= {"negative", "positive"}:  # binary gold (SST-2): compare negative vs positive only
            probs = model.predict(emb, texts)
            pred = ["positive" if p[2] >= p[0] else "negative" for p in probs]
            labels = ["negative", "positive"]
        result = singlelabel_metrics(gold1, pred, labels)
    elif task == "emotion":
        emodel = EmotionModel(h)
        raw = emodel.predict(emb, texts)
        gold_names = {l for g in gold for l in g}
        if gold_names <= set(emodel.labels):  # GoEmotions labels
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
        probs = smodel.predict(emb, texts)
        preds = smodel.active_stages(probs)
        gold_s = [[l for l in g if l != "none"] or ["none"] for g in gold]
        preds_s = [p or ["none"] for p in preds]
        result = multilabel_metrics(gold_s, preds_s, [*smodel.stage_ids, "none"])
        result["confusion"] = confusion(
            [g[0] for g in gold_s], [p[0] for p in preds_s], [*smodel.stage_ids, "none"]
        )
    result.update(
        {"task": task, "file": str(path), "model": h.meta.get("name", heads), "model_version": h.version}
    )
    return result


def _sentiment_name(label: str) -> str:
    return {"0": "negative", "1": "positive", "neg": "negative", "pos": "positive", "neu": "neutral"}.get(
        label.strip().lower(), label.strip().lower()
    )


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
