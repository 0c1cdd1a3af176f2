"""WER normalisation keeps Devanagari words whole (issue 17, part 6).

The Open ASR Leaderboard's English-style normaliser replaces every mark (Unicode category M) with a space, which
cuts Hindi words apart at their matras, viramas and nuktas and inflates the word count. core.wer.normalize must
remove only punctuation (the danda included) and leave combining marks where they are."""
import unicodedata

import pytest

from core.wer import normalize, scores

# word -> the combining marks it carries
WORDS = {
    "किताब": "matra ि and ा",
    "पढ़ाई": "nukta ़ (ड + ़) and matras",
    "क्या": "virama ्",
    "स्कूल": "virama ् and matra ू",
    "ज़रूर": "nukta ़ and matra ू",
    "हूँ": "matra ू and candrabindu ँ",
    "दुःख": "matra ु and visarga ः",
    "फ़िल्म": "nukta, matra and virama",
}


def _marks(word: str) -> list[str]:
    return [ch for ch in word if unicodedata.category(ch).startswith("M")]


def test_every_test_word_carries_a_combining_mark():
    # else the tests below could not catch a normaliser that splits at marks
    for word in WORDS:
        assert _marks(word), word


@pytest.mark.parametrize("word", list(WORDS))
def test_no_word_is_split_at_a_combining_mark(word):
    out = normalize(word)
    assert out.split() == [unicodedata.normalize("NFC", word)]
    assert _marks(out) == _marks(unicodedata.normalize("NFC", word))  # every mark kept, in place


def test_sentence_keeps_its_word_count_and_drops_the_danda():
    sentence = "मैं " + " ".join(WORDS) + "।"
    out = normalize(sentence)
    assert out.split() == ["मैं", *[unicodedata.normalize("NFC", w) for w in WORDS]]
    assert "।" not in out


@pytest.mark.parametrize("text, expected", [
    ("घर जाओ।", "घर जाओ"),                    # the danda at the end of a sentence
    ("घर जाओ।फिर आओ॥", "घर जाओ फिर आओ"),      # danda with no space after it: the sentences still part
    ("हाँ, ज़रूर! क्या?", "हाँ ज़रूर क्या"),     # Latin punctuation beside Devanagari
    ("“स्कूल” (नया)", "स्कूल नया"),              # quotes and brackets
])
def test_danda_and_punctuation(text, expected):
    assert normalize(text) == unicodedata.normalize("NFC", expected)


def test_nukta_spellings_compare_equal():
    # ज़ precomposed (U+095B) and ज + nukta (U+091C U+093C) are one letter: no word error between them
    assert scores(["\u095Bरूर है"], ["\u091C\u093Cरूर है।"])["wer"] == 0.0


def test_one_matra_error_is_one_word_error():
    ref = "मैं किताब पढ़ रहा हूँ।"
    hyp = "मैं कीताब पढ़ रहा हूँ"     # ि → ी in one word
    s = scores([ref], [hyp])
    assert s["wer"] == pytest.approx(1 / 5)   # five words, one substituted: the word was not split
    assert 0 < s["cer"] < s["wer"]
