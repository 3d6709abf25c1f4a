"""Generate N synthetic reviews with realistic lengths and stage mix, from the sample reviews' sentences.

    python benchmarks/make_corpus.py --n 10000 -o benchmarks/data/reviews-10k.jsonl

Each review recombines 1-8 sentences drawn from data/samples/reviews.jsonl (a length distribution close
to the samples'), with a rating, a channel and a timestamp over ten weeks. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_SPLIT = re.compile(r"(?<=[.!?])\s+")


def make_corpus(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    samples = [
        json.loads(l)
        for l in (ROOT / "data/samples/reviews.jsonl").read_text(encoding="utf-8").splitlines()
        if l.strip()
    ]
    lengths = [len(_SPLIT.split(s["text"])) for s in samples]
    by_rating: dict[int, list[str]] = {}
    for s in samples:
        by_rating.setdefault(int(s["rating"]), []).extend(_SPLIT.split(s["text"]))
    channels = ["app_store", "google_play", "trustpilot", "website", "email_survey"]
    out = []
    for i in range(n):
        rating = rng.choices([1, 2, 3, 4, 5], weights=[12, 18, 14, 30, 26])[0]
        k = rng.choice(lengths)
        pool = by_rating[rating] + by_rating.get(rating + 1, []) + by_rating.get(rating - 1, [])
        text = " ".join(rng.choice(pool) for _ in range(k))
        day = rng.randrange(70)
        out.append(
            {
                "review_id": f"BR-{i:07d}",
                "created_at": f"2026-{9 + (day // 30):02d}-{day % 30 + 1:02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z",
                "rating": rating,
                "channel": rng.choice(channels),
                "text": text,
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", encoding="utf-8") as fh:
        for row in make_corpus(args.n, args.seed):
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(args.output)


if __name__ == "__main__":
    main()
