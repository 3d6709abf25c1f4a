"""Pain points: cluster the segments of each stage, label the clusters, match them to an earlier run.

Per stage (its negative segments, or all of them with ``cluster.scope: all``):

1. normalised embeddings; at most ``cluster.fit_sample`` of them (a seeded sample) are fitted;
2. PCA to ``cluster.reduce_dims`` dimensions (eigendecomposition of the covariance: deterministic);
3. HDBSCAN (``cluster.backend``: the ``hdbscan`` package or scikit-learn's), leaf selection, with a
   minimum cluster size that grows with the number of points fitted;
4. every segment (fitted or not) joins the nearest cluster centre when their cosine similarity is at
   least ``cluster.assign_threshold``; ``cluster.refine_iterations`` nearest-centre passes then move
   the centres to the mean of their members (spherical k-means steps seeded by HDBSCAN). What is left
   is the visible ``<stage>-other`` group.

Steps 4 reads the embeddings in chunks, so a float16 memory-mapped file of a million segments
(:func:`write_embeddings`, :func:`open_embeddings`) clusters in a few hundred MB. The choices and their
measurements (banking77, against BERTopic) are in ``benchmarks/README.md``.

Labels come from keyphrases (noun chunks and verb phrases collected by the segment step) ranked by
class-based TF-IDF against the stage's other clusters and its non-negative segments, so that generic
words of the stage ("box", "order") do not win. Each label is unique within the run.

With a baseline (the output folder of an earlier run, :func:`load_baseline`), pain points are matched
to the earlier ones by the cosine similarity of their centres (stored in the ``centroid`` column), keep
their ids and labels, and get a ``status``: new, growing, shrinking, stable, or gone (a row with size 0
for each earlier pain point that has no match).

With ``cluster.workers`` > 0, the stages are clustered (steps 1-4) in that many worker processes at
once while this process labels them in journey order as they finish: labels depend on the stages before
(each is unique in the run), clustering does not. The workers map the embeddings file themselves (an
array in memory is first written to a temporary file, its rows in scope only); the result is the same
as with ``workers: 0``.

Everything is deterministic for a given input and seed. ``cluster_segments`` works on its own with
precomputed embeddings (a NumPy array or a memory map).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import mmap
import re
import sys
import tempfile
from array import array
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import ClusterConfig
from .errors import Errors, InputError
from .memory import trim_heap
from .schema import CX_EMOTIONS, OTHER_PAIN_POINT, list_columns, positions, stage_codes
from .segment import phrase_key, statements

logger = logging.getLogger(__name__)

REQUIRES = {"segments": ["stage", "sentiment", "sentiment_score", "emotion", "phrases"]}
ASSIGNS = {"segments": ["pain_point_id"]}
PAIN_POINT_COLUMNS = [
    "pain_point_id",
    "stage",
    "label",
    "keyphrases",
    "size",
    "share_of_stage_negative",
    "n_documents",
    "mean_sentiment_score",
    "top_emotions",
    "first_seen",
    "last_seen",
    "example_segment_ids",
    "example_quotes",
    "status",
    "baseline_size",
    "weekly_counts",
    "trend",
    "centroid",
]
CHUNK = 65_536  # rows per chunk when reading embeddings
_CANDIDATES = 64  # quote candidates read at a time


def auto_min_cluster_size(n: int) -> int:
    """About sqrt(n)/4, at least 3: 100 points -> 3, 1,000 -> 8, 10,000 -> 25."""
    return max(3, int(round(math.sqrt(n) / 4)))


def auto_min_samples(min_cluster_size: int) -> int:
    return max(2, min_cluster_size // 10)


def normalize(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32."""
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------------- embeddings on disk


def write_embeddings(path: str | Path, chunks: Iterable[np.ndarray], n: int, dim: int) -> np.memmap:
    """Stream ``n`` embeddings (in chunks) into a float16 ``.npy`` file; returns it memory-mapped."""
    out = np.lib.format.open_memmap(Path(path), mode="w+", dtype=np.float16, shape=(n, dim))
    i = 0
    for chunk in chunks:
        out[i : i + len(chunk)] = normalize(chunk).astype(np.float16)
        out.flush()
        release(out, (i, i + len(chunk)))
        i += len(chunk)
    if i != n:
        raise ValueError(f"write_embeddings: got {i} rows, expected {n}")
    out.flush()
    return out


def take_rows(embeddings: np.ndarray | Rows, idx: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """``embeddings[idx]`` (``idx`` sorted), read a chunk of rows at a time. When the array is a memory
    map, the pages read are handed back to the kernel after each chunk (they stay in the page cache), so
    picking rows from a file of millions of embeddings does not grow the process's resident memory."""
    mapped = _mapping(embeddings)
    if mapped is None:
        return np.asarray(embeddings[idx])
    out = np.empty((len(idx), *embeddings.shape[1:]), dtype=embeddings.dtype)
    bounds = np.searchsorted(idx, np.arange(0, len(embeddings) + chunk, chunk))
    for block in np.flatnonzero(bounds[1:] > bounds[:-1]):  # the blocks of rows that idx reads from
        lo, hi = bounds[block], bounds[block + 1]
        out[lo:hi] = embeddings[idx[lo:hi]]
        release(embeddings, (int(block) * chunk, min((int(block) + 1) * chunk, len(embeddings))))
    return out


def _mapping(a: Any) -> mmap.mmap | None:
    """The shared ``mmap`` behind an array (a ``np.memmap`` or a view of one), or None. A copy-on-write
    map (mode "c") is never returned: dropping its pages would drop the changes made to them."""
    while isinstance(a, np.ndarray):
        mm = getattr(a, "_mmap", None) if isinstance(a, np.memmap) else None
        if isinstance(mm, mmap.mmap):
            return None if getattr(a, "mode", None) == "c" else mm
        a = a.base
    return None


def release(embeddings: np.ndarray | Rows, rows: tuple[int, int] | None = None) -> None:
    """Drop the pages of a memory-mapped array (or of its ``rows`` range, start and end) from this
    process's resident set: clean pages stay in the page cache, and the next read maps them again.
    Nothing happens for an array in memory. Only the range is walked, so releasing a block after each
    read costs the block, not the whole file (a million segments' file is 2.3 GB)."""
    mm = _mapping(embeddings)
    if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    with contextlib.suppress(OSError, ValueError):
        if rows is None or not isinstance(embeddings, np.ndarray):
            mm.madvise(mmap.MADV_DONTNEED)
            return
        base = np.frombuffer(mm, dtype=np.uint8).__array_interface__["data"][0]
        first = embeddings.__array_interface__["data"][0] - base + rows[0] * embeddings.strides[0]
        start = first - first % mmap.PAGESIZE
        end = min(first + (rows[1] - rows[0]) * embeddings.strides[0], len(mm))
        if end > start:
            mm.madvise(mmap.MADV_DONTNEED, start, end - start)


def open_embeddings(path: str | Path) -> np.ndarray:
    """A ``.npy`` file of embeddings, memory-mapped read-only (nothing is loaded until used)."""
    return np.load(Path(path), mmap_mode="r")


class Rows:
    """Rows ``idx`` (sorted) of ``embeddings``, read when indexed and returned normalised as float32.

    What the pain-point step hands :func:`cluster_segments` and reads itself for one stage or one
    cluster: a slice or an index array of it is read from ``embeddings`` then (a memory map's pages are
    released after each chunk, :func:`take_rows`), so a stage of a million segments is never held whole.
    """

    def __init__(self, embeddings: np.ndarray, idx: np.ndarray) -> None:
        self.embeddings = embeddings
        self.idx = np.asarray(idx, dtype=np.int64)
        self.shape = (len(self.idx), int(embeddings.shape[1]))
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        return normalize(take_rows(self.embeddings, self.idx[key]))

    def sum(self) -> np.ndarray:
        """The sum of the rows (float64), a chunk at a time."""
        total = np.zeros(self.shape[1], dtype=np.float64)
        for lo in range(0, len(self), CHUNK):
            total += self[lo : lo + CHUNK].sum(0, dtype=np.float64)
        return total


# ------------------------------------------------------------------------------------------ clustering


def _pca(S: np.ndarray, dims: int) -> np.ndarray:
    """PCA by eigendecomposition of the covariance (d x d): fast for n >> d, deterministic, signs fixed."""
    C = S.astype(np.float64) - S.mean(0, dtype=np.float64)
    _, vectors = np.linalg.eigh(C.T @ C)
    V = vectors[:, ::-1][:, :dims]
    V *= np.sign(V[np.abs(V).argmax(0), np.arange(dims)])  # largest component positive, as scikit-learn does
    return C @ V


def _hdbscan(Z: np.ndarray, mcs: int, ms: int, selection: str, backend: str) -> np.ndarray:
    if backend == "sklearn":
        from sklearn.cluster import HDBSCAN

        extra = {"copy": True} if "copy" in HDBSCAN().get_params() else {}
        model = HDBSCAN(min_cluster_size=mcs, min_samples=ms, cluster_selection_method=selection, **extra)
    else:
        import hdbscan

        model = hdbscan.HDBSCAN(min_cluster_size=mcs, min_samples=ms, cluster_selection_method=selection)
    return np.asarray(model.fit_predict(Z), dtype=np.int64)


def _nearest_pass(
    embeddings: np.ndarray | Rows,
    centres: np.ndarray,
    threshold: float,
    keep: np.ndarray | None = None,
    chunk: int = CHUNK,
) -> tuple[np.ndarray, np.ndarray]:
    """Label every row with its nearest centre (or -1 below ``threshold``); returns labels and the new centres.

    Where ``keep`` (a label per row, -1 = none) is given, rows with a label keep it.
    """
    from scipy.sparse import csr_matrix

    n, k = len(embeddings), len(centres)
    labels = np.full(n, -1, dtype=np.int64)
    sums = np.zeros((k, centres.shape[1]), dtype=np.float64)
    for i in range(0, n, chunk):
        X = normalize(embeddings[i : i + chunk])
        sims = X @ centres.T
        best = sims.argmax(1)
        lab = np.where(sims[np.arange(len(X)), best] >= threshold, best, -1)
        if keep is not None:
            kept = keep[i : i + chunk]
            lab = np.where(kept >= 0, kept, lab)
        labels[i : i + len(X)] = lab
        m = lab >= 0
        onehot = csr_matrix(
            (np.ones(int(m.sum()), dtype=np.float32), (lab[m], np.flatnonzero(m))), shape=(k, len(X))
        )
        sums += onehot @ X
        release(embeddings, (i, i + len(X)))
    return labels, sums


def _centres_from_sums(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norms = np.linalg.norm(sums, axis=1)
    alive = norms > 0
    return (sums[alive] / norms[alive, None]).astype(np.float32), alive


def cluster_segments(
    embeddings: np.ndarray | Rows, config: ClusterConfig | None = None, seed: int = 0
) -> np.ndarray:
    """Cluster labels (0..k-1, largest first) or -1 for the ``other`` group, for one set of embeddings.

    ``embeddings``: any (n, d) array, float16 or float32, in memory or memory-mapped; rows need not be
    normalised. Only ``cluster.fit_sample`` rows are held in memory at once, plus one chunk.
    """
    from threadpoolctl import threadpool_limits

    config = config or ClusterConfig()
    # One BLAS thread: the eigendecomposition, the projection and the similarity products differ in their
    # last bits with the number of threads, and HDBSCAN and the nearest-centre threshold turn such bits into
    # other clusters where distances tie (repeated texts). So a run's pain points are the same on 2 cores
    # and on 16, and with ``cluster.workers``. The products are small (d = 384).
    with threadpool_limits(1):
        return _cluster_segments(embeddings, config, seed)


def _cluster_segments(embeddings: np.ndarray | Rows, config: ClusterConfig, seed: int) -> np.ndarray:
    n = len(embeddings)
    if n < config.min_segments:
        return np.full(n, -1, dtype=np.int64)
    if n > config.fit_sample:
        fit_idx = np.sort(np.random.default_rng(seed).choice(n, config.fit_sample, replace=False))
        S = normalize(take_rows(embeddings, fit_idx))
    else:
        fit_idx = np.arange(n)
        S = normalize(embeddings[:])
    dims = min(config.reduce_dims, len(S) - 1, S.shape[1])
    Z = _pca(S, dims) if dims < S.shape[1] else S
    mcs = config.min_cluster_size or auto_min_cluster_size(len(S))
    ms = config.min_samples or auto_min_samples(mcs)
    fit_labels = _hdbscan(Z.astype(np.float64), mcs, ms, config.selection, config.backend)
    k = int(fit_labels.max()) + 1
    if k == 0:
        return np.full(n, -1, dtype=np.int64)
    sums = np.zeros((k, S.shape[1]), dtype=np.float64)
    np.add.at(sums, fit_labels[fit_labels >= 0], S[fit_labels >= 0])
    centres, _ = _centres_from_sums(sums)
    keep = np.full(n, -1, dtype=np.int64)
    keep[fit_idx] = fit_labels
    del S, Z
    # Pass 0: HDBSCAN members keep their cluster, the rest join the nearest centre; then refine.
    labels, sums = _nearest_pass(embeddings, centres, config.assign_threshold, keep)
    for _ in range(config.refine_iterations):
        centres, _ = _centres_from_sums(sums)
        labels, sums = _nearest_pass(embeddings, centres, config.assign_threshold)
    return _renumber(labels)


# ------------------------------------------------------------------------------ stages in worker processes

# Where a worker finds the embeddings: the file, its dtype, the byte offset of row 0 and the shape.
_Source = tuple[str, str, int, tuple[int, int]]


def _source(embeddings: np.ndarray) -> _Source | None:
    """Where the rows of a memory-mapped array (or of a view of one) are in its file, or None: an array
    in memory, a copy-on-write map (its changes are not in the file) or rows not contiguous."""
    mm = _mapping(embeddings)
    if mm is None or not embeddings.flags.c_contiguous:
        return None
    owner: Any = embeddings  # the np.memmap that knows the file
    while isinstance(owner, np.ndarray) and not isinstance(owner, np.memmap):
        owner = owner.base
    if not isinstance(owner, np.memmap) or owner.filename is None:
        return None
    base = np.frombuffer(mm, dtype=np.uint8).__array_interface__["data"][0]
    start = owner.offset - owner.offset % mmap.ALLOCATIONGRANULARITY  # where np.memmap's map begins
    offset = start + embeddings.__array_interface__["data"][0] - base
    n, dim = embeddings.shape
    return str(owner.filename), embeddings.dtype.str, offset, (int(n), int(dim))


def _cluster_rows(source: _Source, idx: np.ndarray, config: ClusterConfig, seed: int) -> np.ndarray:
    """In a worker: :func:`cluster_segments` of rows ``idx`` of the embeddings file."""
    path, dtype, offset, shape = source
    embeddings = np.memmap(path, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape)
    return cluster_segments(Rows(embeddings, idx), config, seed)


def _cluster_stages(
    embeddings: np.ndarray,
    rows_all: np.ndarray,
    codes: np.ndarray,
    n_stages: int,
    config: ClusterConfig,
    seed: int,
    stack: contextlib.ExitStack,
) -> dict[int, Future[np.ndarray]]:
    """Start :func:`cluster_segments` of each stage with rows (``rows_all``, the rows in scope, of stage
    ``codes``) in ``cluster.workers`` processes; returns a future of its labels per stage code. The pool
    (and the temporary file an array in memory is written to) is closed by ``stack``."""
    from . import processes

    sizes = np.bincount(codes, minlength=n_stages)
    n_stages_with_rows = int((sizes > 0).sum())
    if n_stages_with_rows < 2:  # nothing to overlap: the stage is clustered here when it is labelled
        return {}
    source = _source(embeddings)
    positions_of = rows_all
    if source is None:  # the rows in scope, a chunk at a time, to a file that the workers map
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cxnlp-cluster-")))
        shape = (len(rows_all), embeddings.shape[1])
        out = np.lib.format.open_memmap(folder / "rows.npy", mode="w+", dtype=embeddings.dtype, shape=shape)
        for lo in range(0, len(rows_all), CHUNK):
            hi = min(lo + CHUNK, len(rows_all))
            out[lo:hi] = take_rows(embeddings, rows_all[lo:hi])
            out.flush()
            release(out, (lo, hi))
        source, positions_of = _source(out), np.arange(len(rows_all))
        del out
        assert source is not None
    n_workers = min(config.workers, n_stages_with_rows)
    # never a fork of this process, which may hold torch's threads (cxnlp.processes)
    pool = processes.pool(n_workers)
    stack.callback(pool.shutdown, wait=True, cancel_futures=True)
    return {
        code: pool.submit(_cluster_rows, source, positions_of[codes == code], config, seed)
        for code in range(n_stages)
        if sizes[code]
    }


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Largest cluster first, ties by first member (deterministic); -1 stays -1."""
    present, first = np.unique(labels, return_index=True)
    sizes = (
        np.bincount(labels[labels >= 0], minlength=int(labels.max()) + 1)
        if (labels >= 0).any()
        else np.zeros(0, int)
    )
    clusters = [(int(-sizes[c]), int(f), int(c)) for c, f in zip(present, first) if c >= 0]
    mapping = np.full(int(labels.max()) + 2, -1, dtype=np.int64)
    for new, (_, _, old) in enumerate(sorted(clusters)):
        mapping[old] = new
    return mapping[labels]  # labels == -1 index the last slot, which holds -1


# ---------------------------------------------------------------------------------------------- labels


def ctfidf(class_phrases: list[list[str] | Counter[str]]) -> list[dict[str, float]]:
    """Class-based TF-IDF (as in BERTopic): tf within the class x log(1 + mean class size / frequency).
    A class is its phrases, or their counts."""
    counts = [p if isinstance(p, Counter) else Counter(p) for p in class_phrases]
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    avg = max(sum(sum(c.values()) for c in counts) / max(len(counts), 1), 1.0)
    out = []
    for c in counts:
        n = max(sum(c.values()), 1)
        out.append({t: (k / n) * math.log(1 + avg / total[t]) for t, k in c.items()})
    return out


LABEL_CANDIDATES = 40  # best-ranked phrase keys of a cluster considered for its label
LABEL_WORDS = (2, 5)  # labels of this many words are preferred over single nouns and long clauses


def _weight(words: int) -> float:
    """How readable a phrase of ``words`` words is as a label: 2-4 words best, one word or 6+ worst."""
    return 1.5 if 2 <= words <= 4 else 1.1 if words == 5 else 1.0 if words == 1 else 0.8


def _rank(scores: dict[str, float], df: Counter, size: int, forms: dict[str, str]) -> list[str]:
    """Phrase keys by c-TF-IDF, favouring those that recur in the cluster (in two or more segments, and
    at least 10% of them) and that read as a label (``_weight`` of the shown form); ties by key."""

    def key(t: str) -> tuple[float, str]:
        recurring = df[t] >= max(2, 0.1 * size)
        return (-(scores[t] * (1.0 if recurring else 0.2) * _weight(len(t.split()))), t)

    return sorted(scores, key=key)


def _coverage(terms: Iterable[str], member_keys: list[set[str]]) -> dict[str, int]:
    """Segments of the cluster that say each phrase key or a longer one with all its words: "ice packs had
    melted" is also covered by "the ice packs have been half melted"."""
    # Each distinct set of word sets once, with the number of segments that hold it (segments often say
    # the same few phrases); each term's words split once.
    held = Counter(frozenset(frozenset(k.split()) for k in keys) for keys in member_keys)
    out = {}
    for t in terms:
        words = frozenset(t.split())
        out[t] = sum(n for seg, n in held.items() if any(words <= k for k in seg))
    return out


def _bare_noun(t: str, statements: set[str], index: dict[str, set[str]]) -> bool:
    """A phrase that names a thing without saying what is wrong with it: a single word, or two words
    that are not a statement in the cluster but part of one somewhere in the run (``index``: word ->
    statement keys): "discount code" in "did not accept discount code", "arrived late" in "box arrived
    late". Noun compounds are short: "charged for a week" says something."""
    words = t.split()
    if len(words) == 1:
        return True
    if t in statements or len(words) > 2:
        return False
    holders = set.intersection(*(index.get(w, set()) for w in words))
    return any(len(h.split()) > len(words) for h in holders)


def _statement_index(keys: Iterable[str]) -> dict[str, set[str]]:
    index: dict[str, set[str]] = {}
    for k in keys:
        for w in k.split():
            index.setdefault(w, set()).add(k)
    return index


def _pick_label(
    ranked: list[str],
    cov: dict[str, int],
    size: int,
    forms: dict[str, str],
    statements: set[str],
    used_keys: set[str],
    used_labels: set[str],
    index: dict[str, set[str]],
) -> str | None:
    """The label key: a phrase of 2-5 words with two content words or more, preferably a problem
    statement (a noun with a modifier or predicate, see :func:`cxnlp.segment.statements`).

    1. The best-ranked such phrase that covers the cluster about as well as the best of them (at least
       a quarter of its segments, two and 10% of the cluster at least).
    2. When it only names a thing (:func:`_bare_noun`), the best-ranked statement that covers at least
       40% as many segments, one that shares a word with it first: "code failed at checkout" over
       "discount code", "arriving after the delivery window" over "delivery window".
    3. When nothing covers enough, the best-ranked phrase that is not a bare noun ("box arrived late
       twice" rather than "box").
    4. Extended to a longer statement that contains its words and covers 40% as many segments ("ice
       packs" -> "ice packs had melted", "take longer" -> "recipes take longer").

    Keys used by other pain points of the run are skipped; the same key in another wording is taken
    only where no unused phrase qualifies, and a single word only where nothing else exists."""
    free = [t for t in ranked if t not in used_keys and forms[t] not in used_labels]
    reworded = [t for t in ranked if t in used_keys and forms[t] not in used_labels]
    if not free and not reworded:
        return None

    def c(t: str) -> int:
        return cov.get(t, 0)

    def readable(t: str) -> bool:
        return len(t.split()) >= LABEL_WORDS[0] and len(forms[t].split()) <= LABEL_WORDS[1]

    cands = [t for t in free if readable(t)]
    said = [t for t in cands if t in statements]
    alt = [t for t in reworded if readable(t) and t in statements]
    top = max((c(t) for t in cands), default=0)
    floor = max(2, math.ceil(0.1 * size), math.ceil(0.25 * top))
    label = next((t for t in cands if c(t) >= floor), None)
    if label is not None and _bare_noun(label, statements, index):
        enough = max(2, 0.4 * c(label))
        better = [t for t in [*said, *alt] if c(t) >= enough]
        related = [t for t in better if set(t.split()) & set(label.split())]
        label = next(iter([*related, *better]), label)
    if label is None:
        telling = [t for t in cands if not _bare_noun(t, statements, index)]
        label = next(iter([*telling, *alt, *cands, *free, *reworded]))
    while True:
        words = set(label.split())
        least = 0.4 * c(label) if _bare_noun(label, statements, index) else max(2, 0.4 * c(label))
        longer = [t for t in said if words < set(t.split()) and c(t) >= least]
        if not longer:
            return label
        label = max(longer, key=c)  # ties: the better ranked


def _forms(phrases: Iterable[str]) -> dict[str, str]:
    """Phrase key -> the form shown: the most frequent surface form, then the shortest, then alphabetical."""
    counts = Counter(phrases)
    best: dict[str, tuple[int, int, str]] = {}
    for p, k in counts.items():
        cand = (-k, len(p), p)
        key = phrase_key(p)
        if key not in best or cand < best[key]:
            best[key] = cand
    return {key: c[2] for key, c in best.items()}


_WORD = re.compile(r"[a-z0-9']+")


def _near_duplicate(a: str, b: str) -> bool:
    """Same words up to order and punctuation, or one nearly contained in the other (Jaccard >= 0.7)."""
    x, y = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
    return bool(x and y) and len(x & y) / len(x | y) >= 0.7


def _quotes(
    X: np.ndarray | Rows, centre: np.ndarray, texts: list[str], ids: list[str], n: int
) -> tuple[list[str], list[str]]:
    """The ``n`` segments (rows of ``X``, ``texts`` and ``ids``) nearest the centre, skipping
    near-duplicates of those already chosen (cosine above 0.9 or the same words, see
    :func:`_near_duplicate`). ``X`` is read a chunk of rows at a time, and then only the candidates'."""
    sims = np.concatenate([X[lo : lo + CHUNK] @ centre for lo in range(0, len(ids), CHUNK)] or [np.zeros(0)])
    order = sorted(range(len(ids)), key=lambda i: (-round(float(sims[i]), 6), ids[i]))
    chosen: list[int] = []
    vectors: dict[int, np.ndarray] = {}
    for start in range(0, len(order), _CANDIDATES):
        block = sorted(order[start : start + _CANDIDATES])
        vectors = {k: vectors[k] for k in chosen}
        vectors.update(zip(block, X[np.asarray(block, dtype=np.int64)]))
        for i in order[start : start + _CANDIDATES]:
            if any(
                float(vectors[i] @ vectors[k]) > 0.9 or _near_duplicate(texts[i], texts[k]) for k in chosen
            ):
                continue
            chosen.append(i)
            if len(chosen) == n:
                return [ids[i] for i in chosen], [texts[i] for i in chosen]
    return [ids[i] for i in chosen], [texts[i] for i in chosen]


def _weekly(weeks: np.ndarray, n_weeks: int) -> tuple[list[int] | None, float | None]:
    """Segment counts per week (Monday-based, UTC) over the run's span, and their relative trend.

    The trend is the least-squares slope of the weekly counts divided by their mean: +0.1 means
    about +10% a week. None without timestamps; the trend needs at least 3 weeks.
    """
    if n_weeks == 0:
        return None, None
    counts = np.bincount(weeks[weeks >= 0], minlength=n_weeks)
    if n_weeks < 3 or counts.sum() == 0:
        return counts.tolist(), None
    t = np.arange(n_weeks, dtype=np.float64)
    slope = float(np.polyfit(t, counts.astype(np.float64), 1)[0])
    return counts.tolist(), round(slope / counts.mean(), 4)


class _KeyLists:
    """A list of key tuples, one per segment, held as ids into one list of distinct keys (a corpus
    repeats the same phrases): a few bytes per key instead of a tuple (or a set) per segment."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._names: list[str] = []
        self._flat = array("i")
        self._ends = array("q")

    def append(self, keys: Iterable[str]) -> None:
        for k in keys:
            i = self._ids.get(k)
            if i is None:
                i = self._ids[k] = len(self._names)
                self._names.append(k)
            self._flat.append(i)
        self._ends.append(len(self._flat))

    def __getitem__(self, i: int) -> tuple[str, ...]:
        lo = self._ends[i - 1] if i else 0
        names = self._names
        return tuple(names[k] for k in self._flat[lo : self._ends[i]])


@dataclass
class _Group:
    stage: str
    number: int | None  # None for the other group
    index: np.ndarray


@dataclass
class Baseline:
    """The pain points of an earlier run and the number of segments it analysed."""

    pain_points: pd.DataFrame
    n_segments: int
    path: str = ""
    #: The earlier run's ``run.json`` "models" block ({} when unknown): which space its centroids are in.
    models: dict = field(default_factory=dict)
    #: Whether its centroids can be compared with this run's (:func:`same_space`); when not, pain points
    #: are matched on keyphrases and labels, as for a baseline without centroids.
    centres: bool = True


def embedding_space(models: dict) -> tuple | None:
    """What a run's pain-point centroids depend on, from its ``run.json`` "models" block: the heads (whose
    version names the encoder they were trained with), the encoder and its cluster map. None if unknown."""
    heads, encoder = models.get("heads") or {}, models.get("encoder") or {}
    if not heads and not encoder:
        return None
    return heads.get("name"), heads.get("version"), encoder.get("name"), encoder.get("cluster_map")


def same_space(models: dict, other: dict) -> bool:
    """False only when both runs say which models they used and these differ (a model upgrade): their
    centroids are then in different embedding spaces, and a cosine between them means nothing."""
    a, b = embedding_space(models), embedding_space(other)
    return a is None or b is None or a == b


def text_needed(segments: pd.DataFrame, stage_ids: list[str], config: ClusterConfig) -> pd.Series:
    """Which segments' text :func:`find_pain_points` reads (for example quotes): the ones it clusters.

    Judged per segment, so the batch runner can keep only these texts in memory for the whole corpus."""
    if not config.enabled or segments.empty:
        return pd.Series(False, index=segments.index)
    in_stage = segments["stage"].isin(stage_ids)
    return in_stage & (segments["sentiment"] == "negative") if config.scope == "negative" else in_stage


@dataclass
class PhraseStats:
    """What :func:`find_pain_points` reads of the phrases of the segments it does not cluster: each
    stage's count of phrase keys (the background its clusters' labels are ranked against) and the
    statement keys of the whole run. Counts and sets add up, so a batch run gathers them a chunk at a
    time (:func:`trim_phrases`) and holds phrases only for the segments clustered."""

    background: dict[str, Counter[str]] = field(default_factory=dict)
    said: set[str] = field(default_factory=set)

    def add(self, phrases: list[str], stage: str | None) -> None:
        """One segment not clustered: its statements, and its phrase keys under its stage (if any)."""
        self.said.update(sys.intern(phrase_key(p)) for p in statements(phrases))
        if stage is not None:
            self.background.setdefault(stage, Counter()).update({phrase_key(p) for p in phrases})

    def merge(self, other: PhraseStats) -> None:
        self.said |= other.said
        for stage, counts in other.background.items():
            self.background.setdefault(stage, Counter()).update(counts)


def _phrase_list(cell: Any) -> list[str]:
    """A segment's phrases cell as a list: None (or pd.NA, from Arrow) where trim_phrases dropped them."""
    return [] if cell is None or cell is pd.NA else list(cell)


def trim_phrases(
    segments: pd.DataFrame, stage_ids: list[str], config: ClusterConfig, stats: PhraseStats
) -> None:
    """Add to ``stats`` what :func:`find_pain_points` reads of the phrases of the segments it will not
    cluster, and drop those phrases (None) from ``segments``: find_pain_points given ``stats`` then
    finds what it finds with every phrase in place."""
    if segments.empty or "phrases" not in segments.columns:
        return
    keep = text_needed(segments, stage_ids, config).to_numpy()
    if config.enabled:
        codes = stage_codes(segments["stage"], stage_ids)
        for i, cell in enumerate(segments["phrases"].tolist()):
            if not keep[i]:
                stats.add(_phrase_list(cell), stage_ids[codes[i]] if codes[i] >= 0 else None)
    segments["phrases"] = segments["phrases"].where(keep, None)


def _clustered_dates(
    segments: pd.DataFrame,
    documents: pd.DataFrame,
    rows: np.ndarray,
    span: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> tuple[pd.Series, np.ndarray, int]:
    """For the segments at ``rows``: their document's date (a doc id seen twice: its last row, as a dict
    would do) and week (Monday-based, UTC), weeks counted from the first week of any segment's document;
    and the number of weeks from that one to the last. Only the document positions of all segments are
    made, and dropped before returning. ``span``: the first and last date of the run's documents that
    have segments, where ``segments`` are only some of the run's (a batch run's clustered ones)."""
    last = positions(segments["doc_id"], documents["doc_id"].iloc[::-1])
    doc_pos = np.where(last >= 0, len(documents) - 1 - last, -1)
    del last
    when = pd.to_datetime(documents["created_at"], utc=True, errors="coerce")
    if span is None:
        used = np.zeros(len(documents), dtype=bool)
        used[doc_pos[doc_pos >= 0]] = True
        dates = when[used].dropna()
        span = (dates.min(), dates.max()) if len(dates) else None
        del used
    created = pd.Series(when.array.take(doc_pos[rows], allow_fill=True))
    del doc_pos
    weeks = np.full(len(rows), -1, dtype=np.int64)
    if span is None:
        return created, weeks, 0
    first, end = (_naive(ts).to_period("W-SUN").start_time for ts in span)
    week_start = created.dt.tz_localize(None).dt.to_period("W-SUN").dt.start_time
    weeks = np.where(week_start.notna(), ((week_start - first).dt.days // 7).fillna(-1), -1).astype(np.int64)
    return created, weeks, (end - first).days // 7 + 1


def _naive(ts: pd.Timestamp) -> pd.Timestamp:
    return ts.tz_convert(None) if ts.tzinfo is not None else ts


def find_pain_points(
    segments: pd.DataFrame,
    embeddings: np.ndarray,
    documents: pd.DataFrame,
    stage_ids: list[str],
    config: ClusterConfig,
    seed: int = 0,
    baseline: Baseline | None = None,
    phrase_stats: PhraseStats | None = None,
    run: tuple[int, tuple[pd.Timestamp, pd.Timestamp] | None] | None = None,
) -> tuple[pd.DataFrame, list[str | None]]:
    """Returns the pain_points table and a pain_point_id per segment (None where not clustered).

    ``phrase_stats``: what :func:`trim_phrases` took from segments whose phrases it dropped. ``run``:
    where ``segments`` (and ``documents``) are only part of the run, as in a batch run, which holds just
    the segments it clusters: the run's number of segments (the baseline's sizes are scaled by it) and
    the first and last date of its documents that have segments (the weeks are counted from there)."""
    assignment: list[str | None] = [None] * len(segments)
    rows: list[dict] = []
    if not config.enabled or segments.empty:
        return pd.DataFrame(columns=PAIN_POINT_COLUMNS), assignment
    # Per-segment values are held only where they are read, and compactly: a run of a million reviews
    # holds millions of segments here. The stage as a code into stage_ids (-1: none of them); dates,
    # weeks and phrase keys only for the segments clustered (``rows_all``, in table order: a stage's
    # rows are those among them with its code); texts, ids and phrases are read per cluster from
    # ``segments``.
    stage_code = stage_codes(segments["stage"], stage_ids)
    negative = (segments["sentiment"] == "negative").to_numpy()
    in_any = stage_code >= 0
    scope_any = in_any & negative if config.scope == "negative" else in_any
    rows_all = np.flatnonzero(scope_any)
    created, weeks, n_weeks = _clustered_dates(segments, documents, rows_all, run[1] if run else None)
    # For the clustered segments: phrase keys (as ids into one list of keys: a corpus repeats the same
    # phrases) and the keys that say something of a noun ("late box", "code failed at checkout"). Of
    # the others, only what PhraseStats keeps: each stage's count of each key (the background its
    # clusters' labels are ranked against) and, for the whole run, the statements' keys. Read a block at
    # a time, so the lists of a whole corpus are never built; what trim_phrases already took from
    # segments whose phrases it dropped comes in ``phrase_stats``.
    keys, said_in = _KeyLists(), _KeyLists()
    stats = PhraseStats()
    column = segments["phrases"]
    for start in range(0, len(segments), CHUNK):
        for i, cell in enumerate(column.iloc[start : start + CHUNK].tolist(), start):
            ps = _phrase_list(cell)
            if scope_any[i]:
                stated = frozenset(sys.intern(phrase_key(p)) for p in statements(ps))
                stats.said |= stated
                keys.append(phrase_key(p) for p in ps)
                said_in.append(stated)
            else:
                stats.add(ps, stage_ids[stage_code[i]] if in_any[i] else None)
    if phrase_stats is not None:
        stats.merge(phrase_stats)
    said_all, background = stats.said, stats.background
    index = _statement_index(said_all)
    used_labels: set[str] = set()
    used_keys: set[str] = set()
    codes = stage_code[rows_all]  # a stage's rows in scope are those of rows_all with its code
    with contextlib.ExitStack() as stack:
        # With workers, every stage is clustered ahead in worker processes; labelled here in journey order.
        ahead = (
            _cluster_stages(embeddings, rows_all, codes, len(stage_ids), config, seed, stack)
            if config.workers
            else {}
        )
        for code, stage in enumerate(stage_ids):
            at = np.flatnonzero(codes == code)  # the stage's rows among the clustered ones
            if not len(at):
                continue
            idx = rows_all[at]
            X = Rows(embeddings, idx)  # read a chunk at a time: the stage is never held whole
            labels = ahead.pop(code).result() if code in ahead else cluster_segments(X, config, seed)
            groups = [
                _Group(stage, int(c) + 1, np.flatnonzero(labels == c)) for c in sorted(set(labels) - {-1})
            ]
            if (labels == -1).any():
                groups.append(_Group(stage, None, np.flatnonzero(labels == -1)))
            # Each segment counts a phrase once; phrases are counted under their key ("arrived late" and
            # "arrives late" together) and shown in their most frequent form in the cluster.
            class_phr = [[k for j in at[g.index] for k in set(keys[int(j)])] for g in groups]
            scores = ctfidf([*class_phr, background.pop(stage, Counter())])
            for g, sc, cp in zip(groups, scores, class_phr):
                members = idx[g.index]
                pid = f"{stage}-{g.number}" if g.number is not None else f"{stage}-{OTHER_PAIN_POINT}"
                seg = segments.iloc[members]
                forms = _forms(p for ps in seg["phrases"].tolist() for p in set(ps))
                df = Counter(cp)
                ranked = _rank(sc, df, len(g.index), forms)
                if g.number is None:
                    label = f"other {stage} issues" if config.scope == "negative" else f"other {stage}"
                else:
                    cov = _coverage(ranked[:LABEL_CANDIDATES], [set(keys[int(j)]) for j in at[g.index]])
                    said = {k for j in at[g.index] for k in said_in[int(j)]}
                    best = _pick_label(
                        ranked[:LABEL_CANDIDATES],
                        cov,
                        len(g.index),
                        forms,
                        said,
                        used_keys,
                        used_labels,
                        index,
                    )
                    label = forms[best] if best is not None else f"{stage} issue {g.number}"
                    if label in used_labels:
                        label = f"{label} ({stage})"
                    if best is not None:
                        used_keys.add(best)
                used_labels.add(label)
                for i in members:
                    assignment[i] = pid
                emos = Counter(e for e in seg["emotion"] if e != "neutral")
                docs = sorted(set(seg["doc_id"]))
                dates = created.iloc[at[g.index]].dropna()
                vectors = Rows(embeddings, members)
                centre = normalize(vectors.sum()[None])[0]
                q_ids, quotes = _quotes(
                    vectors, centre, seg["text"].tolist(), seg["segment_id"].tolist(), config.n_quotes
                )
                weekly, trend = _weekly(weeks[at[g.index]], n_weeks)
                rows.append(
                    {
                        "pain_point_id": pid,
                        "stage": stage,
                        "label": label,
                        "keyphrases": [forms[t] for t in ranked[:5]],
                        "size": len(members),
                        "share_of_stage_negative": len(members) / max(len(idx), 1),
                        "n_documents": len(docs),
                        "mean_sentiment_score": float(seg["sentiment_score"].mean()),
                        "top_emotions": [
                            e
                            for e, _ in sorted(
                                emos.items(), key=lambda kv: (-kv[1], CX_EMOTIONS.index(kv[0]))
                            )[:3]
                        ],
                        "first_seen": dates.min() if len(dates) else None,
                        "last_seen": dates.max() if len(dates) else None,
                        "example_segment_ids": q_ids,
                        "example_quotes": quotes,
                        "status": None,
                        "baseline_size": None,
                        "weekly_counts": weekly,
                        "trend": trend,
                        "centroid": [float(v) for v in centre],
                    }
                )
            logger.info(
                "%s: %d segments -> %d pain points, %d in other",
                stage,
                len(idx),
                len(groups) - int((labels == -1).any()),
                int((labels == -1).sum()),
            )
            del X, labels, groups, class_phr, scores
            trim_heap()  # each stage's temporaries, handed back before the next stage's
    table = pd.DataFrame(rows, columns=PAIN_POINT_COLUMNS)
    if baseline is not None:
        table, renames = match_baseline(table, baseline, run[0] if run else len(segments), config)
        assignment = [renames.get(a, a) if a is not None else None for a in assignment]
    if not table.empty:
        table["first_seen"] = pd.to_datetime(table["first_seen"], utc=True)
        table["last_seen"] = pd.to_datetime(table["last_seen"], utc=True)
    return table, assignment


# -------------------------------------------------------------------------------------------- baseline


def load_baseline(outdir: str | Path) -> Baseline:
    """The pain points of an earlier ``cxnlp analyze`` output folder (Parquet or CSV)."""
    path = Path(outdir)
    parquet, csv = path / "pain_points.parquet", path / "pain_points.csv"
    fix = "pass --baseline the output folder (-o) of an earlier `cxnlp analyze` run"
    if not path.is_dir():
        raise InputError(Errors.E209, path=str(path), problem=f"it does not exist; {fix}")
    if parquet.is_file():
        table = pd.read_parquet(parquet)
    elif csv.is_file():
        table = pd.read_csv(csv)
    else:
        raise InputError(
            Errors.E209, path=str(path), problem=f"it has no pain_points.parquet or pain_points.csv; {fix}"
        )
    for col in list_columns(
        "pain_points"
    ):  # Parquet gives arrays, CSV gives JSON text: make both plain lists
        if col in table.columns:
            table[col] = [_as_list(v) for v in table[col]]
    n_segments = 0
    models: dict = {}
    try:
        manifest = json.loads((path / "run.json").read_text(encoding="utf-8"))
        if isinstance(manifest, dict) and isinstance(manifest.get("models"), dict):
            models = manifest["models"]
        n_segments = int(manifest["counts"]["segments"])
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("baseline %s: run.json has no segment count; sizes are compared without scaling", path)
    return Baseline(table, n_segments, str(path), models)


KEYPHRASE_MATCH = (
    0.3  # Jaccard overlap of keyphrases + label needed to match when the baseline has no centres
)


def _as_list(v: object) -> list | None:
    if isinstance(v, str):
        v = json.loads(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v if isinstance(v, list) else None


def _number(pid: str) -> int:
    tail = pid.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _similarity(new: pd.DataFrame, old: pd.DataFrame, centres: bool = True) -> tuple[np.ndarray, bool]:
    """Cosine similarity of centres, or keyphrase/label overlap (Jaccard) when a side has no centres or
    ``centres`` is False (the two runs' embedding spaces differ).

    The flag says whether centres were used.
    """

    def has_centres(t: pd.DataFrame) -> bool:
        return "centroid" in t.columns and all(
            isinstance(c, (list, np.ndarray)) and len(c) for c in t["centroid"]
        )

    comparable = centres and has_centres(new) and has_centres(old)
    if comparable and len(new["centroid"].iloc[0]) == len(old["centroid"].iloc[0]):
        A = normalize(np.stack([np.asarray(c, dtype=np.float32) for c in new["centroid"]]))
        B = normalize(np.stack([np.asarray(c, dtype=np.float32) for c in old["centroid"]]))
        return A @ B.T, True

    def terms(row: pd.Series) -> set[str]:
        return set(row.get("keyphrases") or []) | {str(row["label"])}

    a, b = [terms(r) for _, r in new.iterrows()], [terms(r) for _, r in old.iterrows()]
    return np.array([[len(x & y) / max(len(x | y), 1) for y in b] for x in a], dtype=np.float32).reshape(
        len(a), len(b)
    ), False


def _status(size: int, before: int, scale: float, ratio: float) -> str:
    """growing / shrinking when the size moved by more than ``ratio`` and two Poisson standard deviations."""
    expected = before * scale
    margin = 2 * math.sqrt(max(expected, 1.0))
    if size > expected * (1 + ratio) and size - expected > margin:
        return "growing"
    if size < expected / (1 + ratio) and expected - size > margin:
        return "shrinking"
    return "stable"


def match_baseline(
    table: pd.DataFrame, baseline: Baseline, n_segments: int, config: ClusterConfig
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Give matched pain points the earlier id and label, set ``status``, add ``gone`` rows.

    Matching is one-to-one within a stage (Hungarian assignment on centre similarity, at least
    ``cluster.match_threshold``); ``<stage>-other`` groups match each other. Sizes are compared after
    scaling the earlier size by the ratio of analysed segments. Returns the table and old -> new ids.
    """
    from scipy.optimize import linear_sum_assignment

    old_all = baseline.pain_points
    if "status" in old_all.columns:
        old_all = old_all[old_all["status"].fillna("") != "gone"]
    scale = n_segments / baseline.n_segments if baseline.n_segments else 1.0
    table = table.copy()
    new_ids = table["pain_point_id"].tolist()
    labels = table["label"].tolist()
    status: list[str] = ["new"] * len(table)
    base_size: list[int | None] = [None] * len(table)
    matched_old: set[str] = set()
    for stage in sorted(set(table["stage"]) | set(old_all["stage"])):
        cur = table[table["stage"] == stage]
        old = old_all[old_all["stage"] == stage]
        other_id = f"{stage}-{OTHER_PAIN_POINT}"
        cur_c = cur[cur["pain_point_id"] != other_id]
        old_c = old[old["pain_point_id"] != other_id]
        pairs: list[tuple[int, int]] = []
        if len(cur_c) and len(old_c):
            sim, by_centres = _similarity(cur_c, old_c, baseline.centres)
            threshold = config.match_threshold if by_centres else KEYPHRASE_MATCH
            rows, cols = linear_sum_assignment(-sim)
            pairs = [(cur_c.index[r], old_c.index[c]) for r, c in zip(rows, cols) if sim[r, c] >= threshold]
        if (cur["pain_point_id"] == other_id).any() and (old["pain_point_id"] == other_id).any():
            pairs.append(
                (
                    cur.index[cur["pain_point_id"] == other_id][0],
                    old.index[old["pain_point_id"] == other_id][0],
                )
            )
        next_number = (
            max(
                [
                    _number(p)
                    for p in baseline.pain_points.loc[baseline.pain_points["stage"] == stage, "pain_point_id"]
                ]
                + [0]
            )
            + 1
        )
        matched_new = {r for r, _ in pairs}
        for r, o in pairs:
            pos = table.index.get_loc(r)
            old_row = old_all.loc[o]
            new_ids[pos] = str(old_row["pain_point_id"])
            base_size[pos] = int(old_row["size"])
            status[pos] = _status(int(table.at[r, "size"]), int(old_row["size"]), scale, config.change_ratio)
            matched_old.add(str(old_row["pain_point_id"]))
        for r in cur_c.index:  # unmatched: fresh numbers after the earlier run's, largest first
            if r not in matched_new:
                new_ids[table.index.get_loc(r)] = f"{stage}-{next_number}"
                next_number += 1
    # Matched pain points keep their earlier label when no other pain point of this run uses it.
    for pos, (pid, st) in enumerate(zip(new_ids, status)):
        if st != "new" and not pid.endswith(f"-{OTHER_PAIN_POINT}"):
            old_label = str(old_all.loc[old_all["pain_point_id"] == pid, "label"].iloc[0])
            if old_label not in labels[:pos] + labels[pos + 1 :]:
                labels[pos] = old_label
    renames = {old: new for old, new in zip(table["pain_point_id"], new_ids) if old != new}
    table["pain_point_id"], table["label"], table["status"], table["baseline_size"] = (
        new_ids,
        labels,
        status,
        base_size,
    )
    gone = old_all[
        ~old_all["pain_point_id"].astype(str).isin(matched_old)
        & ~old_all["pain_point_id"].astype(str).str.endswith(f"-{OTHER_PAIN_POINT}")
    ]
    gone_rows = []
    taken = set(labels)
    for _, row in gone.iterrows():
        label = str(row["label"]) if str(row["label"]) not in taken else f"{row['label']} (gone)"
        taken.add(label)
        gone_rows.append(
            {
                **{c: row.get(c) for c in PAIN_POINT_COLUMNS if c in row.index},
                "label": label,
                "size": 0,
                "share_of_stage_negative": 0.0,
                "n_documents": 0,
                "status": "gone",
                "baseline_size": int(row["size"]),
                "weekly_counts": None,
                "trend": None,
            }
        )
    if gone_rows:
        table = pd.concat([table, pd.DataFrame(gone_rows, columns=PAIN_POINT_COLUMNS)], ignore_index=True)
    return table.reset_index(drop=True), renames
