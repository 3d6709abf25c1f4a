"""Normalise records into the documents table: clean text, typed timestamp, rating and channel.

Text is HTML-unescaped (tags dropped when ``input.strip_html``), NFC-normalised, stripped of control
characters and runs of spaces, and truncated at ``input.max_chars`` on a word boundary (flagged
``truncated``). Segment offsets refer to this normalised text, which is what ``documents.text`` holds.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from .config import InputConfig
from .errors import Errors
from .io import Record, Reject, _reject
from .schema import column_names

# Bounded repeats keep every pattern linear in the text length (a hostile text may be megabytes long).
_TAG = re.compile(r"<\s{0,20}(?:br|p|div|li|tr|h[1-6])\b[^>]{0,200}>|<[^>]{1,200}>", re.I)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u200e\u200f\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_SURROGATES = re.compile("[\ud800-\udfff]")
_ALNUM = re.compile(r"\w", re.UNICODE)
_EPOCH_MS = 10**11
PRECUT = 4

RESERVED = set(column_names("documents"))


def normalize_text(text: str, strip_html: bool = True) -> str:
    text = _SURROGATES.sub("\ufffd", text)
    if "&" in text:
        text = html.unescape(text)
    if strip_html and "<" in text:
        text = _TAG.sub(
            lambda m: (
                "\n"
                if m.group(0)[1:].lstrip().lower().startswith(("br", "p", "div", "li", "tr", "h"))
                else " "
            ),
            text,
        )
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def truncate(text: str, max_chars: int) -> tuple[str, bool]:
    if len(text) <= max_chars:
        return text, False
    cut = text.rfind(" ", int(max_chars * 0.9), max_chars)
    return text[: cut if cut > 0 else max_chars].rstrip(), True


def parse_timestamp(value: Any) -> pd.Timestamp | None:
    """ISO strings, dates, epoch seconds or milliseconds -> UTC timestamp; None when unparseable."""
    if value is None or isinstance(value, (dict, list, tuple, bytes)) or value == "":
        return None
    try:
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            if value != value:  # NaN
                return None
            unit = "ms" if abs(value) >= _EPOCH_MS else "s"
            ts = pd.Timestamp(value, unit=unit, tz="UTC")
        elif isinstance(value, datetime):
            ts = pd.Timestamp(value)
        else:
            s = str(value).strip()
            if re.fullmatch(r"\d{9,13}(\.\d+)?", s):
                return parse_timestamp(float(s))
            ts = pd.Timestamp(s)
        if ts is pd.NaT or pd.isna(ts):
            return None
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        if not (1970 <= ts.year <= 2200):
            return None
        return ts
    except (ValueError, TypeError, OverflowError):
        return None


def parse_rating(value: Any) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        f = float(str(value).strip().split("/")[0]) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f and abs(f) != float("inf") else None


def _extra_value(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        try:
            return _SURROGATES.sub("\ufffd", json.dumps(value, ensure_ascii=False, default=str))
        except (ValueError, RecursionError):
            return "(a value too deeply nested to keep)"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return _SURROGATES.sub("\ufffd", value)
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        return str(value)
    return value


UNDETERMINED = "und"


def detect_language(text: str) -> str:
    """ISO 639-1 code from CLD2 (Compact Language Detector 2, a bundled model), or ``und`` when the text
    is too short or mixed for a reliable answer."""
    import pycld2

    try:
        reliable, _, details = pycld2.detect(text[:2000], bestEffort=False)
    except pycld2.error:
        return UNDETERMINED
    code = details[0][1] if details else "un"
    return code if reliable and code not in ("un", "xxx") else UNDETERMINED


def normalize_records(records: list[Record], config: InputConfig) -> tuple[pd.DataFrame, list[Reject]]:
    """Records -> (documents frame with input columns, rejects for texts with nothing left)."""
    rows: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    extras: dict[str, list[Any]] = {}
    for rec in records:
        data = rec.data
        roles = data["__roles__"]
        raw_text = data[roles["text"]]
        # A very long text is cut before cleaning (cleaning only shortens it), so a megabyte costs no more than a page.
        precut = len(raw_text) > PRECUT * config.max_chars
        if precut:
            raw_text = raw_text[: PRECUT * config.max_chars]
        text, truncated = truncate(normalize_text(raw_text, config.strip_html), config.max_chars)
        truncated = truncated or precut
        if not _ALNUM.search(text):
            clean = {k: v for k, v in data.items() if not k.startswith("__")}
            rejects.append(_reject(rec.source_file, rec.source_line, Errors.R008, clean))
            continue
        flags = []
        if truncated:
            flags.append("truncated")
        created_at = None
        if roles["timestamp"] and data.get(roles["timestamp"]) not in (None, ""):
            created_at = parse_timestamp(data[roles["timestamp"]])
            if created_at is None:
                flags.append("created_at_unparsed")
        rating = None
        if roles["rating"] and data.get(roles["rating"]) not in (None, ""):
            rating = parse_rating(data[roles["rating"]])
            if rating is None:
                flags.append("rating_unparsed")
        if data.get("__id_generated__"):
            flags.append("id_generated")
        channel = _extra_value(data.get(roles["channel"])) if roles["channel"] else None
        row = {
            "doc_id": data["__doc_id__"],
            "text": text,
            "created_at": created_at,
            "rating": rating,
            "channel": None if channel in (None, "") else str(channel),
            "flags": flags,
            "language": detect_language(text),
            "source_file": rec.source_file,
            "source_line": rec.source_line,
        }
        used = {v for v in roles.values() if v}
        for key in data:
            if key in used or key.startswith("__"):
                continue
            name = f"input_{key}" if key in RESERVED else key
            extras.setdefault(name, [None] * len(rows))
        for name, column in extras.items():
            key = name[6:] if name.startswith("input_") and name[6:] in RESERVED else name
            column.append(_extra_value(data.get(key)) if key not in used else None)
        rows.append(row)
    docs = pd.DataFrame(
        rows,
        columns=[
            "doc_id",
            "text",
            "created_at",
            "rating",
            "channel",
            "flags",
            "source_file",
            "source_line",
            "language",
        ],
    )
    docs["created_at"] = pd.to_datetime(docs["created_at"], utc=True)
    docs["rating"] = docs["rating"].astype("float64")
    for name, column in extras.items():
        docs[name] = _uniform(column)
    return docs, rejects


def _uniform(values: list[Any]) -> list[Any]:
    """Keep a column's values if they share one scalar type; otherwise write them all as text."""
    kinds = {type(v) for v in values if v is not None}
    if len(kinds) <= 1 or kinds <= {int, float}:
        return values
    return [None if v is None else str(v) for v in values]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
