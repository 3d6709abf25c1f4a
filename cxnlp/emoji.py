"""Emoji as words for the encoder: an input form an encoder may be trained to read.

MiniLM's WordPiece vocabulary (BERT's, uncased) has no emoji: "great 😡" and "great 👏" both reach the
encoder as ``great [UNK]``. Real feedback (tweets, app-store reviews, chat tickets) carries much of its
feeling in emoji. The ``emoji-names-1`` form replaces every emoji by its CLDR short name ("face with tears
of joy", "pouting face", "thumbs up") before tokenising, read from the emoji lexicon that vaderSentiment
ships (``emoji_utf8_lexicon.txt``, 3,570 emoji and sequences; nothing downloaded):

- sequences are matched longest first: flags, keycaps, skin tones and zero-width-joiner families are one
  emoji each; a skin-tone modifier, joiner or presentation selector left over is dropped;
- the same emoji repeated ("😂😂😂") is named once: the names are several words each, and a wall of
  repeats would crowd out the text within the encoder's 128 tokens;
- only pictographs are named (U+1F000-1FAFF, U+2300-23FF, U+2600-27BF, U+2B00-2BFF and their
  sequences). ©, ™, arrows and CJK text are left as they are.

The form belongs to the encoder, not to a run: a fine-tune with ``emoji: names``
(``pipelines/train-encoder.yaml``) records ``input_form`` in its ``encoder.json``, and everything that
feeds that encoder (``cxnlp.models.encode`` and ``pretokenize``, heads training, custom taxonomies) reads
texts in that form, so training and analysis always agree. Every other encoder (cx-encoder 3.0.0, the
packaged base, a hub model) reads the ``text`` as it is. Stored texts, offsets, VADER's features (VADER
reads emoji itself), keyphrases and labels keep the original characters either way.

Why cx-encoder 3.0.0 is not fed names (benchmarks/README.md, "Emoji as words"): with names, its heads
picked the right one of anger, joy, optimism and sadness for 70.7% of TweetEval's 474 emotion tweets with
emoji (never trained on) instead of 61.8%, but on GoEmotions dev's 114 comments with emoji the 28-label
micro-F1 fell from 0.58 to 0.50. Heads over the packaged base encoder, trained and fed either way, show
the same split (tweets 0.61 -> 0.64, comments 0.50 -> 0.44), so it is not only that cx-encoder learned
what ``[UNK]`` means in Reddit comments: a name such as "face with tears of joy" reads as joy where the
raters marked amusement. Whether an encoder fine-tuned on the names learns them in context needs a GPU run.
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

# The encoder input forms (recorded as ``input_form`` in a fine-tuned encoder's encoder.json).
TEXT = "text"  # the text as it is
EMOJI_NAMES = "emoji-names-1"  # emoji replaced by their names (describe_emoji)
INPUT_FORMS = (TEXT, EMOJI_NAMES)

_PICTOGRAPH = "\U0001f000-\U0001faff\u2300-\u23ff\u2600-\u27bf\u2b00-\u2bff"
# Characters that only modify or join pictographs: skin tones, zero-width joiner, variation selectors,
# the keycap mark and the tag characters of subdivision flags.
_JOINERS = "\U0001f3fb-\U0001f3ff\u200d\ufe0e\ufe0f\u20e3\U000e0020-\U000e007f"
_RUN = re.compile(f"[{_PICTOGRAPH}][{_PICTOGRAPH}{_JOINERS}]*")
_DROP = re.compile(f"[{_JOINERS}]")


def _lexicon_path() -> Path:
    spec = importlib.util.find_spec("vaderSentiment")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("vaderSentiment is not installed: pip install 'vaderSentiment>=3.3.2'")
    return Path(next(iter(spec.submodule_search_locations))) / "emoji_utf8_lexicon.txt"


@lru_cache(maxsize=1)
def emoji_names() -> tuple[dict[str, str], int]:
    """Emoji (or sequence) -> short name, and the longest key's length. A name's qualifier after the
    colon ("thumbs up: light skin tone") is dropped, and the bare skin tones name nothing."""
    names: dict[str, str] = {}
    for line in _lexicon_path().read_text(encoding="utf-8").splitlines():
        key, _, name = line.partition("\t")
        if not key or not name or key.isascii():
            continue
        names[key] = "" if _DROP.fullmatch(key) else name.split(":")[0].strip()
    return names, max(map(len, names))


def _name_run(run: str) -> str:
    names, longest = emoji_names()
    words: list[str] = []
    previous = None
    i = 0
    while i < len(run):
        for size in range(min(longest, len(run) - i), 0, -1):
            name = names.get(run[i : i + size])
            if name is not None:
                break
        else:
            size, name = 1, _DROP.sub("", run[i]) or ""
        key = run[i : i + size]
        i += size
        if name and key != previous:
            words.append(name)
        previous = key if name else previous
    return " " + " ".join(words) + " " if words else " "


def describe_emoji(text: str) -> str:
    """``text`` with each emoji replaced by its name (padded with spaces); ASCII text is returned as it is."""
    if text.isascii():
        return text
    return _RUN.sub(lambda m: _name_run(m.group(0)), text)


def model_inputs(texts: list[str], form: str) -> list[str]:
    """What an encoder that reads ``form`` (one of :data:`INPUT_FORMS`) is given for each text (``texts``
    itself for the text form: this runs on every chunk of an analysis)."""
    if form == TEXT:
        return texts
    if form == EMOJI_NAMES:
        return [describe_emoji(t) for t in texts]
    raise ValueError(f"unknown encoder input form {form!r}; known: {', '.join(INPUT_FORMS)}")


def cache_key_part(form: str, sep: str) -> str:
    """``sep + form`` for a cache key, and nothing for the text form: keys made before input forms
    existed (all of them text) stay valid."""
    return "" if form == TEXT else sep + form
