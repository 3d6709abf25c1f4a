"""Journey-stage taxonomies: stage ids in journey order, each with a description and examples.

The default taxonomy lives in ``cxnlp/taxonomies/default.yaml``; a user replaces it with their own
YAML file (``journey.taxonomy: path/to/stages.yaml``) with the same shape::

    name: my-journey
    stages:
      - id: delivery
        description: Getting the product to the customer.
        examples: ["my parcel arrived broken", ...]   # at least 5
    none_examples: ["hi", ...]                         # optional: text that is no stage
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


@dataclass(frozen=True)
class Taxonomy:
    name: str
    stages: tuple[Stage, ...]
    none_examples: tuple[str, ...] = field(default=())
    source: str = ""

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.stages]

    def order(self, stage: str) -> int:
        return self.ids.index(stage)

    @property
    def hash(self) -> str:
        """Content hash: a trained stage head is valid for exactly this taxonomy."""
        payload = json.dumps(
            {
                "stages": [[s.id, s.description, list(s.examples)] for s in self.stages],
                "none": list(self.none_examples),
            },
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
    unknown = set(data) - {"name", "version", "description", "stages", "none_examples"}
    if unknown:
        raise bad(
            f"unknown top-level keys {sorted(unknown)}; valid: name, version, description, stages, none_examples"
        )
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
    )
