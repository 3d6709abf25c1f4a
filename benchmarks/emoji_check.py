"""What naming emoji (``cxnlp.emoji``) does to a heads folder, on texts with emoji.

    python benchmarks/emoji_check.py models/cx-heads [OTHER_HEADS ...]

For each heads folder, every set is scored twice over the heads' encoder (fp32, ONNX Runtime, as
training embeds): fed the text as it is (each emoji an ``[UNK]`` for MiniLM) and fed the emoji's names
(input form ``emoji-names-1``), whatever form the encoder records. Sets:

- TweetEval emotion tweets with at least one emoji (SemEval-2018 train and validation; cx-heads 4.3.0 and
  cx-encoder 3.0.0 never trained on them): the most likely of anger, joy, optimism and sadness (macro-F1,
  accuracy), and polarity (anger and sadness negative, joy and optimism positive; P(positive) against
  P(negative)), with VADER's polarity on the same tweets (VADER reads emoji itself);
- the same over all TweetEval emotion tweets, most of which have no emoji;
- GoEmotions dev comments with an emoji (both halves: the heads tune thresholds on one): the 28-label
  figures with the heads' cuts, and the sentiment-group label with their neutral band.

Nothing here chooses a model; it measures one input change.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from cxnlp import corpora, models
    from cxnlp.emoji import EMOJI_NAMES, TEXT, describe_emoji
    from cxnlp.emotion import EmotionModel
    from cxnlp.evaluate import (
        choose_among,
        multilabel_metrics,
        polarity,
        singlelabel_metrics,
        vader_sentiment,
    )
    from cxnlp.sentiment import SentimentModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("heads", nargs="+", help="heads folders")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    args = ap.parse_args()
    data = Path(args.data_dir)

    tweets = corpora.tweeteval_emotion(data)
    has = [describe_emoji(t) != t for t in tweets.texts]
    ge = corpora.goemotions(data, "dev")
    groups = corpora.goemotions(data, "dev", "group")
    ge_idx = [i for i, t in enumerate(ge.texts) if describe_emoji(t) != t]
    sets = {
        "tweeteval_emotion_with_emoji": [i for i, h in enumerate(has) if h],
        "tweeteval_emotion_all": list(range(len(tweets))),
    }
    for folder in args.heads:
        heads = models.Heads.load(folder)
        encoder = models.load_encoder(heads.encoder, "cpu", "onnx")
        smodel, emodel = SentimentModel(heads), EmotionModel(heads)
        recorded = models.encoder_input_form(heads.encoder)
        for form in (EMOJI_NAMES, TEXT):
            setattr(encoder, models.INPUT_FORM_ATTR, form)  # what models.encode feeds it
            row: dict = {
                "heads": folder,
                "version": heads.version,
                "encoder_input": form,
                "recorded": recorded,
            }
            emb = models.encode(encoder, tweets.texts)
            probs = emodel.predict(emb, tweets.texts)
            polar = smodel.predict(emb, tweets.texts)
            choices = sorted({l[0] for l in tweets.labels})
            for name, idx in sets.items():
                gold = [tweets.labels[i][0] for i in idx]
                pick = choose_among(probs[idx], emodel.labels, choices)
                pg = [corpora.TWEET_EMOTION_POLARITY[g] for g in gold]
                pp = polarity(polar[idx])
                e = singlelabel_metrics(gold, pick, choices)
                s = singlelabel_metrics(pg, pp, ["negative", "positive"])
                v = singlelabel_metrics(
                    pg, vader_sentiment([tweets.texts[i] for i in idx], True), ["negative", "positive"]
                )
                row[name] = {
                    "n": len(idx),
                    "emotion_macro_f1": e["macro_f1"],
                    "emotion_accuracy": e["accuracy"],
                    "polarity_macro_f1": s["macro_f1"],
                    "vader_polarity_macro_f1": v["macro_f1"],
                }
            texts = [ge.texts[i] for i in ge_idx]
            emb = models.encode(encoder, texts)
            m = multilabel_metrics(
                [ge.labels[i] for i in ge_idx],
                emodel.active_labels(emodel.predict(emb, texts)),
                emodel.labels,
            )
            g = singlelabel_metrics(
                [groups.labels[i][0] for i in ge_idx],
                smodel.labels_of(smodel.predict(emb, texts)),
                ["ambiguous", "negative", "neutral", "positive"],
            )
            row["goemotions_dev_with_emoji"] = {
                "n": len(ge_idx),
                "emotion_micro_f1": m["micro_f1"],
                "emotion_macro_f1": m["macro_f1"],
                "group_accuracy": g["accuracy"],
            }
            print(json.dumps(row))
        setattr(encoder, models.INPUT_FORM_ATTR, recorded)


if __name__ == "__main__":
    main()
