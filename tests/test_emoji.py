"""Emoji as their names (cxnlp.emoji), an input form that an encoder records and every caller honours."""

from __future__ import annotations

import numpy as np
import pytest

from cxnlp.emoji import EMOJI_NAMES, TEXT, describe_emoji, emoji_names, model_inputs


def words(text: str) -> str:
    return " ".join(describe_emoji(text).split())


def test_emoji_are_named_from_vaders_lexicon():
    names, longest = emoji_names()
    assert len(names) > 3000 and longest >= 7  # VADER's emoji_utf8_lexicon.txt: sequences as well
    assert words("great 😡") == "great pouting face"
    assert words("lol😂 ok") == "lol face with tears of joy ok"
    assert words("✨new✨") == "sparkles new sparkles"


def test_sequences_are_one_emoji_and_modifiers_are_dropped():
    assert words("👍🏽 thanks") == "thumbs up thanks"  # the skin tone qualifies, it is not a word
    assert words("❤️ it") == "red heart it"  # the presentation selector goes with its heart
    family = "👨\u200d👩\u200d👧"
    assert words(f"{family} trip") == "family trip"  # one ZWJ sequence, not man woman girl
    assert words("🇬🇧 shipping") == "United Kingdom shipping"  # two regional indicators: one flag
    assert words("🏻") == ""  # a stray modifier is dropped


def test_repeats_are_named_once_and_other_text_is_untouched():
    assert words("😂😂😂") == "face with tears of joy"
    assert words("😂😭😂") == "face with tears of joy loudly crying face face with tears of joy"
    for text in ("plain ascii :)", "Acme™ → © 2026", "日本語のテキスト", "Café crème", "1️⃣ first"):
        assert describe_emoji(text) == text
    unknown = "\U0001faf6"  # not in the lexicon: left for the tokenizer
    assert unknown in describe_emoji(f"{unknown} thanks")
    assert model_inputs(["a 👍", "b"], EMOJI_NAMES) == [describe_emoji("a 👍"), "b"]
    assert model_inputs(["a 👍", "b"], TEXT) == ["a 👍", "b"]
    with pytest.raises(ValueError, match="unknown encoder input form 'emoji-names-9'"):
        model_inputs(["a"], "emoji-names-9")


def _delta_with_form(tmp_path, form):
    """A copy of the shipped cx-encoder folder whose encoder.json records ``form``."""
    import json
    import shutil

    from tests.conftest import ROOT

    folder = tmp_path / f"enc-{form}"
    shutil.copytree(ROOT / "models" / "cx-encoder", folder)
    meta = json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
    (folder / "encoder.json").write_text(json.dumps({**meta, "input_form": form}), encoding="utf-8")
    return folder


def test_the_encoder_reads_the_form_it_records(tmp_path):
    """cx-encoder 3.0.0 records no form: it reads the text, so two emoji are one [UNK] to it. An encoder
    that records emoji-names-1 is given the names by encode and by the workers' pretokenize alike."""
    from cxnlp import models

    texts = ["great 😡", "great 👏", "great pouting face", "great clapping hands"]
    assert models.encoder_input_form("cx-encoder") == TEXT
    assert models.encoder_input_form("packaged:all-MiniLM-L6-v2") == TEXT
    shipped = models.encode(models.load_encoder("cx-encoder", "cpu", "torch"), texts)
    assert np.allclose(shipped[0], shipped[1], atol=1e-5)  # great [UNK], twice

    named = str(_delta_with_form(tmp_path, EMOJI_NAMES))
    assert models.encoder_input_form(named) == EMOJI_NAMES
    model = models.load_encoder(named, "cpu", "torch")
    emb = models.encode(model, texts)
    assert float(emb[0] @ emb[1]) < 0.95
    assert np.allclose(emb[0], emb[2], atol=1e-5) and np.allclose(emb[1], emb[3], atol=1e-5)
    tokens = models.pretokenize(texts[:2], named, 256)
    o = tokens["token_offsets"]
    angry, clap = (tokens["token_ids"][o[i] : o[i + 1]].tolist() for i in range(2))
    assert angry != clap and 100 not in angry + clap  # 100: [UNK]
    ours = models.encode_pretokenized(model, tokens["token_ids"], tokens["token_offsets"])
    assert np.abs(ours - emb[:2]).max() < 1e-5


def test_an_unknown_input_form_is_refused_with_e217(tmp_path):
    from cxnlp import models
    from cxnlp.errors import ModelError

    folder = str(_delta_with_form(tmp_path, "emoji-names-9"))
    with pytest.raises(ModelError, match=r"E217.*input form 'emoji-names-9'.*known: text, emoji-names-1"):
        models.encoder_input_form(folder)
