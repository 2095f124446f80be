"""A finance-aware sentiment score in -1..1 and catalyst tags for one headline.

VADER (``vaderSentiment``) scores general English; the catalyst lexicon of
``config/news_context.yaml`` teaches it the phrases that move a stock ("profit warning",
"contract win", "rights issue"). Each matched phrase is replaced by its catalyst's tag before
VADER reads the text, and the tag is a word of VADER's lexicon with the catalyst's valence: so a
phrase counts once, VADER's negation and intensity rules apply to it ("no profit warning"), and
the score stays on VADER's compound scale.

Pure: the lexicon is read once (``load_lexicon``) and the scorer holds no other state.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

# How much of a summary is read with its headline: a long article body would drown the headline.
SUMMARY_CHARS = 300
_VADER_MAX_VALENCE = 4.0


class NewsContextError(Exception):
    """The catalyst lexicon cannot be used; the message names the file, the key and what is wrong."""


@dataclass(frozen=True)
class Catalyst:
    tag: str
    valence: float
    pattern: re.Pattern[str]

    @property
    def positive(self) -> bool:
        return self.valence > 0


@dataclass(frozen=True)
class Lexicon:
    catalysts: tuple[Catalyst, ...]
    words: Mapping[str, float]

    @property
    def positive_tags(self) -> frozenset[str]:
        return frozenset(c.tag for c in self.catalysts if c.positive)


@dataclass(frozen=True)
class Scored:
    sentiment: float               # -1..1
    tags: tuple[str, ...]          # catalyst tags, in lexicon order


def load_lexicon(path: Path) -> Lexicon:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise NewsContextError(f"news context file {path} does not exist (the profile's news.context_file)") from None
    except yaml.YAMLError as exc:
        raise NewsContextError(f"{path}: not valid YAML: {exc}") from None
    return parse_lexicon(data, str(path))


def parse_lexicon(data: Mapping[str, Any], where: str = "news context") -> Lexicon:
    unknown = set(data) - {"catalysts", "words"}
    if unknown:
        raise NewsContextError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: catalysts, words")
    catalysts = []
    for tag, spec in (data.get("catalysts") or {}).items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", str(tag)):
            raise NewsContextError(f"{where}: catalyst {tag!r}: a tag is lower-case letters, digits and _")
        if not isinstance(spec, Mapping) or set(spec) - {"valence", "phrases"} or "phrases" not in spec:
            raise NewsContextError(f"{where}: catalysts.{tag} needs `valence` and `phrases` (and nothing else)")
        valence = _valence(spec.get("valence"), f"{where}: catalysts.{tag}.valence")
        phrases = [str(p) for p in spec["phrases"] or []]
        if not phrases or valence == 0:
            raise NewsContextError(f"{where}: catalysts.{tag} needs at least one phrase and a valence other than 0")
        try:
            pattern = re.compile(r"\b(?:" + "|".join(f"(?:{p})" for p in phrases) + r")\b", re.IGNORECASE)
        except re.error as exc:
            raise NewsContextError(f"{where}: catalysts.{tag}.phrases: not a regular expression: {exc}") from None
        catalysts.append(Catalyst(str(tag), valence, pattern))
    words = {str(w).lower(): _valence(v, f"{where}: words.{w}") for w, v in (data.get("words") or {}).items()}
    return Lexicon(tuple(catalysts), words)


def _valence(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise NewsContextError(f"{where} = {value!r}: a number between -4 and 4") from None
    if not -_VADER_MAX_VALENCE <= number <= _VADER_MAX_VALENCE:
        raise NewsContextError(f"{where} = {value!r}: a number between -4 and 4 (VADER's scale)")
    return number


class SentimentScorer:
    def __init__(self, lexicon: Lexicon) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.lexicon = lexicon
        self._vader = SentimentIntensityAnalyzer()
        self._vader.lexicon.update(lexicon.words)
        for catalyst in lexicon.catalysts:
            self._vader.lexicon[catalyst.tag] = catalyst.valence

    @property
    def positive_tags(self) -> frozenset[str]:
        return self.lexicon.positive_tags

    def score(self, headline: str, summary: str = "") -> Scored:
        text = headline.strip()
        if summary:
            text += ". " + summary.strip()[:SUMMARY_CHARS]
        tags = []
        for catalyst in self.lexicon.catalysts:
            text, found = catalyst.pattern.subn(f" {catalyst.tag} ", text)
            if found:
                tags.append(catalyst.tag)
        compound = self._vader.polarity_scores(text)["compound"]
        return Scored(round(float(compound), 3), tuple(tags))
