"""How many times the sentiment head should see the 2,000 TweetEval sentiment tweets
(``sentiment.tweeteval_repeat``), measured without the stage test set.

    python benchmarks/select_sentiment_repeat.py 1 3 6 10 15 [--set key=value ...]

For each count, the sentiment head is trained as ``cxnlp train pipelines/train-heads.yaml`` trains it
(``train.train_sentiment``) and scored on SST-2 dev and the reporting half of GoEmotions sentiment-group dev
(never trained on), and the 5-fold cross-validation of the card (``train.sentiment_cv``: every copy of a
held-out tweet held out with it) gives the TweetEval and UCI figures. The sum of SST-2 accuracy and the
GoEmotions, TweetEval and UCI macro-F1 ranks the counts. The CX sentiment labels of the stage test set are
not used. Each line also gives the TweetEval emotion tweets' polarity macro-F1 (VADER's beside it): the
head's own when it never trained on them, out-of-fold with ``sentiment.use_tweet_emotions`` (then they are
cross-validated too), and ``sum5``, the sum with that figure.

Embeddings: a repeated list holds no text that the single-copy list lacks, so each count reuses the
single-copy list's cached embeddings (``~/.cache/cxnlp/embeddings``) row by row instead of encoding
80,000 texts again. Each count then takes about a minute on 2 cores. ``cxnlp train`` encodes the repeated
list itself, in other batches: its figures can differ from these in the fourth decimal.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from cxnlp import corpora
    from cxnlp import train as tr
    from cxnlp.config import parse_overrides
    from cxnlp.evaluate import singlelabel_metrics, vader_sentiment

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("counts", type=int, nargs="+")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="overrides of train-heads.yaml")
    args = ap.parse_args()

    def config(count: int) -> tr.TrainConfig:
        overrides = parse_overrides([*args.sets, f"sentiment.tweeteval_repeat={count}"])
        return tr.load_train_config(ROOT / "pipelines" / "train-heads.yaml", overrides)

    one = config(1)
    data_dir = Path(one.data_dir)
    # Every text any setting reads, once: the TweetEval emotion tweets too, in or out of training.
    tweets = corpora.tweeteval_emotion_sentiment(data_dir)
    with_tweets = one.model_copy(
        update={"sentiment": one.sentiment.model_copy(update={"use_tweet_emotions": True})}
    )
    single = list(dict.fromkeys(t for p in tr.sentiment_parts(with_tweets, data_dir) for t in p.texts))
    vectors = tr.embed_cached(single, one.encoder, one.device)
    row = {t: i for i, t in enumerate(single)}
    embed = tr.embed_cached

    def reuse(texts: list[str], encoder: str, device: str = "cpu") -> np.ndarray:
        if all(t in row for t in texts):
            return vectors[[row[t] for t in texts]]
        return embed(texts, encoder, device)

    tr.embed_cached = reuse  # type: ignore[assignment]
    tweet_gold_all = [l[0] for l in tweets.labels]
    vader_tweets = singlelabel_metrics(
        tweet_gold_all, vader_sentiment(tweets.texts, binary=True), ["negative", "positive"]
    )["macro_f1"]
    results: list[dict[str, Any]] = []
    for count in args.counts:
        t = time.time()
        cfg = config(count)
        _spec, module, _data, metrics = tr.train_sentiment(cfg, data_dir)
        cv = tr.sentiment_cv(cfg, data_dir)
        if "tweeteval_emotion" in cv:  # trained on: out-of-fold
            c = cv["tweeteval_emotion"]
            tweet_gold, tweet_pred = c["gold"], c["pred"]
        else:  # never trained on: the head itself
            X = tr.build_features(cfg.sentiment.features, reuse(tweets.texts, cfg.encoder), tweets.texts)
            tweet_gold, tweet_pred = tweet_gold_all, tr.polarity(tr._predict(module, X, "multiclass"))
        tweet = singlelabel_metrics(tweet_gold, tweet_pred, ["negative", "positive"])["macro_f1"]
        figures = {
            "sst2": metrics["sst2_dev"]["accuracy"],
            "goemotions_group": metrics["goemotions_group_dev_half"]["macro_f1"],
            "tweeteval_f1": cv["tweeteval_val"]["metrics"]["macro_f1"],
            "tweeteval_recall": cv["tweeteval_val"]["metrics"]["macro_recall"],
            "uci": cv["uci_sentences"]["metrics"]["macro_f1"],
            "tweet_emotions": tweet,
            "tweet_emotions_vader": vader_tweets,
        }
        score = figures["sst2"] + figures["goemotions_group"] + figures["tweeteval_f1"] + figures["uci"]
        results.append(
            {
                "tweeteval_repeat": count,
                "sets": args.sets,
                **figures,
                "sum": round(score, 4),
                "sum5": round(score + tweet, 4),
            }
        )
        print(json.dumps({**results[-1], "seconds": round(time.time() - t)}), flush=True)
    best = max(results, key=lambda r: r["sum"])
    print(json.dumps({"best": best["tweeteval_repeat"]}))


if __name__ == "__main__":
    main()
