"""A stage head's macro-F1 on banking77 and clinc150 queries, labelled with stages through the intent map
``pipelines/stage_weak_labels.yaml``: a check from other people's data, outside the project's own writing.

    python benchmarks/stage_weak_check.py models/cx-heads [OTHER_HEADS ...]

Every mapped query of both corpora is scored (26,050 with the shipped map: no cap, unlike
``stage.weak_labels``, which trains on a capped sample). The shipped heads never train on these queries
(``stage.weak_labels: null``). The labels are weak: the map assigns a stage per intent, not per query, and
many banking "how do I" questions are mapped to usage, which the stage head mostly calls none. So the
figures are low in absolute terms and are read only as a comparison between heads over the same encoder.
Awareness and support get no query from the map; both score 0 for every head, which lowers every macro-F1
alike. Embeddings come from the training cache (``~/.cache/cxnlp/embeddings``, fp32).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from cxnlp import corpora
    from cxnlp.evaluate import multilabel_metrics, predict_stages
    from cxnlp.journey import StageModel
    from cxnlp.models import Heads
    from cxnlp.train import embed_cached

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("heads", nargs="+", help="heads folders (trained over the same encoder)")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--map", default=str(ROOT / "pipelines" / "stage_weak_labels.yaml"))
    args = ap.parse_args()
    weak = corpora.weak_stage_labels(Path(args.data_dir), Path(args.map), 10**9, 0)
    for folder in args.heads:
        heads = Heads.load(folder)
        model = StageModel(heads)
        names = [*model.stage_ids, "none"]
        encoder = heads.encoder
        pred = predict_stages(weak.texts, model, lambda t, e=encoder: embed_cached(t, e, "cpu"), "text")
        m = multilabel_metrics(weak.labels, [p or ["none"] for p in pred], names)
        per_label = ", ".join(f"{k} {v['f1']:.3f}" for k, v in m["per_label"].items() if v["support"])
        print(
            f"{folder} ({heads.version}): n={m['n']}, macro-F1 {m['macro_f1']:.3f}, micro-F1 {m['micro_f1']:.3f}"
        )
        print(f"  F1 of the labels with queries: {per_label}")


if __name__ == "__main__":
    main()
