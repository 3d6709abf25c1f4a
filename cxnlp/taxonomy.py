"""Journey-stage taxonomies: stage ids in journey order, each with a description and examples.

The default taxonomy lives in ``cxnlp/taxonomies/default.yaml``; a user replaces it with their own
YAML file (``journey.taxonomy: path/to/stages.yaml``) with the same shape::

    name: my-journey
    stages:
      - id: delivery
        description: Getting the product to the customer.
        examples: ["my parcel arrived broken", ...]   # at least 5
    none_examples: ["hi", ...]                         # optional: text that is no stage
    mixed_examples:                                    # optional: text that speaks of several stages
      - text: "ordered Monday, the courier lost it and chat was useless"
        stages: [delivery, support]
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ConfigError, Errors

TAXONOMY_DIR = Path(__file__).resolve().parent / "taxonomies"
MIN_EXAMPLES = 5
_ID = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclass(frozen=True)
class Stage:
    id: str
    description: str
    examples: tuple[str, ...]
    label: str = ""

    @property
    def description_phrases(self) -> list[str]:
        """The description as short texts a few-shot stage head can train on: the whole description, and
        when it reads "summary: item, item, ...", the summary and each item (a leading "and"/"or" dropped).
        For "Getting the product to the customer: shipping, couriers, tracking." that is the description,
        "Getting the product to the customer", "shipping", "couriers" and "tracking"."""
        text = " ".join(self.description.split())
        if not text:
            return []
        out = [text]
        head, colon, rest = text.partition(":")
        if colon:
            out.append(head.strip())
            for item in re.split(r"[,;]", rest):
                item = re.sub(r"^(?:and|or)\s+", "", item.strip(" .!?"), flags=re.IGNORECASE)
                out.append(item)
        return list(dict.fromkeys(p for p in out if p))


@dataclass(frozen=True)
class Taxonomy:
    name: str
    stages: tuple[Stage, ...]
    none_examples: tuple[str, ...] = field(default=())
    source: str = ""
    mixed_examples: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    @property
    def labelled(self) -> list[tuple[str, tuple[str, ...]]]:
        """Every example with its labels, in one fixed order (each stage's examples, the none examples,
        the mixed examples): the order that fixes cross-validation folds and the encoder's held-out fold."""
        out = [(t, (s.id,)) for s in self.stages for t in s.examples]
        out += [(t, ("none",)) for t in self.none_examples]
        return out + list(self.mixed_examples)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.stages]

    def order(self, stage: str) -> int:
        return self.ids.index(stage)

    @property
    def hash(self) -> str:
        """Content hash: a trained stage head is valid for exactly this taxonomy."""
        content: dict[str, object] = {
            "stages": [[s.id, s.description, list(s.examples)] for s in self.stages],
            "none": list(self.none_examples),
        }
        if self.mixed_examples:  # absent from the hash when empty, so older taxonomies keep theirs
            content["mixed"] = [[t, list(ls)] for t, ls in self.mixed_examples]
        payload = json.dumps(
            content,
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def load_taxonomy(name_or_path: str = "default") -> Taxonomy:
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        candidate = TAXONOMY_DIR / f"{name_or_path}.yaml"
        if not candidate.is_file():
            known = sorted(p.stem for p in TAXONOMY_DIR.glob("*.yaml"))
            raise ConfigError(
                Errors.E204,
                path=name_or_path,
                problem=f"no such file, and not one of the packaged taxonomies ({', '.join(known)})",
            )
        path = candidate
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(Errors.E204, path=str(path), problem=str(exc).splitlines()[0]) from exc
    return parse_taxonomy(data, str(path))


def parse_taxonomy(data: object, source: str = "<dict>") -> Taxonomy:
    def bad(problem: str) -> ConfigError:
        return ConfigError(Errors.E204, path=source, problem=problem)

    if not isinstance(data, dict) or not isinstance(data.get("stages"), list) or not data["stages"]:
        raise bad("expected a mapping with a non-empty 'stages' list")
    keys = ["name", "version", "description", "stages", "none_examples", "mixed_examples"]
    unknown = set(data) - set(keys)
    if unknown:
        raise bad(f"unknown top-level keys {sorted(unknown)}; valid: {', '.join(keys)}")
    stages: list[Stage] = []
    for i, item in enumerate(data["stages"], start=1):
        if not isinstance(item, dict) or "id" not in item:
            raise bad(f"stage #{i} must be a mapping with an 'id'")
        sid = str(item["id"])
        if not _ID.match(sid) or sid == "none":
            raise bad(f"stage id '{sid}' must be lowercase letters, digits or _ (and not 'none')")
        if sid in {s.id for s in stages}:
            raise bad(f"stage id '{sid}' appears twice")
        examples = item.get("examples") or []
        if not isinstance(examples, list) or not all(isinstance(e, str) and e.strip() for e in examples):
            raise bad(f"stage '{sid}': examples must be a list of non-empty strings")
        if len(examples) < MIN_EXAMPLES:
            raise bad(f"stage '{sid}' has {len(examples)} examples; give at least {MIN_EXAMPLES}")
        stages.append(
            Stage(
                sid,
                str(item.get("description", "")).strip(),
                tuple(e.strip() for e in examples),
                str(item.get("label", sid.title())),
            )
        )
    none = data.get("none_examples") or []
    if not isinstance(none, list) or not all(isinstance(e, str) for e in none):
        raise bad("none_examples must be a list of strings")
    return Taxonomy(
        str(data.get("name", Path(source).stem)),
        tuple(stages),
        tuple(e.strip() for e in none if e.strip()),
        source,
        _mixed(data.get("mixed_examples") or [], [s.id for s in stages], bad),
    )


def _mixed(items: object, ids: list[str], bad) -> tuple[tuple[str, tuple[str, ...]], ...]:  # type: ignore[no-untyped-def]
    """``mixed_examples``: texts that speak of several stages, each with its stage ids (journey order)."""
    if not isinstance(items, list):
        raise bad("mixed_examples must be a list of {text, stages} mappings")
    out: list[tuple[str, tuple[str, ...]]] = []
    for i, item in enumerate(items, start=1):
        text = item.get("text") if isinstance(item, dict) else None
        stages = item.get("stages") if isinstance(item, dict) else None
        if not isinstance(text, str) or not text.strip() or not isinstance(stages, list) or not stages:
            raise bad(f"mixed example #{i} must be a mapping with a non-empty 'text' and a 'stages' list")
        wrong = [str(s) for s in stages if s not in ids]
        if wrong:
            raise bad(f"mixed example #{i} names unknown stages {wrong}; known: {', '.join(ids)}")
        out.append((text.strip(), tuple(sorted(set(stages), key=ids.index))))
    return tuple(out)
