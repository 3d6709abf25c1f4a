"""Loaders for the training and tuning corpora in ``../shared/data`` (see its README).

These are inputs for ``cxnlp train`` only: the package never ships or copies them. Each loader returns
plain lists so that the training code does not care where a text came from.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data"

LICENCES = {
    "sst2": "GLUE SST-2 (Socher et al., 2013); research use as distributed with GLUE",
    "uci_sentences": "UCI Sentiment Labelled Sentences (Kotzias et al., 2015); CC BY 4.0",
    "tweeteval": "TweetEval (Barbieri et al., 2020), SemEval-2017 task 4; research use per TweetEval terms",
    "tweeteval_emotion": "TweetEval emotion (Barbieri et al., 2020), SemEval-2018 task 1; research use per TweetEval terms",
    "goemotions": "GoEmotions (Demszky et al., 2020), Google Research; Apache-2.0",
    "banking77": "banking77 (Casanueva et al., 2020), PolyAI; CC BY 4.0",
    "clinc150": "clinc150 (Larson et al., 2019); CC BY 3.0",
    "cxnlp-taxonomy": "examples written by the cxnlp project; Apache-2.0",
    "cxnlp-stage-examples": "data/train/stage_examples.jsonl, written and labelled by the cxnlp project; Apache-2.0",
    "cxnlp-sentiment": "data/train/cx_sentiment.jsonl, sentences written and labelled by the cxnlp project; Apache-2.0",
}


@dataclass
class Labelled:
    texts: list[str]
    labels: list[list[str]]
    source: str

    def __len__(self) -> int:
        return len(self.texts)


def _tsv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


def sst2(data_dir: Path, split: str = "train", min_words: int = 1) -> Labelled:
    rows = _tsv(data_dir / "sst2" / f"{split}.tsv")[1:]
    pairs = [(r[1].strip(), "positive" if r[0] == "1" else "negative") for r in rows if len(r) >= 2]
    pairs = [p for p in pairs if len(p[0].split()) >= min_words]
    return Labelled([p[0] for p in pairs], [[p[1]] for p in pairs], f"sst2/{split}")


def uci_sentences(data_dir: Path) -> Labelled:
    texts, labels = [], []
    for name in ("amazon_cells_labelled.txt", "yelp_labelled.txt", "imdb_labelled.txt"):
        for line in (
            (data_dir / "uci_sentences" / name).read_text(encoding="utf-8", errors="replace").splitlines()
        ):
            text, _, label = line.rpartition("\t")
            if text.strip() and label.strip() in {"0", "1"}:
                texts.append(text.strip())
                labels.append(["positive" if label.strip() == "1" else "negative"])
    return Labelled(texts, labels, "uci_sentences")


# How a corpus trained on N times over is named in the training data counts ("<source>, repeated xN"):
# train.cv_folds finds the copies of a cross-validated corpus by it.
REPEATED = ", repeated x"


class CorpusFileError(ValueError):
    """A corpus file that cannot be read as its layout says: ``path`` is the file, ``problem`` what is
    wrong with it."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


def tweeteval_labels_file(text_file: Path) -> Path:
    """``<split>_labels.txt`` beside a TweetEval ``<split>_text.txt``."""
    return text_file.with_name(text_file.name[: -len("_text.txt")] + "_labels.txt")


def tweeteval_split(text_file: Path) -> list[tuple[str, str]]:
    """(stripped text, label name) of each line of a TweetEval split: one text a line in
    ``<split>_text.txt``, its label id on the same line of ``<split>_labels.txt``, the ids' names in
    ``mapping.txt`` (``id<TAB>name``) beside them."""
    labels_file = tweeteval_labels_file(text_file)
    if not labels_file.is_file():
        raise CorpusFileError(text_file, f"no {labels_file.name} beside it")
    mapping = dict(
        line.split("\t")[:2]
        for line in (text_file.parent / "mapping.txt").read_text(encoding="utf-8").splitlines()
        if "\t" in line
    )
    texts = text_file.read_text(encoding="utf-8").splitlines()
    ids = labels_file.read_text(encoding="utf-8").split()
    if len(texts) != len(ids):
        raise CorpusFileError(text_file, f"{len(texts)} texts but {len(ids)} labels in {labels_file.name}")
    unknown = sorted(set(ids) - set(mapping))
    if unknown:
        raise CorpusFileError(labels_file, f"label ids {unknown[:5]} are not in mapping.txt")
    return [(t.strip(), mapping[i].strip()) for t, i in zip(texts, ids)]


def _tweeteval(base: Path, split: str) -> list[tuple[str, str]]:
    """(stripped text, label name) of each line of a TweetEval task folder's split."""
    return tweeteval_split(base / f"{split}_text.txt")


def tweeteval_sentiment(data_dir: Path) -> Labelled:
    rows = _tweeteval(data_dir / "tweeteval" / "sentiment", "val")
    return Labelled([t for t, _ in rows], [[label] for _, label in rows], "tweeteval/sentiment/val")


# TweetEval's emotion tweets (SemEval-2018, not the sentiment set's SemEval-2017 tweets) carry one of four
# emotions; each has an unambiguous polarity, so they give tweet-domain sentiment without neutrals.
TWEET_EMOTION_POLARITY = {
    "anger": "negative",
    "sadness": "negative",
    "joy": "positive",
    "optimism": "positive",
}


def tweeteval_emotion(data_dir: Path, splits: tuple[str, ...] = ("train", "val")) -> Labelled:
    """TweetEval emotion tweets with their emotion: anger, joy, optimism or sadness (GoEmotions labels)."""
    base = data_dir / "tweeteval" / "emotion"
    rows = [(t, e) for split in splits for t, e in _tweeteval(base, split) if t]
    return Labelled([t for t, _ in rows], [[e] for _, e in rows], f"tweeteval/emotion/{'+'.join(splits)}")


def tweeteval_emotion_sentiment(data_dir: Path, splits: tuple[str, ...] = ("train", "val")) -> Labelled:
    """TweetEval emotion tweets labelled by their emotion's polarity (``TWEET_EMOTION_POLARITY``)."""
    tweets = tweeteval_emotion(data_dir, splits)
    return Labelled(
        tweets.texts,
        [[TWEET_EMOTION_POLARITY[l[0]]] for l in tweets.labels],
        f"{tweets.source} (polarity)",
    )


def goemotions(data_dir: Path, split: str = "train", variant: str = "original") -> Labelled:
    base = data_dir / "goemotions" / variant
    names = (base / "labels.txt").read_text().split()
    rows = _tsv(base / f"{split}.tsv")
    return Labelled(
        [r[0] for r in rows],
        [[names[int(i)] for i in r[1].split(",")] for r in rows],
        f"goemotions/{variant}/{split}",
    )


def goemotion_labels(data_dir: Path) -> list[str]:
    return (data_dir / "goemotions" / "original" / "labels.txt").read_text().split()


def banking77(data_dir: Path) -> tuple[list[str], list[str]]:
    with (data_dir / "banking77" / "train.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def clinc150(
    data_dir: Path, splits: tuple[str, ...] = ("train", "val", "oos_train", "oos_val")
) -> tuple[list[str], list[str]]:
    """Only the train and validation splits: the test splits stay unseen."""
    data = json.loads((data_dir / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    texts, intents = [], []
    for split in splits:
        for text, intent in data[split]:
            texts.append(text)
            intents.append(intent)
    return texts, intents


def weak_stage_labels(data_dir: Path, mapping_file: Path, per_label_cap: int, seed: int) -> Labelled:
    """banking77 and clinc150 queries labelled with stages through an intent -> stage map."""
    mapping = yaml.safe_load(mapping_file.read_text(encoding="utf-8"))
    texts: list[str] = []
    labels: list[list[str]] = []
    for corpus, (ctexts, intents) in (("banking77", banking77(data_dir)), ("clinc150", clinc150(data_dir))):
        table = mapping[corpus]
        for text, intent in zip(ctexts, intents):
            value = table.get(intent, "skip")
            if value == "skip":
                continue
            texts.append(text)
            labels.append(["none"] if value == "none" else list(value))
    # Cap each label set so that banking's many card intents do not drown the written examples.
    rng = random.Random(seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    counts: dict[str, int] = {}
    keep = []
    for i in order:
        key = "+".join(labels[i])
        if counts.get(key, 0) < per_label_cap:
            counts[key] = counts.get(key, 0) + 1
            keep.append(i)
    keep.sort()
    return Labelled([texts[i] for i in keep], [labels[i] for i in keep], "weak:banking77+clinc150")


def project_sentiment(path: Path) -> Labelled:
    """Customer-feedback sentences written and labelled by the project ({"text", "sentiment"} JSONL)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return Labelled(
        [r["text"] for r in rows], [[r["sentiment"]] for r in rows], f"cxnlp-written CX sentences ({path})"
    )


def project_stages(path: Path, stage_ids: list[str]) -> Labelled:
    """Journey-stage examples written and labelled by the project ({"text", "stages"} JSONL; ``["none"]``
    for a text about no stage). A line that does not parse, lacks a text or names a stage outside
    ``stage_ids`` is an error naming the line: these examples are meant to be exact, unlike weak labels."""
    valid = {*stage_ids, "none"}
    texts: list[str] = []
    labels: list[list[str]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text, stages = str(row["text"]).strip(), list(row["stages"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f'{path}, line {number}: not a {{"text", "stages"}} object ({exc})') from exc
        unknown = sorted(set(stages) - valid)
        if not text or not stages or unknown or ("none" in stages and len(stages) > 1):
            problem = (
                f"unknown stage ids {unknown}" if unknown else "an empty text, or none with other stages"
            )
            raise ValueError(f"{path}, line {number}: {problem}; stage ids are {', '.join(sorted(valid))}")
        texts.append(text)
        labels.append(stages)
    return Labelled(texts, labels, f"cxnlp-written stage examples ({path})")


def sample(data: Labelled, n: int | None, seed: int) -> Labelled:
    if n is None or n >= len(data):
        return data
    idx = sorted(random.Random(seed).sample(range(len(data)), n))
    return Labelled(
        [data.texts[i] for i in idx], [data.labels[i] for i in idx], f"{data.source} (sample of {n})"
    )
