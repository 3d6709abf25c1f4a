"""What the prepare step costs a review on one core, and what of it is spaCy's parse.

    python benchmarks/bench_prepare.py --n 3000

On a GPU host the map phase is bound by the prepare workers (normalize, redact, segment: issue 6), so
its throughput is about (workers / this per-review time). This measures, in one process on one BLAS
thread as a prepare worker runs, on the benchmark corpus (make_corpus.py, seed 0; the first 500
reviews warm up and are not timed):

* ``prepare_chunk`` as a worker runs it, with its steps (normalize, redact, segment);
* spaCy pipelines alone over the same texts: cxnlp's segmentation pipeline (``load_spacy``: tagger,
  parser, cxnlp's attribute ruler, lemmatizer), and cheaper ones that could give sentences without the
  parser, for a design that parses less: the tagger with the ``senter`` component instead of the parser,
  the ``senter`` alone, and the rule-based ``sentencizer`` on the tokenizer alone. Only the first is what
  cxnlp runs; the others cost what they cost, they do not give cxnlp's segments or keyphrases.

Results are appended to benchmarks/results.jsonl with the machine they ran on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analyze import record  # noqa: E402
from make_corpus import make_corpus  # noqa: E402

WARM = 500


def time_prepare(rows: list[dict]) -> dict:
    import json
    import tempfile

    from cxnlp.batch import prepare_chunk
    from cxnlp.config import config_to_dict, load_config
    from cxnlp.io import ReadResult, Record, iter_inputs

    cfg = load_config(None, {})
    with tempfile.TemporaryDirectory() as tmp:  # read as the CLI reads, fields detected
        path = Path(tmp) / "reviews.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        records = [r for r in iter_inputs([str(path)], None, ReadResult()) if isinstance(r, Record)]
    config = config_to_dict(cfg)
    prepare_chunk(records[:WARM], [], config)
    timed = records[WARM:]
    t = time.perf_counter()
    part = prepare_chunk(timed, [], config)
    seconds = time.perf_counter() - t
    n = len(timed)
    return {
        "ms_per_review": round(seconds / n * 1e3, 3),
        "steps_ms_per_review": {k: round(v / n * 1e3, 3) for k, v in part.timings.items()},
        "segments": len(part.segments),
    }


def time_pipelines(texts: list[str], name: str) -> list[dict]:
    import spacy

    from cxnlp.segment import load_spacy, numpy_gemm, one_blas_thread

    meta = load_spacy(name).meta  # the package load_spacy found: ``name`` or its packaged fallback
    package = f"{meta['lang']}_{meta['name']}"

    def variant(exclude: list[str], senter: bool, sentencizer: bool = False):  # type: ignore[no-untyped-def]
        nlp = spacy.load(package, exclude=exclude)
        if senter:
            nlp.enable_pipe("senter")
        if sentencizer:
            nlp.add_pipe("sentencizer")
        return numpy_gemm(nlp)

    pipelines = [
        ("cxnlp's segmentation pipeline (load_spacy)", load_spacy(name)),
        ("tagger + senter, no parser or lemmatizer", variant(["ner", "parser", "lemmatizer"], True)),
        ("senter alone", variant(["ner", "parser", "lemmatizer", "tagger", "attribute_ruler"], True)),
        (
            "tokenizer + rule-based sentencizer",
            variant(
                ["ner", "parser", "lemmatizer", "tagger", "attribute_ruler", "tok2vec", "senter"], False, True
            ),
        ),
    ]
    out = []
    for label, nlp in pipelines:
        with one_blas_thread():
            list(nlp.pipe(texts[:WARM]))
            t = time.perf_counter()
            for _ in nlp.pipe(texts[WARM:], batch_size=256):
                pass
            seconds = time.perf_counter() - t
        out.append(
            {
                "pipeline": label,
                "components": nlp.pipe_names,
                "ms_per_review": round(seconds / (len(texts) - WARM) * 1e3, 3),
            }
        )
        print(f"{out[-1]['ms_per_review']:.3f} ms/review  {label} {nlp.pipe_names}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="reviews timed (after 500 to warm up)")
    ap.add_argument("--spacy-model", default="en_core_web_sm")
    args = ap.parse_args()
    rows = make_corpus(args.n + WARM, seed=0)
    prepare = time_prepare(rows)
    print(
        f"{prepare['ms_per_review']:.3f} ms/review  prepare_chunk {prepare['steps_ms_per_review']}",
        flush=True,
    )
    pipelines = time_pipelines([r["text"] for r in rows], args.spacy_model)
    record("prepare_cost", n=args.n, prepare=prepare, spacy_pipelines=pipelines)


if __name__ == "__main__":
    main()
