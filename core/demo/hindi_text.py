"""Hindi (Devanagari) text source for the synthetic-speech demo model: word lists and sentence templates.

Everything the demo model is trained and tested on is composed here, deterministically from a seed:

* ``TRAIN_TEMPLATES`` produce the training corpus (``training_sentences``);
* ``HELDOUT_TEMPLATES`` are never used in training: the held-out test set (``heldout_sentences``) is built
  from them only, and any sentence that also occurs in the training corpus is dropped, so test sentences
  are new sentence structures and new word combinations over the same vocabulary of words.

A slot is written ``{NAME}`` and filled with a random item of ``WORDS[NAME]``. Text is written in NFC;
``normalize`` is the scoring normalisation (NFC, punctuation incl. the danda removed, whitespace collapsed).
"""
from __future__ import annotations

import random
import re
import unicodedata

WORDS: dict[str, list[str]] = {
    # people
    "NM": ["राम", "मोहन", "अमित", "रवि", "सुरेश", "विकास", "अर्जुन", "राहुल", "करण", "दीपक", "मनोज", "संजय",
           "आदित्य", "गोपाल", "हरीश", "प्रकाश", "विजय", "अनिल", "सोहन", "कमल", "रोहित", "नितिन", "अजय", "महेश"],
    "NF": ["सीता", "गीता", "प्रिया", "अनीता", "सुनीता", "पूजा", "नेहा", "रीना", "कविता", "मीना", "आशा", "लता",
           "राधा", "सरिता", "ममता", "दीपा", "रेखा", "उषा", "किरण", "अंजलि", "शालिनी", "स्नेहा", "निशा", "सुमन"],
    "RELM": ["पिता जी", "दादा जी", "नाना जी", "चाचा", "मामा", "भाई साहब", "ताऊ जी", "मौसा जी"],
    "RELF": ["माँ", "दादी", "नानी", "चाची", "मौसी", "बुआ", "बहन", "भाभी"],
    "PROF": ["डॉक्टर", "किसान", "शिक्षक", "ड्राइवर", "दुकानदार", "पुलिस वाला", "डाकिया", "वकील", "इंजीनियर",
             "मज़दूर", "दर्ज़ी", "माली", "रसोइया", "पत्रकार"],
    # places
    "CITY": ["दिल्ली", "मुंबई", "जयपुर", "लखनऊ", "पटना", "भोपाल", "इंदौर", "कानपुर", "आगरा", "वाराणसी", "नागपुर",
             "पुणे", "चेन्नई", "कोलकाता", "अमृतसर", "शिमला", "देहरादून", "रांची", "उदयपुर", "गोवा", "मथुरा",
             "प्रयागराज", "हैदराबाद", "अहमदाबाद"],
    "PLACE": ["बाज़ार", "स्कूल", "दफ़्तर", "अस्पताल", "मंदिर", "स्टेशन", "गाँव", "डाकघर", "बैंक", "मेला", "पुस्तकालय",
              "कॉलेज", "खेत", "सिनेमा", "होटल", "मैदान"],
    "IN": ["बगीचे", "कमरे", "जंगल", "खेत", "आँगन", "तालाब", "पहाड़", "घर", "रसोई", "छत"],
    "BUILD": ["स्कूल", "अस्पताल", "पुल", "बाज़ार", "पार्क", "पुस्तकालय", "होटल", "स्टेशन"],
    # things
    "FOOD": ["चाय", "दाल", "खीर", "बिरयानी", "पनीर", "समोसा", "जलेबी", "दही", "रोटी", "पूरी", "लस्सी", "पोहा",
             "इडली", "हलवा", "पराठा", "कचौरी", "राजमा", "छोले", "खिचड़ी", "आइसक्रीम"],
    "FRUIT": ["केले", "आम", "सेब", "संतरे", "अमरूद", "अंडे", "टमाटर", "नारियल", "पपीते", "अंगूर", "नींबू"],
    "GROCERY": ["आलू", "प्याज़", "चावल", "आटा", "चीनी", "गेहूँ", "नमक", "बेसन", "मैदा"],
    "OBJ": ["किताब", "चाबी", "गिलास", "थाली", "बैग", "फ़ोन", "कलम", "घड़ी", "टोपी", "छाता", "कुर्सी", "मेज़",
            "कंबल", "चश्मा", "डिब्बा", "तस्वीर", "बोतल", "लालटेन"],
    "SURFACE": ["मेज़", "कुर्सी", "अलमारी", "खिड़की", "ज़मीन", "पलंग", "दरवाज़े"],
    "VEHF": ["गाड़ी", "साइकिल", "बस", "मोटरसाइकिल", "कार", "ट्रेन", "नाव", "जीप"],
    "ANIMAL": ["कुत्ता", "घोड़ा", "बंदर", "शेर", "हाथी", "ऊँट", "बैल", "तोता", "मोर", "भालू", "खरगोश", "हिरण"],
    "HERD": ["गायें", "बकरियाँ", "भैंसें", "घोड़े", "कुत्ते", "बिल्लियाँ", "मुर्गियाँ", "भेड़ें", "बत्तखें"],
    "BIRDS": ["पक्षी", "तोते", "कबूतर", "कौवे", "बगुले", "चील", "मोर"],
    "GAME": ["क्रिकेट", "फ़ुटबॉल", "कबड्डी", "हॉकी", "शतरंज", "बैडमिंटन", "गिल्ली डंडा", "लूडो"],
    "COLORF": ["लाल", "गुलाबी", "हरी", "पीली", "नीली", "काली", "सफ़ेद", "नारंगी", "बैंगनी", "भूरी"],
    "ADJ": ["सुंदर", "भारी", "नरम", "साफ़", "ख़ास", "अजीब", "मज़बूत", "क़ीमती", "पुराना", "नया", "छोटा", "बड़ा"],
    "CITYADJ": ["सुंदर", "पुराना", "बड़ा", "साफ़", "व्यस्त", "ऐतिहासिक", "शांत", "मशहूर", "प्यारा"],
    "WADJ": ["सुहाना", "गरम", "ठंडा", "नम", "अच्छा", "ख़राब", "सूखा"],
    "SEASON": ["गर्मियों में", "सर्दियों में", "बरसात में", "बसंत में"],
    "WEATHER": ["बारिश होगी", "धूप निकलेगी", "बहुत ठंड होगी", "तेज़ हवा चलेगी", "मौसम साफ़ रहेगा", "ओले गिरेंगे",
                "बादल छाए रहेंगे"],
    # time and numbers
    "TIME": ["आज", "कल", "परसों", "सुबह", "शाम को", "रात को", "दोपहर में", "अभी", "हर रोज़", "इतवार को",
             "सोमवार को", "शुक्रवार को", "जल्दी", "अगले हफ़्ते"],
    "NUM": ["दो", "तीन", "चार", "पाँच", "छह", "सात", "आठ", "नौ", "दस", "बारह", "पंद्रह", "बीस", "पचास", "सौ"],
    "HOUR": ["एक", "दो", "तीन", "चार", "पाँच", "छह", "सात", "आठ", "नौ", "दस", "ग्यारह", "बारह"],
    "AGE": ["बारह", "पंद्रह", "अठारह", "बीस", "पच्चीस", "तीस", "पैंतीस", "चालीस", "पचास", "साठ", "सत्तर", "अस्सी"],
}

TRAIN_TEMPLATES: list[str] = [
    "{NM} {TIME} {PLACE} जा रहा है।",
    "{NF} {TIME} {PLACE} जा रही है।",
    "मेरे {RELM} {CITY} में रहते हैं।",
    "मेरी {RELF} {CITY} में रहती हैं।",
    "{NM} ने {NUM} {FRUIT} ख़रीदे।",
    "{ANIMAL} {IN} में सो रहा है।",
    "क्या तुम {TIME} {PLACE} चलोगे?",
    "{CITY} बहुत {CITYADJ} शहर है।",
    "मुझे {FOOD} बहुत पसंद है।",
    "{PROF} ने कहा कि {TIME} {WEATHER}।",
    "हमारी ट्रेन {HOUR} बजे {CITY} पहुँचेगी।",
    "{COLORF} रंग की {VEHF} सड़क पर खड़ी है।",
    "बच्चे मैदान में {GAME} खेल रहे हैं।",
    "{NM} के पास {NUM} {HERD} हैं।",
    "कृपया {OBJ} {SURFACE} पर रख दीजिए।",
    "{RELF} ने {TIME} {FOOD} बनाया।",
    "{NM} और {NF} {CITY} घूमने गए।",
    "{SEASON} {CITY} का मौसम {WADJ} रहता है।",
    "{PROF} {PLACE} में काम करता है।",
    "मैंने बाज़ार से {NUM} किलो {GROCERY} ख़रीदा।",
    "{NF} की उम्र {AGE} साल है।",
    "आसमान में {NUM} {BIRDS} उड़ रहे हैं।",
    "{NF} ने {COLORF} साड़ी पहनी है।",
    "{TIME} {PLACE} में ज़रूरी बैठक है।",
    "यह {OBJ} बहुत {ADJ} है।",
    "{NM} {HOUR} बजे सोकर उठा।",
    "{RELM} {TIME} {CITY} से लौटे।",
    "{NF} {TIME} {CITY} से लौटी।",
    "{PROF} को {FOOD} खाना पसंद है।",
    "{CITY} में {NUM} नए {BUILD} बने हैं।",
    "{RELF} {PLACE} से {FRUIT} लाई।",
    "क्या {PROF} {TIME} आएँगे?",
    "{NM} ने अपनी {COLORF} {VEHF} बेच दी।",
    "{NF} ने {NM} को {OBJ} दी।",
    "मेरा {ANIMAL} बहुत {ADJ} है।",
    "{TIME} {CITY} में {WEATHER}।",
    "{NM} की उम्र {AGE} साल है और वह {PROF} है।",
    "{NF} {HOUR} बजे {PLACE} पहुँची।",
    "हम {TIME} {GAME} खेलेंगे।",
    "{RELM} ने {NUM} {HERD} पाली हैं।",
    "{NM} {HOUR} बजे {PLACE} पहुँचेगा।",
    "{NF} हर शाम {IN} में {GAME} खेलती है।",
    "{PROF} ने बच्चों को {NUM} {FRUIT} दिए।",
]

# Never used for training: new structures over the same words.
HELDOUT_TEMPLATES: list[str] = [
    "{NF} को {FOOD} पसंद है।",
    "{TIME} {NM} {CITY} पहुँचेगा।",
    "{RELM} ने {NUM} किलो {GROCERY} ख़रीदा।",
    "{IN} में {ANIMAL} सो रहा है।",
    "क्या {NF} {PLACE} जा रही है?",
    "{PROF} की {VEHF} {COLORF} है।",
    "मेरी {RELF} {GAME} खेलती हैं।",
    "{CITY} का {PLACE} बहुत {CITYADJ} है।",
    "{NM} ने {NF} को {FRUIT} दिए।",
    "{SEASON} {WEATHER}।",
]

_PUNCT_RE = re.compile(r"[।॥]")
_SLOT_RE = re.compile(r"\{([A-Z]+)\}")


def normalize(text: str) -> str:
    """Scoring normalisation: NFC, Unicode punctuation (danda । and ॥ included) removed, whitespace collapsed."""
    text = unicodedata.normalize("NFC", text)
    text = _PUNCT_RE.sub(" ", text)
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


def fill(template: str, rng: random.Random) -> str:
    used: dict[str, set] = {}

    def pick(m):
        slot = m.group(1)
        choices = [w for w in WORDS[slot] if w not in used.setdefault(slot, set())] or WORDS[slot]
        word = rng.choice(choices)
        used[slot].add(word)
        return word

    return unicodedata.normalize("NFC", _SLOT_RE.sub(pick, template))


def _compose(templates: list[str], n: int, rng: random.Random, exclude: set[str] = frozenset(),
             max_words: int | None = None) -> list[str]:
    out: list[str] = []
    seen = set(exclude)
    tries = 0
    while len(out) < n and tries < n * 200:
        tries += 1
        sentence = fill(templates[tries % len(templates)] if tries < len(templates) else rng.choice(templates), rng)
        key = normalize(sentence)
        if key in seen or (max_words and len(key.split()) > max_words):
            continue
        seen.add(key)
        out.append(sentence)
    return out


def training_sentences(n: int = 6000, seed: int = 0) -> list[str]:
    """``n`` distinct training sentences (with punctuation), from TRAIN_TEMPLATES only."""
    return _compose(TRAIN_TEMPLATES, n, random.Random(seed))


def heldout_sentences(n: int = 36, seed: int = 1234, exclude: set[str] = frozenset(), max_words: int = 6) -> list[str]:
    """``n`` distinct short sentences from HELDOUT_TEMPLATES, none of whose normalised form is in ``exclude``."""
    rng = random.Random(seed)
    out = []
    per = -(-n // len(HELDOUT_TEMPLATES))
    for t in HELDOUT_TEMPLATES:  # balanced over the held-out templates
        out += _compose([t], per, rng, exclude={normalize(s) for s in out} | set(exclude), max_words=max_words)
    rng.shuffle(out)
    return out[:n]


def charset(sentences) -> list[str]:
    """Sorted characters (code points) of the normalised sentences, space excluded."""
    return sorted({ch for s in sentences for ch in normalize(s)} - {" "})
