from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cxnlp.cluster import (
    Baseline,
    Rows,
    _KeyLists,
    _quotes,
    auto_min_cluster_size,
    cluster_segments,
    ctfidf,
    find_pain_points,
    load_baseline,
    match_baseline,
    normalize,
    open_embeddings,
    release,
    same_space,
    take_rows,
    write_embeddings,
)
from cxnlp.config import ClusterConfig
from cxnlp.errors import InputError
from cxnlp.schema import column_names
from tests.conftest import FIXTURES

PHRASES = {0: ["late delivery", "courier"], 1: ["melted ice packs", "box"], 2: ["missing ingredients", "box"]}


def _blobs(seed: int = 0, per: int | list[int] = 20, noise: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = per if isinstance(per, list) else [per] * 3
    centres = np.eye(3, 32) * 3
    X = np.concatenate(
        [c + rng.normal(0, 0.15, (k, 32)) for c, k in zip(centres, sizes)] + [rng.normal(0, 1.5, (noise, 32))]
    )
    truth = np.repeat(np.arange(4), sizes + [noise])
    return X.astype(np.float32), truth


def _frames(
    truth: np.ndarray, dates: list[str] | None = None, prefix: str = "d"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = len(truth)
    segments = pd.DataFrame(
        {
            "doc_id": [f"{prefix}{i}" for i in range(n)],
            "segment_id": [f"{prefix}{i}:0" for i in range(n)],
            "text": [f"text {i} about {PHRASES[int(t)][0]}" for i, t in enumerate(truth)],
            "stage": ["delivery"] * n,
            "sentiment": ["negative"] * n,
            "sentiment_score": [-0.8] * n,
            "emotion": ["annoyance"] * n,
            "phrases": [PHRASES[int(t)] for t in truth],
        }
    )
    created = pd.to_datetime(
        dates if dates is not None else ["2026-10-01"] * (n - 1) + ["2026-10-20"], utc=True
    )
    return segments, pd.DataFrame({"doc_id": segments["doc_id"], "created_at": created})


CFG = ClusterConfig(min_cluster_size=5)


def test_cluster_finds_groups_largest_first_and_is_deterministic():
    X, truth = _blobs(per=[25, 20, 15])
    a = cluster_segments(X, CFG)
    b = cluster_segments(X.copy(), CFG)
    assert np.array_equal(a, b)
    for k in range(3):
        members = a[truth == k]
        assert len(set(members)) == 1 and members[0] == k  # largest first
    assert (a[truth == 3] == -1).all()  # far-away noise stays in the visible "other" group


def test_cluster_outliers_join_a_close_cluster_or_stay_other():
    X, truth = _blobs(noise=0)
    near = X[0] + 0.01  # very close to blob 0
    far = -X[0]  # opposite direction: cosine -1 to blob 0
    labels = cluster_segments(
        np.vstack([X, near, far]), ClusterConfig(min_cluster_size=5, assign_threshold=0.6)
    )
    assert labels[-2] == labels[0]
    assert labels[-1] == -1


def test_cluster_assign_threshold_decides_whether_an_outlier_joins():
    X, _ = _blobs(noise=0)
    aside = 3 * (
        0.7 * np.eye(32)[0] + 0.714 * np.eye(32)[10]
    )  # cosine 0.7 to blob 0's centre, far from its members
    data = np.vstack([X, aside]).astype(np.float32)
    strict = cluster_segments(data, ClusterConfig(min_cluster_size=5, assign_threshold=0.9))
    loose = cluster_segments(data, ClusterConfig(min_cluster_size=5, assign_threshold=0.5))
    assert strict[-1] == -1 and loose[-1] == loose[0]


def test_cluster_small_inputs_are_all_other():
    assert (cluster_segments(np.ones((3, 8), np.float32), ClusterConfig(min_segments=6)) == -1).all()


def test_cluster_auto_min_cluster_size_grows_with_n():
    assert (
        auto_min_cluster_size(10) == 3
        and auto_min_cluster_size(1000) == 8
        and auto_min_cluster_size(10_000) == 25
    )


def test_cluster_sklearn_backend_finds_the_same_groups():
    X, truth = _blobs()
    a = cluster_segments(X, CFG)
    b = cluster_segments(X, CFG.model_copy(update={"backend": "sklearn"}))
    assert np.array_equal(a, b)


def test_cluster_fits_a_seeded_sample_and_assigns_the_rest():
    X, truth = _blobs(per=80, noise=0)  # 240 rows, HDBSCAN sees 100
    cfg = ClusterConfig(min_cluster_size=5, fit_sample=100)
    a = cluster_segments(X, cfg, seed=3)
    assert np.array_equal(a, cluster_segments(X, cfg, seed=3))
    for k in range(3):
        assert len(set(a[truth == k])) == 1 and a[truth == k][0] >= 0


def test_cluster_precomputed_float16_memmap_gives_the_same_clusters(tmp_path):
    X, _ = _blobs()
    mm = write_embeddings(
        tmp_path / "emb.npy", (X[i : i + 16] for i in range(0, len(X), 16)), len(X), X.shape[1]
    )
    assert mm.dtype == np.float16
    opened = open_embeddings(tmp_path / "emb.npy")
    assert isinstance(opened, np.memmap)
    assert np.array_equal(cluster_segments(opened, CFG), cluster_segments(X, CFG))


def test_cluster_take_rows_reads_a_memory_map_in_chunks_and_equals_fancy_indexing(tmp_path):
    X, _ = _blobs(per=30)
    np.save(tmp_path / "emb.npy", X.astype(np.float16))
    mm = open_embeddings(tmp_path / "emb.npy")
    idx = np.sort(np.random.default_rng(0).choice(len(X), 40, replace=False))
    for chunk in (7, 64, 1000):  # row blocks inside, across and beyond the array
        got = take_rows(mm, idx, chunk=chunk)
        assert type(got) is np.ndarray and np.array_equal(got, np.asarray(mm)[idx])
    view = np.asarray(mm)  # a plain view of the map, as the pipeline's Corpus holds it
    assert np.array_equal(take_rows(view, idx, chunk=7), X.astype(np.float16)[idx])
    assert np.array_equal(take_rows(X, idx), X[idx])  # in memory: plain indexing
    assert take_rows(mm, idx[:0]).shape == (0, X.shape[1])


def test_cluster_rows_read_a_stage_of_a_memory_map_as_the_materialised_stage(tmp_path):
    """The pain-point step hands cluster_segments a Rows view of one stage instead of the stage's
    matrix: every read (slices, index arrays, the sum) and the clusters equal the materialised ones."""
    X, _ = _blobs(per=80, noise=10)
    np.save(tmp_path / "emb.npy", X.astype(np.float16))
    mm = open_embeddings(tmp_path / "emb.npy")
    idx = np.sort(np.random.default_rng(1).choice(len(X), 200, replace=False))
    dense = normalize(np.asarray(mm)[idx])
    rows = Rows(mm, idx)
    assert len(rows) == 200 and rows.shape == dense.shape
    assert np.array_equal(rows[10:37], dense[10:37]) and np.array_equal(
        rows[np.array([3, 50, 199])], dense[[3, 50, 199]]
    )
    assert np.allclose(rows.sum(), dense.sum(0, dtype=np.float64), atol=1e-9)
    cfg = ClusterConfig(min_cluster_size=5, fit_sample=100)
    assert np.array_equal(cluster_segments(rows, cfg), cluster_segments(dense, cfg))
    centre = normalize(rows.sum()[None])[0]
    texts, ids = [f"text {i}" for i in range(200)], [f"s{i}" for i in range(200)]
    assert _quotes(rows, centre, texts, ids, 3) == _quotes(dense, centre, texts, ids, 3)


def test_cluster_key_lists_give_back_each_segments_keys_in_order():
    keys = _KeyLists()
    given = [("late box", "box", "late box"), (), ("courier",), ("".join(["b", "ox"]),)]
    for k in given:
        keys.append(iter(k))
    assert [keys[i] for i in range(len(given))] == given
    assert keys[3][0] is keys[0][1]  # each distinct key is held once, however many segments say it


def test_cluster_release_of_a_row_range_drops_only_that_range(tmp_path):
    def rss_mb() -> float:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS"))

    rows = np.random.default_rng(0).normal(size=(40_000, 512)).astype(np.float16)  # 40 MB
    np.save(tmp_path / "emb.npy", rows)
    mm = open_embeddings(tmp_path / "emb.npy")
    before = rss_mb()
    assert float(np.asarray(mm).sum(dtype=np.float64)) == float(rows.sum(dtype=np.float64))
    touched = rss_mb()
    release(mm, (0, 20_000))  # the first half's pages
    half = rss_mb()
    release(np.asarray(mm), (20_000, 40_000))  # a view of the map: the other half
    assert touched - before > 30 and 14 < touched - half < 26 and half - rss_mb() > 14
    assert np.array_equal(mm[19_999:20_001], rows[19_999:20_001])  # read back from the page cache


def test_cluster_release_drops_pages_but_never_changes_data(tmp_path):
    X, _ = _blobs()
    np.save(tmp_path / "emb.npy", X)
    shared = np.load(tmp_path / "emb.npy", mmap_mode="r+")
    shared[0] = 7.0
    shared.flush()
    release(shared)  # written back first: the change survives
    assert (shared[0] == 7.0).all() and (np.load(tmp_path / "emb.npy")[0] == 7.0).all()
    private = np.load(tmp_path / "emb.npy", mmap_mode="c")
    private[1] = 9.0
    release(private)  # copy-on-write: releasing would lose the change, so it is left alone
    release(private[2:])
    assert (private[1] == 9.0).all()
    release(X)  # an array in memory: nothing to do
    assert np.array_equal(np.asarray(shared)[2:], X[2:])


def test_cluster_pain_points_read_phrases_held_as_arrow_lists():
    """The batch runner's reduce holds segments.phrases as Arrow lists (``batch.REDUCE_ARROW``): the pain
    points are the same as from Python lists."""
    import pyarrow as pa

    X, truth = _blobs(per=12, noise=0)
    segments, documents = _frames(truth)
    segments.loc[segments.index[-2:], "stage"] = "none"  # rows outside every stage hold no keys
    arrow = segments.assign(
        phrases=pd.Series(
            pd.arrays.ArrowExtensionArray(pa.chunked_array([pa.array(segments["phrases"].tolist())])),
            index=segments.index,
        )
    )
    table, assignment = find_pain_points(segments, X, documents, ["delivery", "billing"], CFG)
    got, got_assignment = find_pain_points(arrow, X, documents, ["delivery", "billing"], CFG)
    pd.testing.assert_frame_equal(table, got)
    assert assignment == got_assignment and assignment[-1] is None


def test_cluster_trimmed_phrases_with_their_stats_give_the_same_pain_points():
    """The batch reduce drops the phrases of the segments not clustered, a chunk at a time, keeping what
    the cluster step reads of them (stage backgrounds, statements) in PhraseStats: same pain points."""
    import pyarrow as pa

    from cxnlp.cluster import PhraseStats, trim_phrases

    X, truth = _blobs(per=12, noise=0)
    segments, documents = _frames(truth)
    segments["phrases"] = [["late delivery", "driver lost box"] if t == 0 else PHRASES[int(t)] for t in truth]
    n = 40  # positive segments: the delivery stage's background says "driver lost box" all the time
    extra = pd.DataFrame(
        {
            "doc_id": [f"p{i}" for i in range(n)],
            "segment_id": [f"p{i}:0" for i in range(n)],
            "text": ["no late delivery this time, the courier was kind"] * n,
            "stage": ["delivery"] * (n - 3) + [None] * 3,
            "sentiment": ["positive"] * n,
            "sentiment_score": [0.9] * n,
            "emotion": ["joy"] * n,
            "phrases": [["driver lost box", "box", "courier was kind", "courier"]] * n,
        }
    )
    segments = pd.concat([segments, extra], ignore_index=True)
    documents = pd.concat(
        [documents, pd.DataFrame({"doc_id": extra["doc_id"], "created_at": documents["created_at"].iloc[0]})],
        ignore_index=True,
    )
    X = np.concatenate([X, np.random.default_rng(3).normal(size=(n, X.shape[1])).astype(np.float32)])
    stages = ["delivery", "billing"]
    table, assignment = find_pain_points(segments, X, documents, stages, CFG)

    stats = PhraseStats()
    halves = []
    for half in (segments.iloc[:30], segments.iloc[30:]):  # two chunks, as the reduce reads them
        half = half.assign(
            phrases=pd.Series(
                pd.arrays.ArrowExtensionArray(pa.array(half["phrases"].tolist())), index=half.index
            )
        )
        trim_phrases(half, stages, CFG, stats)
        halves.append(half)
    trimmed = pd.concat(halves)
    assert trimmed["phrases"].isna().sum() == n  # the positive ones; the clustered ones keep theirs
    assert stats.background["delivery"]["courier"] == n - 3 and "courier kind" in stats.said  # phrase keys
    got, got_assignment = find_pain_points(trimmed, X, documents, stages, CFG, phrase_stats=stats)
    pd.testing.assert_frame_equal(table, got)
    assert assignment == got_assignment
    assert table["label"].iloc[0] == "late delivery"  # "driver lost box" is what the stage always says
    without, _ = find_pain_points(trimmed, X, documents, stages, CFG)  # the stats are what makes it so
    assert without["label"].iloc[0] == "driver lost box"


def test_cluster_ctfidf_prefers_distinctive_terms():
    scores = ctfidf([["late delivery", "box", "late delivery"], ["box", "melted ice"], ["box"]])
    assert scores[0]["late delivery"] > scores[0]["box"]


def test_cluster_pain_points_have_unique_labels_quotes_and_dates():
    X, truth = _blobs(per=12, noise=0)
    segments, documents = _frames(truth)
    table, assignment = find_pain_points(segments, X, documents, ["delivery", "billing"], CFG)
    assert set(table["label"]) == {"late delivery", "melted ice packs", "missing ingredients"}
    assert (
        table["label"].is_unique and table["size"].sum() == len(X) and all(a is not None for a in assignment)
    )
    assert all(1 <= len(q) <= 3 for q in table["example_quotes"])
    assert table["share_of_stage_negative"].sum() == 1.0
    assert table["last_seen"].max() == pd.Timestamp("2026-10-20", tz="UTC")
    assert table["status"].isna().all() and all(len(c) == 32 for c in table["centroid"])
    assert list(table.columns) == column_names("pain_points")
    again, _ = find_pain_points(segments, X, documents, ["delivery", "billing"], CFG)
    pd.testing.assert_frame_equal(table, again)


def test_cluster_quotes_skip_near_duplicates():
    X, truth = _blobs(per=12, noise=0)
    X[1] = X[0]  # an exact duplicate of the most central candidate would otherwise be quoted twice
    segments, documents = _frames(truth)
    table, _ = find_pain_points(segments, X, documents, ["delivery"], CFG)
    for ids in table["example_segment_ids"]:
        assert not {"d0:0", "d1:0"} <= set(ids)


def test_cluster_weekly_counts_and_trend_follow_the_dates():
    X, truth = _blobs(per=[6, 12, 18], noise=0)
    # blob 0 only in week 1, blob 1 spread evenly, blob 2 growing: 3, 6, 9 over weeks 1-3
    dates = (
        ["2026-10-05"] * 6
        + ["2026-10-05", "2026-10-12", "2026-10-19"] * 4
        + ["2026-10-06"] * 3
        + ["2026-10-13"] * 6
        + ["2026-10-20"] * 9
    )
    segments, documents = _frames(truth, dates)
    table, _ = find_pain_points(segments, X, documents, ["delivery"], CFG)
    by_label = table.set_index("label")
    assert by_label.at["missing ingredients", "weekly_counts"] == [3, 6, 9]
    assert by_label.at["missing ingredients", "trend"] == pytest.approx(0.5)  # +3 a week over a mean of 6
    assert by_label.at["melted ice packs", "trend"] == pytest.approx(0.0)
    assert by_label.at["late delivery", "weekly_counts"] == [6, 0, 0]
    undated, _ = find_pain_points(segments, X, documents.assign(created_at=pd.NaT), ["delivery"], CFG)
    assert undated["weekly_counts"].isna().all() and undated["trend"].isna().all()


def test_cluster_weeks_span_every_segments_document_not_only_the_clustered():
    """The weekly counts run from the first to the last week of any segment's document: a positive
    segment a week earlier (not clustered) and a document without segments two weeks later."""
    X, truth = _blobs(per=[6, 12, 18], noise=0)
    dates = ["2026-10-05"] * 18 + ["2026-10-06"] * 3 + ["2026-10-13"] * 6 + ["2026-10-20"] * 9
    segments, documents = _frames(truth, dates)
    early = segments.iloc[:1].assign(doc_id="early", segment_id="early:0", sentiment="positive")
    segments = pd.concat([segments, early], ignore_index=True)
    documents = pd.concat(
        [
            documents,
            pd.DataFrame(
                {
                    "doc_id": ["early", "silent"],
                    "created_at": pd.to_datetime(["2026-09-29", "2026-11-03"], utc=True),
                }
            ),
        ],
        ignore_index=True,
    )
    X = np.vstack([X, X[:1]])
    table, assignment = find_pain_points(segments, X, documents, ["delivery"], CFG)
    assert assignment[-1] is None  # the positive segment is not clustered
    by_label = table.set_index("label")
    assert by_label.at["missing ingredients", "weekly_counts"] == [0, 3, 6, 9]  # from 28 Sep; not to 3 Nov
    assert by_label.at["missing ingredients", "first_seen"] == pd.Timestamp("2026-10-06", tz="UTC")


def test_cluster_baseline_keeps_ids_and_marks_new_growing_shrinking_gone():
    X1, t1 = _blobs(seed=0, per=[30, 30, 30], noise=0)
    seg1, doc1 = _frames(t1)
    first, _ = find_pain_points(seg1, X1, doc1, ["delivery"], CFG)
    ids1 = dict(zip(first["label"], first["pain_point_id"]))
    # Next night: blob 0 grew, blob 1 shrank, blob 2 vanished, a new blob appeared.
    rng = np.random.default_rng(1)
    X2 = np.concatenate(
        [
            np.eye(3, 32)[0] * 3 + rng.normal(0, 0.15, (60, 32)),
            np.eye(3, 32)[1] * 3 + rng.normal(0, 0.15, (10, 32)),
            -np.eye(3, 32)[0] * 3 + rng.normal(0, 0.15, (20, 32)),
        ]
    ).astype(np.float32)
    t2 = np.repeat([0, 1, 2], [60, 10, 20])
    seg2, doc2 = _frames(t2, prefix="e")
    seg2.loc[t2 == 2, "phrases"] = pd.Series([["wrong address"]] * 20, index=seg2.index[t2 == 2])
    second, assignment = find_pain_points(
        seg2, X2, doc2, ["delivery"], CFG, baseline=Baseline(first, len(seg1))
    )
    rows = second.set_index("label")
    assert (
        rows.at["late delivery", "pain_point_id"] == ids1["late delivery"]
        and rows.at["late delivery", "status"] == "growing"
    )
    assert (
        rows.at["melted ice packs", "pain_point_id"] == ids1["melted ice packs"]
        and rows.at["melted ice packs", "status"] == "shrinking"
    )
    assert rows.at["missing ingredients", "status"] == "gone" and rows.at["missing ingredients", "size"] == 0
    assert rows.at["missing ingredients", "pain_point_id"] == ids1["missing ingredients"]
    assert (
        rows.at["wrong address", "status"] == "new"
        and rows.at["wrong address", "pain_point_id"] == "delivery-4"
    )
    assert set(assignment) == {ids1["late delivery"], ids1["melted ice packs"], "delivery-4"}
    assert second["label"].is_unique


def test_cluster_baseline_without_centres_matches_on_keyphrases():
    X, truth = _blobs(per=12, noise=0)
    segments, documents = _frames(truth)
    first, _ = find_pain_points(segments, X, documents, ["delivery"], CFG)
    old = first.assign(centroid=None)
    again, renames = match_baseline(first, Baseline(old, len(segments)), len(segments), CFG)
    assert list(again["pain_point_id"]) == list(first["pain_point_id"]) and renames == {}
    assert set(again["status"]) == {"stable"}


def test_cluster_baseline_from_other_models_matches_on_keyphrases_not_centroids():
    """A model upgrade moves every centroid: a baseline clustered in another embedding space must not be
    matched by cosine (nothing would match and every pain point would turn new), but by its keyphrases."""
    X, truth = _blobs(per=12, noise=0)
    segments, documents = _frames(truth)
    first, _ = find_pain_points(segments, X, documents, ["delivery"], CFG)
    moved = first.assign(centroid=[list(np.roll(np.asarray(c), 7)) for c in first["centroid"]])
    by_cosine, _ = match_baseline(first, Baseline(moved, len(segments)), len(segments), CFG)
    assert set(by_cosine["status"]) == {"new", "gone"}
    other = Baseline(moved, len(segments), models={"heads": {"version": "3.0.0"}}, centres=False)
    again, renames = match_baseline(first, other, len(segments), CFG)
    assert list(again["pain_point_id"]) == list(first["pain_point_id"]) and renames == {}
    assert set(again["status"]) == {"stable"}


def test_same_space_needs_both_runs_to_name_their_models():
    now = {
        "heads": {"name": "cx-heads", "version": "4.0.0"},
        "encoder": {"name": "cx-encoder", "cluster_map": "ab"},
    }
    assert same_space(now, now) and same_space(now, {}) and same_space({}, now)
    assert not same_space(
        now, {"heads": {"name": "cx-heads", "version": "3.0.0"}, "encoder": {"name": "cx-encoder"}}
    )
    assert not same_space(now, {**now, "encoder": {"name": "cx-encoder", "cluster_map": None}})


def test_analyzer_marks_a_baseline_of_other_models(analyzer, tmp_path):
    base = Baseline(pd.DataFrame(), 0, "old", models=analyzer.embedding_models())
    assert analyzer.comparable_baseline(base) is base and analyzer.comparable_baseline(None) is None
    old = Baseline(pd.DataFrame(), 0, "old", models={"heads": {"name": "cx-heads", "version": "3.0.0"}})
    marked = analyzer.comparable_baseline(old)
    assert marked is not None and marked.centres is False and old.centres is True
    folder = tmp_path / "night1"
    folder.mkdir()
    (folder / "pain_points.csv").write_text("pain_point_id,stage,label\n")
    (folder / "run.json").write_text(
        json.dumps({"counts": {"segments": 3}, "models": analyzer.embedding_models()})
    )
    loaded = load_baseline(folder)
    assert loaded.models == analyzer.embedding_models() and analyzer.comparable_baseline(loaded) is loaded


def test_cluster_load_baseline_reads_parquet_and_csv_and_explains_a_bad_folder(tmp_path):
    from cxnlp.output import to_arrow, write_table

    X, truth = _blobs(per=12, noise=0)
    segments, documents = _frames(truth)
    table, _ = find_pain_points(segments, X, documents, ["delivery"], CFG)
    for fmt in ("parquet", "csv"):
        folder = tmp_path / fmt
        folder.mkdir()
        write_table(to_arrow("pain_points", table), folder / "pain_points", fmt)
        (folder / "run.json").write_text('{"counts": {"segments": 36}}')
        base = load_baseline(folder)
        assert base.n_segments == 36 and base.pain_points["centroid"].map(len).eq(32).all()
        again, _ = match_baseline(table, base, 36, CFG)
        assert set(again["status"]) == {"stable"}
    with pytest.raises(InputError, match=r"\[E209\].*no pain_points.parquet or pain_points.csv") as exc:
        load_baseline(tmp_path)
    assert exc.value.exit_code == 2


def test_cluster_baseline_rerun_of_the_same_input_is_stable(analyzer, mixed_result, tmp_path):
    mixed_result.write(tmp_path / "night1")
    again = analyzer.analyze([str(FIXTURES / "mixed.jsonl")], baseline=tmp_path / "night1")
    before, after = mixed_result.pain_points, again.pain_points
    assert list(after["pain_point_id"]) == list(before["pain_point_id"]) and list(after["label"]) == list(
        before["label"]
    )
    assert set(after["status"]) <= {"stable"} and again.manifest["baseline"] == str(tmp_path / "night1")
    assert list(again.segments["pain_point_id"]) == list(mixed_result.segments["pain_point_id"])


TEXTS = {
    0: [
        "The box arrived two days late.",
        "My box arrived late again.",
        "Box arrives late every week.",
        "The box arrived late and the driver was rude.",
    ],
    1: [
        "The ice packs had melted.",
        "The ice packs were melted and the meat was warm.",
        "My ice packs melted in the heat.",
        "The ice packs had melted by noon.",
    ],
    2: [
        "The box was missing two ingredients.",
        "We were missing ingredients for two recipes.",
        "Missing ingredients in my box again.",
        "The box was missing the garlic.",
    ],
}


def _spacy_frames(truth: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Segments whose phrases come from the real segment step (spaCy), one sentence each."""
    from cxnlp.config import SegmentConfig
    from cxnlp.segment import segment_documents

    segments, documents = _frames(truth)
    texts = [TEXTS[int(t)][i % 4] for i, t in enumerate(truth)]
    real = segment_documents(pd.DataFrame({"doc_id": segments["doc_id"], "text": texts}), SegmentConfig())
    assert real["segment_id"].tolist() == segments["segment_id"].tolist()
    return segments.assign(text=texts, phrases=real["phrases"]), documents


def test_cluster_labels_are_readable_phrases_unique_and_deterministic():
    X, truth = _blobs(per=12, noise=0)
    segments, documents = _spacy_frames(truth)
    table, _ = find_pain_points(segments, X, documents, ["delivery"], CFG)
    labels = table.set_index("pain_point_id")["label"]
    assert "late" in labels["delivery-1"] and "melted" in labels["delivery-2"]
    assert "missing" in labels["delivery-3"]
    assert all(2 <= len(label.split()) <= 4 for label in labels)  # phrases, not single nouns ("box")
    assert labels.is_unique and all(len(k) <= 5 for k in table["keyphrases"])
    again, _ = find_pain_points(segments, X, documents, ["delivery"], CFG)
    pd.testing.assert_frame_equal(table, again)


def test_cluster_labels_are_unique_across_inflections_and_prefer_phrases_over_nouns():
    X, truth = _blobs(per=12, noise=0)
    segments, documents = _frames(truth)
    phrases = {
        0: ["box", "late delivery", "courier"],
        1: ["box", "late deliveries", "missed window"],  # the same key as cluster 0's best phrase
        2: ["box", "rice"],
    }
    segments["phrases"] = [
        phrases[int(t)] + (["missing ingredients"] if t == 2 and i % 2 else []) for i, t in enumerate(truth)
    ]
    table, _ = find_pain_points(segments, X, documents, ["delivery"], CFG)
    labels = table.set_index("pain_point_id")["label"]
    assert labels["delivery-1"] == "late delivery" and labels["delivery-2"] == "missed window"
    assert labels["delivery-3"] == "missing ingredients"  # in half the segments, over the noun "rice" in all


def test_cluster_quotes_skip_the_same_words_in_another_order():
    from cxnlp.cluster import _quotes

    X = np.eye(4, dtype=np.float32)  # no two segments alike by embedding
    texts = ["box late again.", "Late box, again!", "The courier never came.", "Ice packs melted."]
    ids = [f"d{i}:0" for i in range(4)]
    centre = normalize(X.mean(0, keepdims=True))[0]
    q_ids, quotes = _quotes(X, centre, texts, ids, 3)
    assert quotes == ["box late again.", "The courier never came.", "Ice packs melted."]
    assert q_ids == ["d0:0", "d2:0", "d3:0"]


def test_cluster_labels_prefer_a_statement_over_a_bare_noun_compound():
    X, truth = _blobs(per=12, noise=0)
    segments, documents = _frames(truth)
    # Cluster 0: "discount code" (a bare noun: "did not accept discount code" says something of it) in
    # 8 segments, "code failed at checkout" in 4, within a factor of 2.5: the statement.
    # Cluster 1: "ice packs" in all, "ice packs had melted" in 6: the label extends the noun.
    # Cluster 2: only bare nouns and a one-off statement: the statement, never the single noun.
    c0 = (
        [["discount code", "checkout"]] * 7
        + [["discount code", "did not accept discount code"]]
        + [["code", "checkout", "code failed at checkout"]] * 4
    )
    c1 = [["ice packs"]] * 6 + [["ice packs", "ice packs had melted"]] * 6
    c2 = [["box"]] * 11 + [["box", "box arrived late twice"]]
    segments["phrases"] = c0 + c1 + c2
    table, _ = find_pain_points(segments, X, documents, ["delivery"], CFG)
    labels = table.set_index("pain_point_id")["label"]
    assert labels["delivery-1"] == "code failed at checkout"
    assert labels["delivery-2"] == "ice packs had melted"
    assert labels["delivery-3"] == "box arrived late twice"


def _two_stages() -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """A delivery stage of three clusters and a billing stage of two others (other sizes, directions and
    phrases), their rows interleaved with positive and stageless segments that are not clustered."""
    X, truth = _blobs(per=12, noise=0)
    delivery, documents = _frames(truth)
    rng = np.random.default_rng(5)
    sizes = [16, 9]
    B = np.concatenate([np.eye(32)[10 + k] * 3 + rng.normal(0, 0.15, (n, 32)) for k, n in enumerate(sizes)])
    billing, billing_docs = _frames(np.repeat([0, 1], sizes), prefix="b")
    billing = billing.assign(
        stage="billing",
        phrases=[["charged twice"] if k < sizes[0] else ["refund not arrived"] for k in range(25)],
    )
    rest, rest_docs = _frames(np.zeros(6, int), prefix="r")
    rest = rest.assign(stage=["billing", "delivery", None, None, "billing", None], sentiment="positive")
    rest.loc[rest.index[2:4], "sentiment"] = "negative"  # negative but in no stage
    segments = pd.concat([delivery, billing, rest], ignore_index=True)
    order = np.random.default_rng(6).permutation(len(segments))
    E = np.concatenate([X, B, rng.normal(size=(6, 32))]).astype(np.float32)[order]
    documents = pd.concat([documents, billing_docs, rest_docs], ignore_index=True)
    return segments.iloc[order].reset_index(drop=True), documents, E


def test_clustering_runs_on_one_blas_thread(monkeypatch):
    """LAPACK's eigendecomposition and BLAS products differ in their last bits with the thread count, and
    HDBSCAN turns those bits into other clusters where distances tie: cluster_segments pins one thread, so
    pain points do not depend on the machine's cores (nor on cluster.workers)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from cxnlp import cluster

    seen: list[set[int]] = []
    real = cluster._pca

    def spy(S, dims):  # type: ignore[no-untyped-def]
        seen.append({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})
        return real(S, dims)

    monkeypatch.setattr(cluster, "_pca", spy)
    X = np.random.default_rng(0).normal(size=(300, 32)).astype(np.float32)
    with threadpool_limits(2):
        cluster.cluster_segments(X, ClusterConfig(reduce_dims=8), seed=0)
    assert seen == [{1}]


def test_cluster_stages_in_workers_give_the_same_pain_points(tmp_path):
    """cluster.workers clusters the stages in worker processes: the same table (labels, centroids and
    all) and assignment as one stage after the other, from a memory map (a view of some of its rows
    too) and from an array in memory (written to a temporary file for the workers)."""
    segments, documents, E = _two_stages()
    stages = ["delivery", "billing"]
    table, assignment = find_pain_points(segments, E, documents, stages, CFG)
    assert table.groupby("stage", sort=False).size().to_dict() == {"delivery": 3, "billing": 2}
    assert set(table["label"]) >= {"late delivery", "charged twice", "refund not arrived"}
    workers = CFG.model_copy(update={"workers": 2})
    got, got_assignment = find_pain_points(segments, E, documents, stages, workers)
    pd.testing.assert_frame_equal(table, got)
    assert got_assignment == assignment

    half = E.astype(np.float16)
    np.save(tmp_path / "emb.npy", np.concatenate([np.ones((3, 32), np.float16), half]))  # 3 rows before
    mapped = open_embeddings(tmp_path / "emb.npy")[3:]
    expected, expected_assignment = find_pain_points(segments, half, documents, stages, CFG)
    got, got_assignment = find_pain_points(segments, mapped, documents, stages, workers)
    pd.testing.assert_frame_equal(expected, got)
    assert got_assignment == expected_assignment


def test_cluster_workers_is_a_count_of_processes():
    from cxnlp.config import load_config
    from cxnlp.errors import ConfigError

    assert (
        ClusterConfig().workers == 0 and load_config(overrides=["cluster.workers=14"]).cluster.workers == 14
    )
    with pytest.raises(ConfigError, match="cluster.workers"):
        load_config(overrides=["cluster.workers=-1"])


def test_coverage_counts_the_segments_that_say_a_key_or_a_longer_one():
    """_coverage (a cluster's segments that say each candidate key, or a key holding all its words),
    computed once per distinct set of keys, equals the count made segment by segment."""
    import random

    from cxnlp.cluster import _coverage

    rng = random.Random(0)
    words = ["box", "late", "arriv", "ice", "pack", "melt", "refund", "not", "charg", "twice"]
    keys = [" ".join(sorted(set(rng.sample(words, rng.randint(1, 3))))) for _ in range(25)]
    members = [set(rng.sample(keys, rng.randint(0, 3))) for _ in range(400)]
    members += [{"arriv box late"}] * 30  # many segments saying the same
    terms = sorted(set(keys))[:15] + ["box", "arriv late", "absent word"]

    def naive(t: str) -> int:
        return sum(1 for keys_ in members if any(set(t.split()) <= set(k.split()) for k in keys_))

    got = _coverage(terms, members)
    assert got == {t: naive(t) for t in terms}
    assert got["arriv late"] >= 30 and got["absent word"] == 0
