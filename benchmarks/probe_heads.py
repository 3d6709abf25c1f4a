"""Head-side probes over the shipped encoder (session 24, benchmarks/README.md): does the sentiment head
gain from other pooled features of the same forward pass, from a vote of its nearest training rows, or
from averaging heads trained with other seeds?

    python benchmarks/probe_heads.py pooled     # last-layer max over tokens / [CLS] next to the mean
    python benchmarks/probe_heads.py knn        # P = (1 - w) MLP + w vote of the k nearest training rows
    python benchmarks/probe_heads.py seeds      # seeds 0-4 alone, then their average

Run from the repository root with ``../shared/data``. Every variant trains the sentiment head of
``pipelines/train-heads.yaml`` (``train.fit_head``, same recipe and class weights) and is scored as the card
scores it: SST-2 dev (binary), the reporting half of GoEmotions sentiment-group dev (neutral band tuned on
the other half), the TweetEval emotion tweets as polarity (never trained on), and the card's 5-fold
cross-validation for TweetEval sentiment val (3-way, band re-tuned per fold) and the UCI sentences. The
stage test set is not read.

The encoder runs once, in torch fp32 on the CPU, over every text the probes read (about 77,000, 3-4 min
on 2 cores), and its mean, max and [CLS] poolings of the last layer are cached in
``~/.cache/cxnlp/bench/probe_pooled.npz``. The mean pooling, L2-normalised, is the shipped embedding
(the first row of each probe reproduces the card's figures).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxnlp import corpora  # noqa: E402
from cxnlp.cluster import normalize  # noqa: E402
from cxnlp.evaluate import polarity, singlelabel_metrics  # noqa: E402
from cxnlp.models import encoder_location, vader_features  # noqa: E402
from cxnlp.train import (  # noqa: E402
    SENTIMENTS,
    _predict,
    band_label,
    class_weights,
    cv_folds,
    fit_head,
    goemotions_group_dev,
    load_train_config,
    sentiment_parts,
    tune_band,
)

CACHE = Path.home() / ".cache" / "cxnlp" / "bench" / "probe_pooled.npz"
BINARY = ["negative", "positive"]


def pooled(texts: list[str], encoder: str) -> dict[str, np.ndarray]:
    """Mean, max and [CLS] of the encoder's last layer for ``texts`` (cached on the text list)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    if CACHE.is_file():
        z = np.load(CACHE, allow_pickle=True)
        if list(z["texts"]) == texts:
            return {k: z[k] for k in ("mean", "max", "cls")}
    torch.set_num_threads(2)
    location = encoder_location(encoder)
    tok = AutoTokenizer.from_pretrained(location)
    model = AutoModel.from_pretrained(location).eval()
    ids = tok(texts, truncation=True, max_length=128)["input_ids"]
    lens = np.array([len(x) for x in ids])
    out = {k: np.zeros((len(texts), model.config.hidden_size), np.float32) for k in ("mean", "max", "cls")}
    t0 = time.time()
    with torch.inference_mode():
        order = np.argsort(lens)
        for i in range(0, len(order), 128):
            rows = order[i : i + 128]
            batch = np.zeros((len(rows), lens[rows].max()), np.int64)
            mask = np.zeros_like(batch)
            for r, j in enumerate(rows):
                batch[r, : lens[j]] = ids[j]
                mask[r, : lens[j]] = 1
            m = torch.tensor(mask)
            h = model(input_ids=torch.tensor(batch), attention_mask=m).last_hidden_state
            w = m.unsqueeze(-1).float()
            out["mean"][rows] = ((h * w).sum(1) / w.sum(1)).numpy()
            out["max"][rows] = h.masked_fill(w == 0, -1e4).max(1).values.numpy()
            out["cls"][rows] = h[:, 0].numpy()
    print(f"encoded {len(texts)} texts in {time.time() - t0:.0f}s", flush=True)
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    np.savez(CACHE, texts=np.array(texts, dtype=object), **out)
    return out


class Probe:
    """The sentiment training rows and the card's evaluation sets, as rows of the pooled features."""

    def __init__(self) -> None:
        self.cfg = load_train_config("pipelines/train-heads.yaml")
        data = Path(self.cfg.data_dir)
        self.parts = sentiment_parts(self.cfg, data)
        self.texts = [t for p in self.parts for t in p.texts]
        self.y = np.array([SENTIMENTS.index(l[0]) for p in self.parts for l in p.labels])
        self.dev = corpora.sst2(data, "dev")
        self.gtexts, self.ggold, self.report, self.tune = goemotions_group_dev(self.cfg, data)
        self.tweets = corpora.tweeteval_emotion_sentiment(data)
        every = list(dict.fromkeys(self.texts + self.dev.texts + self.gtexts + self.tweets.texts))
        self.row = {t: i for i, t in enumerate(every)}
        self.pool = pooled(every, self.cfg.encoder)
        self.embedding = normalize(self.pool["mean"])
        self.fold, self.held = cv_folds(self.parts, 5, self.cfg.seed)

    def rows(self, texts: list[str]) -> np.ndarray:
        return np.array([self.row[t] for t in texts])

    def features(self, texts: list[str], extra: np.ndarray | None = None) -> np.ndarray:
        idx = self.rows(texts)
        cols = [self.embedding[idx]] + ([] if extra is None else [extra[idx]]) + [vader_features(texts)]
        return np.concatenate(cols, axis=1).astype(np.float32)

    def score(
        self,
        name: str,
        full: Callable[[list[str]], np.ndarray],
        folds: Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray]],
    ) -> None:
        """``full(texts)``: probabilities of the head trained on every row; ``folds(k, held)``: those of
        the head trained without fold ``k`` for its held-out rows, and for GoEmotions dev (band tuning)."""
        sst = singlelabel_metrics([l[0] for l in self.dev.labels], polarity(full(self.dev.texts)), BINARY)
        pg = full(self.gtexts)
        s = pg[:, 2] - pg[:, 0]
        band = tune_band(s, self.ggold, self.tune)
        ge = singlelabel_metrics(
            [self.ggold[i] for i in self.report], [band_label(s[i], band) for i in self.report], SENTIMENTS
        )
        tw = singlelabel_metrics(
            [l[0] for l in self.tweets.labels], polarity(full(self.tweets.texts)), BINARY
        )
        oof = np.zeros((len(self.texts), 3), np.float32)
        bands = np.zeros(len(self.texts))
        for k in range(5):
            held = np.flatnonzero(self.fold == k)
            oof[held], pg = folds(k, held)
            bands[held] = tune_band(pg[:, 2] - pg[:, 0], self.ggold, self.tune)
        idx = self.held["tweeteval_val"]
        te = singlelabel_metrics(
            [SENTIMENTS[self.y[i]] for i in idx],
            [band_label(float(oof[i, 2] - oof[i, 0]), float(bands[i])) for i in idx],
            SENTIMENTS,
        )
        idx = self.held["uci_sentences"]
        uci = singlelabel_metrics([SENTIMENTS[self.y[i]] for i in idx], polarity(oof[idx]), BINARY)
        print(
            f"{name}: SST-2 {sst['accuracy']:.4f} | GoEmotions groups {ge['macro_f1']:.4f} | emotion tweets "
            f"{tw['macro_f1']:.4f} | TweetEval 5-fold F1 {te['macro_f1']:.4f} recall {te['macro_recall']:.4f}"
            f" | UCI 5-fold {uci['macro_f1']:.4f}",
            flush=True,
        )

    def fit(self, X: np.ndarray, idx: np.ndarray, seed: int | None = None):  # type: ignore[no-untyped-def]
        sc = self.cfg.sentiment
        seed = self.cfg.seed if seed is None else seed
        return fit_head(X[idx], self.y[idx], "multiclass", sc, seed, pos_weight=class_weights(self.y[idx]))


def probe_pooled(p: Probe) -> None:
    train = p.rows(p.texts)

    def standardised(a: np.ndarray) -> np.ndarray:
        return (a - a[train].mean(0)) / (a[train].std(0) + 1e-6) * 0.05

    variants = {
        "none (shipped)": None,
        "max over tokens, standardised": standardised(p.pool["max"]),
        "max over tokens, L2-normalised": normalize(p.pool["max"]),
        "[CLS], standardised": standardised(p.pool["cls"]),
    }
    everyone = np.arange(len(p.texts))
    for name, extra in variants.items():
        X = p.features(p.texts, extra)
        head = p.fit(X, everyone)
        Xg = p.features(p.gtexts, extra)

        def folds(k: int, held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            h = p.fit(X, np.flatnonzero(p.fold != k))  # noqa: B023
            return _predict(h, X[held], "multiclass"), _predict(h, Xg, "multiclass")  # noqa: B023

        p.score(name, lambda t: _predict(head, p.features(t, extra), "multiclass"), folds)  # noqa: B023


def vote(queries: np.ndarray, memory: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    top = np.argpartition(-(queries @ memory.T), k, axis=1)[:, :k]
    return np.stack([(labels[top] == c).mean(1) for c in range(3)], axis=1).astype(np.float32)


def probe_knn(p: Probe) -> None:
    X = p.features(p.texts)
    E = p.embedding[p.rows(p.texts)]
    Eg = p.embedding[p.rows(p.gtexts)]
    Xg = p.features(p.gtexts)
    tweets = np.array([part.source.startswith("tweeteval") for part in p.parts for _ in part.texts])
    head = p.fit(X, np.arange(len(X)))
    fold_heads = [p.fit(X, np.flatnonzero(p.fold != k)) for k in range(5)]
    for memory_name, k, w in [
        ("none", 0, 0.0),
        ("all rows", 10, 0.25),
        ("all rows", 10, 0.5),
        ("all rows", 25, 0.25),
        ("all rows", 25, 0.5),
        ("TweetEval rows only", 25, 0.25),
    ]:

        def blend(probs: np.ndarray, queries: np.ndarray, member: np.ndarray) -> np.ndarray:
            if w == 0:  # noqa: B023
                return probs
            mem = member & tweets if memory_name.startswith("TweetEval") else member  # noqa: B023
            return (1 - w) * probs + w * vote(queries, E[mem], p.y[mem], k)  # noqa: B023

        everyone = np.ones(len(X), bool)

        def full(texts: list[str]) -> np.ndarray:
            probs = _predict(head, p.features(texts), "multiclass")
            return blend(probs, p.embedding[p.rows(texts)], everyone)  # noqa: B023

        def folds(fold: int, held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            h, member = fold_heads[fold], p.fold != fold
            return (
                blend(_predict(h, X[held], "multiclass"), E[held], member),  # noqa: B023
                blend(_predict(h, Xg, "multiclass"), Eg, member),  # noqa: B023
            )

        p.score(f"{memory_name}, k={k}, w={w}", full, folds)


def probe_seeds(p: Probe, seeds: tuple[int, ...] = (0, 1, 2, 3, 4)) -> None:
    X = p.features(p.texts)
    Xg = p.features(p.gtexts)
    everyone = np.arange(len(X))
    full_heads = {s: p.fit(X, everyone, s) for s in seeds}
    fold_heads = {(s, k): p.fit(X, np.flatnonzero(p.fold != k), s) for s in seeds for k in range(5)}

    def run(name: str, chosen: tuple[int, ...]) -> None:
        def full(texts: list[str]) -> np.ndarray:
            Xt = p.features(texts)
            return np.mean([_predict(full_heads[s], Xt, "multiclass") for s in chosen], axis=0)

        def folds(k: int, held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            hs = [fold_heads[(s, k)] for s in chosen]
            return (
                np.mean([_predict(h, X[held], "multiclass") for h in hs], axis=0),
                np.mean([_predict(h, Xg, "multiclass") for h in hs], axis=0),
            )

        p.score(name, full, folds)

    for s in seeds:
        run(f"seed {s}", (s,))
    run("average of seeds " + ", ".join(map(str, seeds)), seeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probe", choices=["pooled", "knn", "seeds"])
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    {"pooled": probe_pooled, "knn": probe_knn, "seeds": probe_seeds}[args.probe](Probe())


if __name__ == "__main__":
    main()
