"""The metadata sentence of BTS and its tokens: what the CLAP text tower of `clap_bts` reads (docs/methods.md section 13).

BTS (Kim et al., "BTS: Bridging Text and Sound Modalities for Metadata-Aided Respiratory Sound Classification",
Interspeech 2024) writes each cycle's patient metadata as one sentence,

    "This sound was recorded from the {location} of {a|an} {age} {sex} patient, using {a|an} {device} {kind}."

with the reference code's rules: age 19 and over "adult", under 19 "pediatric" (written after the sex: "female
pediatric"); sex "M" "male", any other given value "female"; the ICBHI chest-location codes as words (Tc trachea,
Al/Ar left/right anterior chest, Pl/Pr left/right posterior chest, Ll/Lr left/right lateral chest); the device by its
ICBHI name, its kind "microphone" for the AKGC417L and "stethoscope" for the others. A value that is not known (None)
is the word "unknown" in its place (its device kind stays "stethoscope", as the reference's rule gives for any name
but AKGC417L). `fields` selects a subset of the four (the reference's ablations use 15 subsets): a left-out field's
phrase is left out ("of a male patient" without the age; no "from the ..." without the location; no ", using ..."
without the device), and no field at all is the ablation sentence "No description.".

Tokens: the sentence is cut into the pieces a byte-level BPE (RoBERTa's, CLAP's text tower) pre-tokenises it into (a
word with its leading space, a run of digits, a punctuation mark), and each piece maps to its token ids. The
vocabulary of pieces is closed (every sentence the rules can write), so `PromptTokens` is a small table made once from
the checkpoint's tokenizer and stored in the model folder's config: a saved model rebuilds offline without the
tokenizer files. Without a tokenizer (random init) each piece gets its own id.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from lungsound.data.sample_meta import PROMPT_FIELDS
from lungsound.errors import LungsoundError

PROMPT_LENGTH = 64  # tokens, as the reference tokenises the sentence
ADULT_AGE = 19
UNKNOWN = "unknown"
NO_DESCRIPTION = "No description."
LOCATIONS = {"Tc": "trachea", "Al": "left anterior chest", "Ar": "right anterior chest",
             "Pl": "left posterior chest", "Pr": "right posterior chest",
             "Ll": "left lateral chest", "Lr": "right lateral chest"}
DEVICES = ("AKGC417L", "LittC2SE", "Litt3200", "Meditron")  # the ICBHI names (docs/methods.md section 1)
MICROPHONES = ("AKGC417L",)  # the AKG C417L is a microphone, the others stethoscopes
SEXES = ("M", "F")
_PIECE = re.compile(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+")  # GPT-2's pre-tokeniser on this alphabet


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def check_fields(fields: Sequence[str] | None) -> tuple[str, ...]:
    """`fields` as a tuple in `PROMPT_FIELDS` order (None: all four); an unknown name is a one-line error."""
    if fields is None:
        return PROMPT_FIELDS
    if isinstance(fields, str):
        fields = [f.strip() for f in fields.split(",") if f.strip()]
    unknown = [f for f in fields if f not in PROMPT_FIELDS]
    if unknown:
        raise LungsoundError(f"metadata fields {unknown} are not known; the fields are {', '.join(PROMPT_FIELDS)}")
    return tuple(f for f in PROMPT_FIELDS if f in fields)


def _age_word(age: Any) -> str:
    if age is None:
        return UNKNOWN
    if isinstance(age, bool) or not isinstance(age, (int, float)) or not 0 <= age < math.inf:
        raise LungsoundError(f"metadata age must be a number of years >= 0 or None, got {age!r}")
    return "adult" if age >= ADULT_AGE else "pediatric"


def _sex_word(sex: Any) -> str:
    return UNKNOWN if sex is None else "male" if sex == "M" else "female"


def _location_words(location: Any) -> str:
    if location is None:
        return UNKNOWN
    if location not in LOCATIONS:
        raise LungsoundError(f"metadata location must be one of {', '.join(LOCATIONS)} or None, got {location!r}")
    return LOCATIONS[location]


def _device_words(device: Any) -> str:
    if device is None:
        return f"{UNKNOWN} stethoscope"
    if device not in DEVICES:
        raise LungsoundError(f"metadata device must be one of {', '.join(DEVICES)} or None, got {device!r}")
    return f"{device} {'microphone' if device in MICROPHONES else 'stethoscope'}"


def metadata_prompt(meta: Mapping[str, object], fields: Sequence[str] | None = None) -> str:
    """The BTS sentence of one sample's metadata (see the module docstring). `meta` has the keys `age` (years or
    None), `sex` ("M", "F" or None), `location` (an ICBHI chest-location code or None) and `device` (an ICBHI device
    name or None); a missing key counts as None. `fields` None means all four."""
    chosen = check_fields(fields)
    if not chosen:
        return NO_DESCRIPTION
    sentence = "This sound was recorded"
    if "location" in chosen:
        sentence += f" from the {_location_words(meta.get('location'))}"
    age = _age_word(meta.get("age")) if "age" in chosen else None
    sex = _sex_word(meta.get("sex")) if "sex" in chosen else None
    words = [w for w in ((sex, age) if age == "pediatric" else (age, sex)) if w is not None]
    if words:
        person = " ".join(words)
        sentence += f" of {_article(person)} {person} patient"
    if "device" in chosen:
        device = _device_words(meta.get("device"))
        sentence += f", using {_article(device)} {device}"
    return sentence + "."


def pieces(sentence: str) -> list[str]:
    """The pre-tokeniser's pieces of `sentence` (concatenated they give it back)."""
    return _PIECE.findall(sentence)


@functools.lru_cache(maxsize=1)
def prompt_pieces() -> tuple[str, ...]:
    """Every piece any sentence of `metadata_prompt` can hold (all field subsets, all values), sorted."""
    values = {"age": (30, 5, None), "sex": ("M", "F", None), "location": (*LOCATIONS, None), "device": (*DEVICES, None)}
    found = set(pieces(NO_DESCRIPTION))
    for age, sex, location, device in itertools.product(*(values[f] for f in PROMPT_FIELDS)):
        meta = {"age": age, "sex": sex, "location": location, "device": device}
        for n in range(1, len(PROMPT_FIELDS) + 1):
            for fields in itertools.combinations(PROMPT_FIELDS, n):
                found.update(pieces(metadata_prompt(meta, fields)))
    return tuple(sorted(found))


@dataclass(frozen=True)
class PromptTokens:
    """Token ids of every prompt piece (`table`), the begin / end / pad ids, and the padded length."""

    table: Mapping[str, Sequence[int]]
    bos: int
    eos: int
    pad: int
    length: int = PROMPT_LENGTH

    @classmethod
    def from_tokenizer(cls, tokenizer, length: int = PROMPT_LENGTH) -> "PromptTokens":
        """The table a transformers tokenizer gives (each piece tokenised alone, no special tokens)."""
        table = {p: list(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompt_pieces()}
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        return cls(table, int(bos), int(eos), int(tokenizer.pad_token_id), length)

    @classmethod
    def enumerated(cls, length: int = PROMPT_LENGTH) -> "PromptTokens":
        """One id per piece (3, 4, ...) after <s> 0, <pad> 1, </s> 2: for a randomly initialised text tower."""
        return cls({p: [i + 3] for i, p in enumerate(prompt_pieces())}, 0, 2, 1, length)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PromptTokens":
        """From `to_dict()` (a model folder's config); a malformed table is a one-line error."""
        try:
            table = {str(k): [int(i) for i in v] for k, v in dict(d["table"]).items()}
            out = cls(table, int(d["bos"]), int(d["eos"]), int(d["pad"]), int(d.get("length", PROMPT_LENGTH)))
        except (KeyError, TypeError, ValueError) as exc:
            raise LungsoundError(f"model.params.prompt_tokens is not a prompt token table: {exc!r}") from None
        missing = sorted(set(prompt_pieces()) - set(table))
        if missing:
            raise LungsoundError(f"model.params.prompt_tokens lacks the pieces {missing[:5]}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"table": {k: list(v) for k, v in self.table.items()}, "bos": self.bos, "eos": self.eos,
                "pad": self.pad, "length": self.length}

    @property
    def max_id(self) -> int:
        return max(max(max(v) for v in self.table.values()), self.bos, self.eos, self.pad)

    def encode(self, sentences: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """`(input_ids, attention_mask)`, both (B, length) int64: <s> pieces </s>, cut to `length` (ending in </s>)
        and padded, as the tokenizer's `padding="max_length", truncation=True` gives."""
        ids = torch.full((len(sentences), self.length), self.pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, sentence in enumerate(sentences):
            try:
                body = [i for p in pieces(sentence) for i in self.table[p]]
            except KeyError as exc:
                raise LungsoundError(f"the prompt {sentence!r} holds the piece {exc.args[0]!r}, which no metadata "
                                     "sentence has") from None
            tokens = [self.bos, *body[:self.length - 2], self.eos]
            ids[row, :len(tokens)] = torch.tensor(tokens)
            mask[row, :len(tokens)] = 1
        return ids, mask


def check_metadata(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Test-time metadata as the model reads it: the four fields (a missing or blank one None), an age as a number
    of years, a sex "M" or "F", a location code and a device name of the ICBHI vocabulary; anything else is a
    one-line error naming the key."""
    if meta is None:
        return dict.fromkeys(PROMPT_FIELDS)
    if not isinstance(meta, Mapping):
        raise LungsoundError(f"metadata must be a mapping of {', '.join(PROMPT_FIELDS)}, got {type(meta).__name__}")
    unknown = sorted(str(k) for k in meta if k not in PROMPT_FIELDS)
    if unknown:
        raise LungsoundError(f"metadata key(s) {', '.join(unknown)} are not known; the keys are "
                             f"{', '.join(PROMPT_FIELDS)}")
    out = {k: (None if meta.get(k) is None or (isinstance(meta.get(k), str) and not meta[k].strip()) else meta[k])
           for k in PROMPT_FIELDS}
    if isinstance(out["age"], str):
        try:
            out["age"] = float(out["age"])
        except ValueError:
            raise LungsoundError(f"metadata age must be a number of years, got {out['age']!r}") from None
    _age_word(out["age"])
    if isinstance(out["sex"], str) and out["sex"].strip().upper() in SEXES:
        out["sex"] = out["sex"].strip().upper()
    if out["sex"] is not None and out["sex"] not in SEXES:
        raise LungsoundError(f"metadata sex must be M or F (or blank for unknown), got {out['sex']!r}")
    _location_words(out["location"])
    _device_words(out["device"])
    return out


def parse_metadata(text: str) -> dict[str, Any]:
    """`age=70,sex=F,location=Pl,device=Meditron` (any subset; the others unknown) as `check_metadata` gives it."""
    meta: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq:
            raise LungsoundError(f"--meta: {item!r} is not KEY=VALUE (e.g. age=70,sex=F,location=Pl,device=Meditron)")
        if key.strip() in meta:
            raise LungsoundError(f"--meta: {key.strip()!r} is given twice")
        meta[key.strip()] = value.strip()
    try:
        return check_metadata(meta)
    except LungsoundError as exc:
        raise LungsoundError(f"--meta: {exc.problem}") from None


def all_unknown(meta: Mapping[str, Any]) -> bool:
    return all(meta.get(k) is None for k in PROMPT_FIELDS)
