"""Typed, validated configuration.

A pipeline config is a YAML file in ``pipelines/`` (``default.yaml`` when none is given); every key is
commented there. Unknown keys are rejected with a suggestion; CLI overrides use dotted keys
(``--set cluster.min_cluster_size=5``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError, Errors, did_you_mean

PIPELINES_DIR = Path(__file__).resolve().parent.parent / "pipelines"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FieldsConfig(_Section):
    text: str | None = None
    id: str | None = None
    timestamp: str | None = None
    rating: str | None = None
    channel: str | None = None


class InputConfig(_Section):
    fields: FieldsConfig = FieldsConfig()
    max_chars: int = Field(20_000, ge=100)
    strip_html: bool = True
    max_rejects: float | None = Field(None, ge=0)

    @field_validator("max_rejects")
    @classmethod
    def _count_or_fraction(cls, value: float | None) -> float | None:
        if value is not None and value >= 1 and value != int(value):
            raise ValueError("use a whole number of records (e.g. 100) or a fraction below 1 (e.g. 0.05)")
        return value

    def reject_limit(self, read: int) -> int | None:
        """How many rejects ``max_rejects`` allows for ``read`` records (None: no limit)."""
        if self.max_rejects is None:
            return None
        if 0 < self.max_rejects < 1:
            return int(self.max_rejects * read)
        return int(self.max_rejects)


class SegmentConfig(_Section):
    spacy_model: str = "en_core_web_sm"
    split_contrastive: bool = True
    min_clause_tokens: int = Field(2, ge=1)
    max_segment_chars: int = Field(600, ge=50)
    batch_size: int = Field(256, ge=1)
    n_process: int = Field(1, ge=1)


class ModelsConfig(_Section):
    heads: str = "cx-heads"
    encoder: str | None = None
    batch_size: int = Field(128, ge=1)
    backend: Literal["auto", "torch", "onnx", "torch-bf16"] = "auto"
    quantize: Literal["none", "int8", "int8-static"] = "none"


class JourneyConfig(_Section):
    taxonomy: str = "default"
    threshold: float | None = Field(None, gt=0, lt=1)


class ClusterConfig(_Section):
    enabled: bool = True
    scope: Literal["negative", "all"] = "negative"
    min_segments: int = Field(6, ge=2)
    min_cluster_size: int | None = Field(None, ge=2)
    min_samples: int | None = Field(None, ge=1)
    reduce_dims: int = Field(15, ge=2)
    selection: Literal["leaf", "eom"] = "leaf"
    backend: Literal["hdbscan", "sklearn"] = "hdbscan"
    fit_sample: int = Field(10_000, ge=100)
    assign_threshold: float = Field(0.5, ge=0, le=1)
    refine_iterations: int = Field(3, ge=0, le=20)
    n_quotes: int = Field(3, ge=1, le=10)
    match_threshold: float = Field(0.8, ge=0, le=1)
    change_ratio: float = Field(0.25, ge=0)
    workers: int = Field(0, ge=0)


class ReportConfig(_Section):
    html: bool = True
    markdown: bool = True
    verbatims: int = Field(3, ge=0, le=20)
    top_pain_points: int = Field(5, ge=1, le=20)


RedactType = Literal["email", "phone", "card", "iban", "ip", "url"]


def _all_redact_types() -> list[RedactType]:
    return ["email", "phone", "card", "iban", "ip", "url"]


class RedactConfig(_Section):
    enabled: bool = True
    types: list[RedactType] = Field(default_factory=_all_redact_types)
    person_names: bool = True
    keep: list[str] = Field(default_factory=list)


class BatchConfig(_Section):
    chunk_size: int = Field(5000, ge=1)
    engine: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    ray_actors: int = Field(1, ge=1)
    ray_gpus_per_actor: float = Field(0, ge=0)
    ray_cpus_per_actor: float = Field(1, gt=0)
    workers: int | None = Field(None, ge=0)


class OutputConfig(_Section):
    format: Literal["parquet", "csv", "duckdb"] = "parquet"


class Config(_Section):
    seed: int = 0
    input: InputConfig = InputConfig()
    segment: SegmentConfig = SegmentConfig()
    models: ModelsConfig = ModelsConfig()
    journey: JourneyConfig = JourneyConfig()
    cluster: ClusterConfig = ClusterConfig()
    report: ReportConfig = ReportConfig()
    output: OutputConfig = OutputConfig()
    redact: RedactConfig = RedactConfig()
    batch: BatchConfig = BatchConfig()


def _check_keys(data: dict[str, Any], model: type[BaseModel], section: str, source: str) -> None:
    fields = model.model_fields
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                Errors.E001,
                key=key,
                section=section or "(top level)",
                suggestion=did_you_mean(key, fields),
                valid=", ".join(fields),
            )
        annotation = fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if not isinstance(value, dict):
                raise ConfigError(
                    Errors.E002, key=_join(section, key), problem="expected a section", source=source
                )
            _check_keys(value, annotation, _join(section, key), source)


def _join(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["cluster.scope=all"]`` -> ``{"cluster": {"scope": "all"}}``; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(Errors.E004, override=item)
        value = yaml.safe_load(raw) if raw.strip() else None
        node = nested
        parts = key.strip().lstrip("-").split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | list[str] | tuple[str, ...] | None = None,
) -> Config:
    """Read a pipeline YAML (or the packaged defaults), apply overrides, validate."""
    data: dict[str, Any] = {}
    source = "the defaults"
    if path is not None:
        p = Path(path)
        if not p.exists() and (PIPELINES_DIR / f"{path}.yaml").exists():
            p = PIPELINES_DIR / f"{path}.yaml"
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(Errors.E003, path=str(p), problem=str(exc).splitlines()[0]) from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(Errors.E003, path=str(p), problem="the top level must be a mapping")
        data = loaded or {}
        source = str(p)
    if overrides:
        if not isinstance(overrides, dict):
            overrides = parse_overrides(overrides)
        data = _merge(data, overrides)
        source += " or the --set overrides"
    _check_keys(data, Config, "", source)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        raise ConfigError(Errors.E002, key=key, problem=err["msg"], source=source) from exc


def config_to_dict(config: Config) -> dict[str, Any]:
    return config.model_dump(mode="json")
