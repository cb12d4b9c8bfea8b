"""Text analysis for BM25: English stemming and stopwords, Chinese word segmentation.

tantivy's analyzer pipeline does the Western-language work (lower-casing, stopwords,
Snowball stemming). Chinese has no spaces between words, so each run of Han characters is
first segmented with jieba and the words are separated by spaces; the same function runs on
documents and queries, so both sides agree.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any

import tantivy

from search.config import LexicalSettings

HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


@lru_cache(maxsize=1)
def _jieba() -> Any:  # the module (untyped)
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()  # loads its dictionary once (about a second), only if Chinese appears
    return jieba


def segment_chinese(text: str) -> str:
    """Space-separate the words of every Han run; other text passes through unchanged."""
    if not HAN_RUN.search(text):
        return text
    jieba = _jieba()
    return HAN_RUN.sub(lambda m: " " + " ".join(jieba.cut(m.group(0))) + " ", text)


def build_analyzer(settings: LexicalSettings) -> tantivy.TextAnalyzer:
    builder = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
    builder = builder.filter(tantivy.Filter.remove_long(64)).filter(tantivy.Filter.lowercase())
    if settings.stopwords == "extended":
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        builder = builder.filter(tantivy.Filter.custom_stopword(sorted(ENGLISH_STOP_WORDS)))
    elif settings.stopwords == "lucene":
        builder = builder.filter(tantivy.Filter.stopword("english"))
    if settings.stemmer != "none":
        builder = builder.filter(tantivy.Filter.stemmer(settings.stemmer))
    return builder.build()


class Analyzer:
    """Turns text into index terms, identically for documents and queries."""

    def __init__(self, settings: LexicalSettings) -> None:
        self.settings = settings
        self.tantivy_analyzer = build_analyzer(settings)

    def prepare(self, text: str) -> str:
        """Text as handed to tantivy's analyzer (Chinese pre-segmented)."""
        return segment_chinese(text) if self.settings.chinese else text

    def terms(self, text: str) -> list[str]:
        return self.tantivy_analyzer.analyze(self.prepare(text))
