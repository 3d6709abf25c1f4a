"""What the report and the stage summary read of a run's documents and segments, counted a chunk at a time.

A :class:`Digest` holds counts, sums, the few candidates the report may quote and the per-day trend
counts: nothing per document or per segment. :meth:`Digest.of` makes one from a table's rows (a whole
run, or one chunk of a batch run) and :meth:`Digest.merge` adds a later chunk's, with the same result
as one digest of all the rows. So a batch run of millions of reviews builds its report and stage summary
from its chunks as it reads them, without holding their rows (``cxnlp.batch``), and an in-memory run,
a run re-rendered from its tables on disk and a batch run share one way of counting.

Merging chunks assumes what a run guarantees: a document's segments are in its own chunk, and a doc id
is analysed once per run (a repeated id is rejected as R006). A table re-read from disk in one piece may
break both; one digest of it counts as the frame-wide lookups always did (a doc id seen twice: its
first row).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .schema import CX_EMOTIONS, positions, stage_codes

QUOTE_CHARS = 300  # longer quotes and verbatims are cut with an ellipsis
CHURN_QUOTES = 5  # churn-risk quotes shown
#: Verbatim candidates kept per stage, sentiment and kind of selection, for each verbatim shown: texts
#: that repeat are skipped, so the report picks its quotes among the most extreme few.
VERBATIM_POOL = 4
# Words of leaving: cancelling, switching, closing the account, not coming back. Matched, case-insensitive,
# in segments that are not positive ("would never cancel, love it" stays out).
CHURN_PATTERN = re.compile(
    r"\b(?:cancel(?:l?ed|l?ing|lation|s)?|unsubscrib\w*|switch(?:ed|ing)? (?:to|over)|"
    r"(?:moving|moved|going|went) (?:to|over to) (?:a |another )?(?:competitor|\w+ instead)|"
    r"clos(?:e|ed|ing) (?:my|the) account|delet(?:e|ed|ing) (?:my|the) account|"
    r"never (?:again|order(?:ing)? again|buy(?:ing)? again|coming back)|(?:won'?t|will not) (?:be )?"
    r"(?:order(?:ing)?|buy(?:ing)?|com(?:e|ing)) (?:back|again)|look(?:ing)? elsewhere|go(?:ing)? elsewhere|"
    r"(?:last|final) (?:order|box|time)|done with (?:you|this|them|it))\b",
    re.IGNORECASE,
)
SENTIMENTS = ("positive", "neutral", "negative")


# -- value helpers (tables read back from CSV hold JSON text and missing values of every kind) -----------


def _as_list(value: Any) -> list[Any]:
    """A list cell as a list: Python lists, NumPy arrays (Parquet) and JSON text (CSV) all work."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                return [value]
            return list(parsed) if isinstance(parsed, list) else [parsed]
        return [value] if text else []
    if isinstance(value, (list, tuple)):
        return list(value)
    if hasattr(value, "tolist"):
        out = value.tolist()
        return out if isinstance(out, list) else [out]
    return [] if _missing(value) else [value]


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) or math.isinf(number) else number


def _text(value: Any) -> str:
    return "" if value is None or _missing(value) else str(value)


def _clip(value: Any, limit: int = QUOTE_CHARS) -> str:
    text = " ".join(_text(value).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _utc(values: Any) -> pd.Series:
    return pd.to_datetime(pd.Series(values), utc=True, errors="coerce")


def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    return (
        frame[name]
        if name in frame.columns
        else pd.Series([None] * len(frame), index=frame.index, dtype=object)
    )


def _scores(frame: pd.DataFrame) -> np.ndarray:
    return pd.to_numeric(_col(frame, "sentiment_score"), errors="coerce").to_numpy(
        dtype=float, na_value=np.nan
    )


def _of_sentiment(scores: np.ndarray, labels: pd.Series, kind: str, by_label: bool) -> np.ndarray:
    """Which rows are of one sentiment: by label, or by the sign of the score."""
    if by_label:
        return (labels == kind).to_numpy(dtype=bool, na_value=False)
    return scores < 0 if kind == "negative" else scores > 0


def _most_extreme(scores: np.ndarray, mask: np.ndarray, kind: str, n: int) -> np.ndarray:
    """Positions of the ``n`` rows of ``mask`` with the lowest scores (``kind`` "negative") or the
    highest, the most extreme first, ties in table order; rows without a score never count."""
    rows = np.flatnonzero(mask & ~np.isnan(scores))
    keys = scores[rows] if kind == "negative" else -scores[rows]
    if 0 < n < len(rows):  # only the rows up to the n-th key (ties with it all kept, in table order)
        near = keys <= np.partition(keys, n - 1)[n - 1]
        rows, keys = rows[near], keys[near]
    order = np.argsort(keys, kind="stable")
    return rows[order[:n]]


def _churn_rows(segments: pd.DataFrame, block: int = 65_536) -> np.ndarray:
    """Positions of the segments that are not positive and speak of leaving (:data:`CHURN_PATTERN`),
    in table order. Texts become Python strings a block of candidates at a time, not all at once."""
    if segments.empty or "text" not in segments.columns:
        return np.zeros(0, dtype=np.int64)
    text = segments["text"]
    candidates = np.flatnonzero(
        ((_col(segments, "sentiment") != "positive") & text.notna()).to_numpy(dtype=bool, na_value=False)
    )
    found = [np.zeros(0, dtype=np.int64)]
    for lo in range(0, len(candidates), block):
        rows = candidates[lo : lo + block]
        match = [CHURN_PATTERN.search(t) is not None for t in text.iloc[rows].astype(str).tolist()]
        found.append(rows[np.asarray(match, dtype=bool)])
    return np.concatenate(found)


def _entries(documents: pd.DataFrame, column: str = "stages") -> tuple[np.ndarray, pd.Series]:
    """The documents' lists in ``column`` (``stages``, ``flags``) as one row per entry: each entry's document position and its
    value (missing entries dropped). By Arrow where the column holds lists (no Python list per document);
    cell by cell where it holds JSON text (a CSV output) or mixed cells."""
    if column not in documents.columns or documents.empty:
        return np.zeros(0, dtype=np.int64), pd.Series([], dtype=object)
    try:
        lists = pa.array(documents[column].array, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        lists = None
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    if lists is not None and pa.types.is_list(lists.type):
        parent = np.asarray(pc.list_parent_indices(lists).to_numpy(), dtype=np.int64)
        values = pc.list_flatten(lists).to_pandas()
    else:
        cells = [_as_list(v) for v in documents[column].tolist()]
        parent = np.repeat(np.arange(len(cells), dtype=np.int64), [len(c) for c in cells])
        values = pd.Series([s for c in cells for s in c], dtype=object)
    keep = values.notna().to_numpy()
    return parent[keep], values[keep].reset_index(drop=True)


def _rating_sums(
    documents: pd.DataFrame, entries: tuple[np.ndarray, pd.Series] | None = None
) -> dict[str, tuple[float, int]]:
    """Per stage named in the documents' ``stages``: the sum and count of those documents' ratings
    (a stage named twice in one document counts twice, as an explode would). ``entries``: the
    documents' :func:`_entries`, where the caller has them already."""
    if "rating" not in documents.columns or "stages" not in documents.columns:
        return {}
    rating = pd.to_numeric(documents["rating"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    if np.isnan(rating).all():
        return {}
    parent, values = entries if entries is not None else _entries(documents)
    frame = pd.DataFrame({"stage": values.astype(str).to_numpy(), "rating": rating[parent]}).dropna()
    grouped = frame.groupby("stage")["rating"].agg(["sum", "count"])
    return {str(k): (float(t), int(n)) for k, t, n in zip(grouped.index, grouped["sum"], grouped["count"])}


def _stage_ratings(documents: pd.DataFrame) -> dict[str, float]:
    """Mean rating of the documents that name each stage."""
    return {k: s / n for k, (s, n) in _rating_sums(documents).items() if n}


# -- the digest -------------------------------------------------------------------------------------

#: A verbatim or churn candidate: (score, position in the run's segments, clipped text, then the segment id
#: for a verbatim, or the stage and the doc id for a churn quote).
Candidate = tuple


def _rank_key(kind: str) -> Any:
    if kind == "negative":
        return lambda c: (c[0], c[1])
    return lambda c: (-c[0], c[1])


def _churn_key(c: Candidate) -> tuple[bool, float, int]:
    return (math.isnan(c[0]), 0.0 if math.isnan(c[0]) else c[0], c[1])


def _churn_pool(hits: list[Candidate]) -> list[Candidate]:
    """The churn hits (ranked) that the report could still quote, whatever other chunks hold.

    The report takes hits in order and skips one whose text or doc id a quote already taken has. Past a
    run of ``3 * CHURN_QUOTES`` hits whose texts and doc ids all differ, no hit can be taken: the at
    most ``CHURN_QUOTES`` quotes taken before it block at most two of those hits each, so the others are
    taken first, and the quotes are full."""
    family: set[str] = set()
    size = 0
    for i, c in enumerate(hits):
        keys = {c[2].casefold(), c[4]}
        if not keys & family:
            family |= keys
            size += 1
            if size == 3 * CHURN_QUOTES:
                return hits[: i + 1]
    return hits


@dataclass
class StageDigest:
    """One stage's segments (and the documents that name it)."""

    positive: int = 0
    neutral: int = 0
    negative: int = 0
    segments: int = 0
    score_sum: float = 0.0
    scored: int = 0
    emotions: Counter[str] = field(default_factory=Counter)
    documents: int = 0  # documents naming the stage, once each (distinct doc ids without a documents table)
    mentions: int = 0  # entries naming it in the documents' stage lists
    rating_sum: float = 0.0
    rated: int = 0
    labelled: bool = False  # any segment with a sentiment label
    #: (kind, by label) -> the most extreme candidates, best first
    pools: dict[tuple[str, bool], list[Candidate]] = field(default_factory=dict)

    @property
    def mean_score(self) -> float | None:
        return self.score_sum / self.scored if self.scored else None

    @property
    def mean_rating(self) -> float | None:
        return self.rating_sum / self.rated if self.rated else None

    def merge(self, other: StageDigest, pool: int) -> None:
        for name in (
            "positive",
            "neutral",
            "negative",
            "segments",
            "scored",
            "documents",
            "mentions",
            "rated",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.score_sum += other.score_sum
        self.rating_sum += other.rating_sum
        self.emotions.update(other.emotions)
        self.labelled |= other.labelled
        for key, found in other.pools.items():
            self.pools[key] = sorted(self.pools.get(key, []) + found, key=_rank_key(key[0]))[:pool]


@dataclass
class Drivers:
    """The rated documents, and for each issue (a stage's negative segments, a pain point) the number
    and rating sum of the rated documents that have it."""

    rated: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    stages: list[tuple[int, float]] = field(default_factory=list)
    pain_points: dict[str, tuple[int, float]] = field(default_factory=dict)

    def merge(self, other: Drivers) -> None:
        self.rated += other.rated
        self.total += other.total
        self.low, self.high = min(self.low, other.low), max(self.high, other.high)
        if not self.stages:
            self.stages = list(other.stages)
        elif other.stages:
            self.stages = [(a + c, b + d) for (a, b), (c, d) in zip(self.stages, other.stages)]
        for pid, (n, s) in other.pain_points.items():
            m, t = self.pain_points.get(pid, (0, 0.0))
            self.pain_points[pid] = (m + n, t + s)


def drivers_of(documents: pd.DataFrame, segments: pd.DataFrame, stage_ids: list[str]) -> Drivers | None:
    """Per issue, the rated documents that have it: a negative segment in a stage, a segment in a pain
    point (``segments.pain_point_id``). A doc id seen twice counts its first rated row."""
    if documents.empty or (len(segments) and "doc_id" not in segments.columns):
        return None
    rating = pd.to_numeric(_col(documents, "rating"), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    rated = ~np.isnan(rating)
    rated_ids = _col(documents, "doc_id")[rated]
    values = rating[rated]
    first = positions(rated_ids, rated_ids) == np.arange(len(rated_ids))
    out = Drivers(int(first.sum()), float(values[first].sum()))
    if first.any():
        out.low, out.high = float(values[first].min()), float(values[first].max())
    if segments.empty:  # its rated documents still count towards the mean without an issue
        out.stages = [(0, 0.0)] * len(stage_ids)
        return out
    doc_pos = positions(segments["doc_id"], rated_ids)
    negative = (_col(segments, "sentiment") == "negative").to_numpy(dtype=bool, na_value=False)
    codes = np.where(negative, stage_codes(_col(segments, "stage"), stage_ids), -1)

    def stats(docs: np.ndarray | None) -> tuple[int, float]:
        return (0, 0.0) if docs is None else (len(docs), float(values[docs].sum()))

    out.stages = [stats(d) for d in _documents_of(codes, doc_pos, len(stage_ids))]
    if "pain_point_id" in segments.columns:
        pids = segments["pain_point_id"]
        present = pids.notna().to_numpy()
        ids = pd.unique(pids[present].astype(str))
        pain = positions(pids, pd.Series(ids, dtype=object))
        out.pain_points = {str(p): stats(d) for p, d in zip(ids, _documents_of(pain, doc_pos, len(ids)))}
    return out


def _documents_of(codes: np.ndarray, doc_pos: np.ndarray, k: int) -> list[np.ndarray | None]:
    """For each code 0..k-1 of the rows' ``codes`` (-1: none), the distinct document positions (>= 0) of
    its rows in order of first appearance; None for a code no row has."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(k + 1))
    out: list[np.ndarray | None] = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        found = doc_pos[order[lo:hi]]
        out.append(pd.unique(found[found >= 0]) if hi > lo else None)
    return out


@dataclass
class Digest:
    """The aggregates of a run's documents and segments that the report and the stage summary read.

    The verbatim and churn candidates carry their segment's position among the digest's rows: ties
    between equal scores go to the earlier row, as in the table. :meth:`merge` shifts the positions of
    the rows it adds past its own."""

    stage_ids: list[str]
    verbatims: int = 3
    documents: int = 0
    segments: int = 0
    sentiment: Counter[str] = field(default_factory=Counter)
    unassigned: int = 0
    created: tuple[pd.Timestamp, pd.Timestamp] | None = None  # first and last document date (UTC)
    rating_sum: float = 0.0
    rated: int = 0
    channels: Counter[str] = field(default_factory=Counter)
    languages: Counter[str] = field(default_factory=Counter)
    flags: Counter[str] = field(default_factory=Counter)
    has_text: bool = False
    stages: list[StageDigest] = field(default_factory=list)
    #: the first and last date (UTC, naive) of the documents that have segments
    trend_span: tuple[pd.Timestamp, pd.Timestamp] | None = None
    #: (day since 1970-01-01 UTC, stage code or -1) -> [segments, negative, positive] of the segments
    #: whose document has a date
    trend_counts: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    churn_documents: int = 0
    churn_by_stage: Counter[str] = field(default_factory=Counter)
    churn_pool: list[Candidate] = field(default_factory=list)
    drivers: Drivers | None = None

    def __post_init__(self) -> None:
        if not self.stages:
            self.stages = [StageDigest() for _ in self.stage_ids]

    @property
    def pool(self) -> int:
        return VERBATIM_POOL * max(self.verbatims, 0)

    @classmethod
    def of(
        cls,
        documents: pd.DataFrame,
        segments: pd.DataFrame,
        stage_ids: list[str],
        verbatims: int = 3,
    ) -> Digest:
        """The digest of these rows. With a ``segments.pain_point_id`` column, the drivers too (else
        :meth:`add_drivers` adds them)."""
        d = cls(list(stage_ids), verbatims, len(documents), len(segments))
        d._documents(documents)
        d._segments(documents, segments)
        if "pain_point_id" in segments.columns:
            d.drivers = drivers_of(documents, segments, d.stage_ids)
        return d

    def _documents(self, documents: pd.DataFrame) -> None:
        created = _utc(_col(documents, "created_at"))
        if created.notna().any():
            self.created = (created.min(), created.max())
        ratings = pd.to_numeric(_col(documents, "rating"), errors="coerce")
        self.rating_sum, self.rated = float(ratings.sum()), int(ratings.notna().sum())
        channels = _col(documents, "channel").dropna().astype(str)
        self.channels = Counter(channels[channels != ""].tolist())
        self.languages = Counter(_col(documents, "language").dropna().astype(str).tolist())
        _, flags = _entries(documents, "flags")
        self.flags = Counter({str(f): int(n) for f, n in flags.astype(str).value_counts().items()})
        index = {s: i for i, s in enumerate(self.stage_ids)}
        parent, values = _entries(documents)
        k = len(self.stage_ids)
        code = stage_codes(values.astype(str), self.stage_ids).astype(np.int64)
        mentions = np.bincount(code + 1, minlength=k + 1)[1:]
        once = pd.unique(parent * (k + 1) + (code + 1)) % (k + 1)  # a document naming a stage twice: once
        named = np.bincount(once, minlength=k + 1)[1:]
        for i, sd in enumerate(self.stages):
            sd.mentions, sd.documents = int(mentions[i]), int(named[i])
        for stage, (total, n) in _rating_sums(documents, (parent, values)).items():
            if stage in index:
                self.stages[index[stage]].rating_sum, self.stages[index[stage]].rated = total, n

    def _segments(self, documents: pd.DataFrame, segments: pd.DataFrame) -> None:
        if segments.empty:
            return
        k = len(self.stage_ids)
        stage = _col(segments, "stage")
        codes = (
            stage_codes(stage, self.stage_ids) if "stage" in segments.columns else np.full(len(segments), -1)
        )
        self.unassigned = int(stage.isna().sum())
        labels = _col(segments, "sentiment")
        self.sentiment = Counter({str(s): int(n) for s, n in labels.value_counts().items()})
        kinds = np.full(len(segments), 3)
        for i, s in enumerate(SENTIMENTS):
            kinds[(labels == s).to_numpy(dtype=bool, na_value=False)] = i
        counts = np.bincount((codes + 1) * 4 + kinds, minlength=(k + 1) * 4).reshape(k + 1, 4)[1:]
        scores = _scores(segments)
        has = ~np.isnan(scores)
        sums = np.bincount(codes + 1, weights=np.where(has, scores, 0.0), minlength=k + 1)[1:]
        scored = np.bincount(codes + 1, weights=has, minlength=k + 1)[1:]
        labelled = np.bincount(codes + 1, weights=labels.notna().to_numpy(), minlength=k + 1)[1:]
        emotions = pd.DataFrame({"code": codes, "emotion": _col(segments, "emotion").astype(object)}).dropna()
        by_emotion = (
            emotions.assign(emotion=emotions["emotion"].astype(str)).groupby(["code", "emotion"]).size()
        )
        self.has_text = "text" in segments.columns
        no_documents = documents.empty and "doc_id" in segments.columns
        for code, sd in enumerate(self.stages):
            sd.positive, sd.neutral, sd.negative = (int(n) for n in counts[code, :3])
            sd.segments = int(counts[code].sum())
            sd.score_sum, sd.scored, sd.labelled = float(sums[code]), int(scored[code]), bool(labelled[code])
            if no_documents:
                sd.documents = int(segments["doc_id"][codes == code].nunique())
        for (code, emotion), n in by_emotion.items():
            if code >= 0:
                self.stages[int(code)].emotions[str(emotion)] = int(n)
        if self.has_text and self.verbatims > 0:
            self._verbatims(segments, codes, scores, labels)
        self._trends(documents, segments, codes, labels)
        if self.has_text:
            self._churn(segments)

    def _verbatims(
        self, segments: pd.DataFrame, codes: np.ndarray, scores: np.ndarray, labels: pd.Series
    ) -> None:
        text, ids = segments["text"], _col(segments, "segment_id")
        for code, sd in enumerate(self.stages):
            in_stage = codes == code
            if not in_stage.any():
                continue
            for kind in ("negative", "positive"):
                for by_label in (True, False):
                    rows = _most_extreme(
                        scores, in_stage & _of_sentiment(scores, labels, kind, by_label), kind, self.pool
                    )
                    sd.pools[(kind, by_label)] = [
                        (float(scores[r]), int(r), _clip(text.iloc[r]), _text(ids.iloc[r])) for r in rows
                    ]

    def _trends(
        self, documents: pd.DataFrame, segments: pd.DataFrame, codes: np.ndarray, labels: pd.Series
    ) -> None:
        if "doc_id" not in segments.columns:
            return
        when = _utc(_col(documents, "created_at")).dt.tz_convert(None)
        if not when.notna().any():
            return
        doc_pos = positions(segments["doc_id"], _col(documents, "doc_id"))
        used = np.zeros(len(when), dtype=bool)
        used[doc_pos[doc_pos >= 0]] = True
        seen = when[used].dropna()
        if not len(seen):
            return
        self.trend_span = (seen.min(), seen.max())
        doc_day = when.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]").astype(np.int64)
        dated = np.where(doc_pos >= 0, when.notna().to_numpy()[np.maximum(doc_pos, 0)], False)
        day = doc_day[np.maximum(doc_pos, 0)][dated]
        code = codes[dated]
        neg = (labels == "negative").to_numpy(dtype=bool, na_value=False)[dated]
        pos = (labels == "positive").to_numpy(dtype=bool, na_value=False)[dated]
        width = len(self.stage_ids) + 1
        keys, inverse = np.unique(day * width + (code + 1), return_inverse=True)
        n = np.bincount(inverse, minlength=len(keys))
        negative = np.bincount(inverse, weights=neg, minlength=len(keys))
        positive = np.bincount(inverse, weights=pos, minlength=len(keys))
        days, stage = np.divmod(keys, width)
        for j in range(len(keys)):
            self.trend_counts[(int(days[j]), int(stage[j]) - 1)] = [
                int(n[j]),
                int(negative[j]),
                int(positive[j]),
            ]

    def _churn(self, segments: pd.DataFrame) -> None:
        rows = _churn_rows(segments)
        if not len(rows):
            return
        hits = segments.iloc[rows]
        docs = _col(hits, "doc_id")
        self.churn_documents = int(docs.nunique())
        stage = _col(hits, "stage").astype(object).fillna("no stage").astype(str)
        per_stage = (
            pd.DataFrame({"stage": stage.to_numpy(), "doc": docs.to_numpy()})
            .groupby("stage")["doc"]
            .nunique()
        )
        self.churn_by_stage = Counter({str(k): int(v) for k, v in per_stage.items()})
        scores = _scores(hits)
        found = [
            (float(s), int(r), _clip(t), _text(st), str(doc))
            for s, r, t, st, doc in zip(scores, rows, hits["text"], _col(hits, "stage"), docs)
        ]
        self.churn_pool = _churn_pool(sorted(found, key=_churn_key))

    def merge(self, other: Digest) -> Digest:
        """Add the digest of the rows that follow this one's (the next chunk's); returns self."""
        if other.stage_ids != self.stage_ids:
            raise ValueError("digests of different stages")
        shift = self.segments  # the other's rows come after this one's

        def moved(pool: list[Candidate]) -> list[Candidate]:
            return [(c[0], c[1] + shift, *c[2:]) for c in pool]

        self.documents += other.documents
        self.segments += other.segments
        self.sentiment.update(other.sentiment)
        self.unassigned += other.unassigned
        self.created = _span(self.created, other.created)
        self.rating_sum += other.rating_sum
        self.rated += other.rated
        for name in ("channels", "languages", "flags", "churn_by_stage"):
            getattr(self, name).update(getattr(other, name))
        self.has_text |= other.has_text
        for mine, theirs in zip(self.stages, other.stages):
            theirs.pools = {key: moved(pool) for key, pool in theirs.pools.items()}
            mine.merge(theirs, self.pool)
        self.trend_span = _span(self.trend_span, other.trend_span)
        for key, (n, neg, pos) in other.trend_counts.items():
            have = self.trend_counts.setdefault(key, [0, 0, 0])
            have[0] += n
            have[1] += neg
            have[2] += pos
        self.churn_documents += other.churn_documents
        if other.churn_pool:
            self.churn_pool = _churn_pool(sorted(self.churn_pool + moved(other.churn_pool), key=_churn_key))
        self.add_drivers(other.drivers)
        return self

    def add_drivers(self, drivers: Drivers | None) -> None:
        if drivers is None:
            return
        if self.drivers is None:
            self.drivers = Drivers()
        self.drivers.merge(drivers)

    # -- what the readers take ------------------------------------------------------------------------

    def top_emotions(self, code: int, k: int = 3) -> list[tuple[str, int]]:
        """A stage's most frequent non-neutral emotions; ties in the schema's emotion order."""
        order = {e: i for i, e in enumerate(CX_EMOTIONS)}
        counts = [(e, n) for e, n in self.stages[code].emotions.items() if e not in ("neutral", "")]
        ranked = sorted(counts, key=lambda kv: (-kv[1], order.get(kv[0], len(order)), kv[0]))
        return ranked[:k]

    def verbatims_of(self, code: int, kind: str) -> list[tuple[str, float, str]]:
        """Up to ``verbatims`` distinct texts of one sentiment in a stage, the most extreme first: (text,
        score, segment id). Chosen by label, or by the score's sign where no segment has a label."""
        sd = self.stages[code]
        out: list[tuple[str, float, str]] = []
        seen: set[str] = set()
        for score, _order, text, sid in sd.pools.get((kind, sd.labelled), []):
            if text and text.casefold() not in seen:
                seen.add(text.casefold())
                out.append((text, score, sid))
            if len(out) == self.verbatims:
                break
        return out

    def churn_quotes(self) -> list[tuple[str, str, float | None]]:
        """The churn-risk quotes: the most negative first, each text and each document once."""
        quotes: list[tuple[str, str, float | None]] = []
        seen: set[str] = set()
        for score, _order, text, stage, doc in self.churn_pool:
            if text.casefold() in seen or doc in seen:
                continue
            seen.update({text.casefold(), doc})
            quotes.append((text, stage, _num(score)))
            if len(quotes) == CHURN_QUOTES:
                break
        return quotes


def _span(a: tuple[Any, Any] | None, b: tuple[Any, Any] | None) -> tuple[Any, Any] | None:
    if a is None or b is None:
        return a if b is None else b
    return (min(a[0], b[0]), max(a[1], b[1]))
