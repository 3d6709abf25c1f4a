"""Encoder recipes trained side by side on one GPU, heads over each, ranked on dev and out-of-fold figures.

How cx-encoder 3.0.0 was chosen (session 10, one H100; ``models/cx-encoder/README.md``). Each recipe is a
list of ``--set`` overrides of ``pipelines/train-encoder.yaml`` (those written ``heads:key=value``
override ``pipelines/train-heads.yaml`` for that recipe's heads); all of them start at once (a fine-tune
of MiniLM-L6 leaves most of an H100 idle, so two or three share it at about 3,000 examples/s each). When
a recipe's encoder is written, ``pipelines/train-heads.yaml`` trains heads over it (``--device`` too), and
the stage test set is scored for the record. The ranking adds SST-2 dev accuracy, GoEmotions 28-label
macro-F1 (held-out half), TweetEval 5-fold macro-F1 and the stage head's out-of-fold macro-F1: never the
stage test set. The two best encoders and their heads are tarred and split into 15 MB pieces under OUT.

    OUT=/tmp/out python benchmarks/gpu_train_sweep.py \\
        '{"A": ["preserve=1.0", "epochs=6"], "E": ["preserve=0.4", "epochs=6", "task_weights.emotion=5"]}'

Environment: ``DEVICE`` (cuda), ``DEADLINES`` (seconds after start at which unfinished encoders, then
heads, are killed: "450,560"), ``WORK`` (.gpu/out), ``HEADS_SET`` (``key=value`` overrides of the heads
config, e.g. for a smoke run on a small ``data_dir``). On a bare GPU host, ``benchmarks/gpu_train_kit.sh``
builds what it lacks (pydantic, VADER, the base encoder in fp16, the shim) and says how to unpack it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def heads(encoder: str, out: str, device: str, *sets: str) -> None:
    """Heads over one encoder, then the stage test set scored per text (the per-segment figure needs
    spaCy); writes OUT/summary.json."""
    sys.path.insert(0, str(ROOT))
    from cxnlp.config import _merge, parse_overrides
    from cxnlp.models import Heads
    from cxnlp.train import _eval_sentiment_file, _eval_stage_file, load_train_config, train

    t0 = time.time()
    overrides = {"encoder": encoder, "device": device, "stage_eval_file": None}
    overrides = _merge(overrides, parse_overrides([*os.environ.get("HEADS_SET", "").split(), *sets]))
    cfg = load_train_config(ROOT / "pipelines" / "train-heads.yaml", overrides)
    train(cfg, out)
    model = Heads.load(out)
    cfg = cfg.model_copy(update={"stage_eval_file": "data/eval/stages.jsonl"})
    path = Path(out) / "metrics.json"
    m = json.loads(path.read_text())
    m["metrics"]["stage"]["stage_eval_set"] = _eval_stage_file(model, cfg)
    m["metrics"]["sentiment"]["stage_eval_set"] = _eval_sentiment_file(model, cfg)
    path.write_text(json.dumps(m, indent=2) + "\n")
    s, e, st = m["metrics"]["sentiment"], m["metrics"]["emotion"], m["metrics"]["stage"]
    summary = {
        "sst2": s["sst2_dev"]["accuracy"],
        "tweeteval_f1": s["cv"]["tweeteval_val"]["macro_f1"],
        "tweeteval_vader_points": s["vader_baseline"]["tweeteval_val_cv"]["difference_points"],
        "cx_sent": s["stage_eval_set"]["macro_f1"],
        "goemo_group": s["goemotions_group_dev_half"]["macro_f1"],
        "uci": s["cv"]["uci_sentences"]["macro_f1"],
        "emotion28": e["goemotions_dev_half"]["macro_f1"],
        "stage_cv": st["taxonomy_cv"]["macro_f1"],
        "stage_test": st["stage_eval_set"]["macro_f1"],
        "seconds": round(time.time() - t0, 1),
    }
    (Path(out) / "summary.json").write_text(json.dumps(summary, indent=2))
    print("SUMMARY", out, json.dumps(summary), flush=True)


def sweep(recipes: dict[str, list[str]]) -> None:
    t0 = time.time()
    out = Path(os.environ["OUT"])
    work = Path(os.environ.get("WORK", ".gpu/out"))
    work.mkdir(parents=True, exist_ok=True)
    device = os.environ.get("DEVICE", "cuda")
    end_train, end_heads = (float(x) for x in os.environ.get("DEADLINES", "450,560").split(","))
    env = {**os.environ, "OMP_NUM_THREADS": "4", "PYTHONUNBUFFERED": "1"}

    def log(*msg: object) -> None:
        print(f"[{time.time() - t0:5.0f}s]", *msg, flush=True)

    def launch(cmd: list[str], name: str) -> subprocess.Popen:
        return subprocess.Popen(
            cmd, stdout=open(work / f"{name}.log", "w"), stderr=subprocess.STDOUT, env=env
        )

    encoders = {}
    head_sets = {
        n: [s[len("heads:") :] for s in sets if s.startswith("heads:")] for n, sets in recipes.items()
    }
    for name, sets in recipes.items():
        sets = [s for s in sets if not s.startswith("heads:")]
        cmd = [sys.executable, "-m", "cxnlp.cli", "train", "pipelines/train-encoder.yaml", "-o"]
        cmd += [str(work / f"enc-{name}")] + [a for s in [f"device={device}", *sets] for a in ("--set", s)]
        encoders[name] = launch(cmd, f"enc-{name}")
        log("encoder", name, *sets)
    running: dict[str, subprocess.Popen | None] = {}
    while True:
        now = time.time() - t0
        for name, p in encoders.items():
            if p.poll() is not None and name not in running:
                log("encoder", name, "exit", p.returncode)
                running[name] = None
                if p.returncode == 0:
                    enc, dst = str(work / f"enc-{name}"), str(work / f"heads-{name}")
                    running[name] = launch(
                        [sys.executable, __file__, "--heads", enc, dst, device, *head_sets[name]],
                        f"heads-{name}",
                    )
            elif p.poll() is None and now > end_train:
                p.kill()
                log("killed encoder", name)
        alive = [p for p in [*encoders.values(), *running.values()] if p is not None and p.poll() is None]
        if now > end_heads:
            for p in alive:
                p.kill()
            log("killed", len(alive), "runs at the deadline")
            break
        if not alive and len(running) == len(encoders):
            break
        time.sleep(2)

    summaries = {
        n: json.loads((work / f"heads-{n}" / "summary.json").read_text())
        for n in recipes
        if (work / f"heads-{n}" / "summary.json").is_file()
    }
    score = {n: s["sst2"] + s["emotion28"] + s["tweeteval_f1"] + s["stage_cv"] for n, s in summaries.items()}
    ranked = sorted(score, key=score.__getitem__, reverse=True)
    log("summaries", json.dumps(summaries, indent=1))
    log("ranked", ranked, score)
    (out / "summaries.json").write_text(
        json.dumps({"summaries": summaries, "score": score, "ranked": ranked})
    )
    with tarfile.open(out / "logs.tar.xz", "w:xz") as tf:
        for f in [*work.glob("*.log"), *work.glob("*-*/*.json"), *work.glob("heads-*/README.md")]:
            tf.add(f, arcname=str(f.relative_to(work)))
    with tarfile.open(work / "models.tar", "w") as tf:
        for n in ranked[:2]:
            for d in (work / f"enc-{n}", work / f"heads-{n}"):
                tf.add(d, arcname=d.name)
    subprocess.run(
        ["split", "-b", "15M", "-d", str(work / "models.tar"), str(out / "models.tar.")], check=True
    )
    log("done; back:", sorted(p.name for p in out.iterdir()))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--heads"]:
        heads(*sys.argv[2:])
    else:
        sweep(json.loads(sys.argv[1]))
