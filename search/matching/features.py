"""What a query looks like, computed from its text and the corpus statistics.

The features feed the weight model (``weights.py``) and are reported by ``explain``. They are
scale-free so that a model fitted on one collection transfers to another: IDF is divided by
the largest IDF the corpus allows, length is a log, the rest are flags and shares.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from search.text import HAN_RUN

QUOTED = re.compile(r"\"[^\"]+\"|“[^”]+”|「[^」]+」")
# A number, a year, or a code mixing letters and digits (X-15, RFC2616, A320neo, 3.5).
CODE = re.compile(r"\b(?=[\w.-]*\d)[\w][\w.-]*\b")
QUESTION_START = re.compile(
    r"^\s*(what|which|who|whom|whose|when|where|why|how|is|are|was|were|do|does|did|can|could|"
    r"should|would|will|has|have)\b",
    re.IGNORECASE,
)
TEMPORAL = re.compile(
    r"\b(latest|newest|new|recent|recently|current|currently|today|now|this (week|month|year)|"
    r"upcoming|breaking|just released|(19|20)\d\d)\b|最新|最近|新款|今年|本月|近期|目前",
    re.IGNORECASE,
)

# The model's inputs, in order (bias excluded).
MODEL_FEATURES = (
    "log_terms",
    "mean_idf",
    "max_idf",
    "min_idf",
    "unknown_share",
    "quoted",
    "codes",
    "question",
    "chinese",
)


@dataclass(frozen=True)
class QueryFeatures:
    log_terms: float  # ln(1 + distinct index terms)
    mean_idf: float  # BM25 IDF of the query's known terms / the corpus's largest possible IDF
    max_idf: float
    min_idf: float
    unknown_share: float  # share of query terms that no document contains
    quoted: float  # 1 if the query quotes a phrase
    codes: float  # 1 if it holds numbers or letter-digit codes
    question: float  # 1 if phrased as a question
    chinese: float  # share of its characters that are Han
    temporal: bool  # asks for recent things: raises the freshness weight, not a model input

    def vector(self) -> np.ndarray:
        return np.array([getattr(self, name) for name in MODEL_FEATURES], dtype=np.float64)

    def to_dict(self) -> dict[str, float | bool]:
        return {name: (round(v, 4) if isinstance(v, float) else v) for name, v in asdict(self).items()}


def bm25_idf(df: int, n: int) -> float:
    return math.log(1 + (n - df + 0.5) / (df + 0.5))


def analyse_query(
    text: str,
    terms: Sequence[str],
    document_frequency: Callable[[str], int],
    documents: int,
) -> QueryFeatures:
    """Features of ``text`` whose index terms are ``terms`` in a corpus of ``documents``."""
    n = max(documents, 1)
    frequencies = [document_frequency(t) for t in terms]
    ceiling = bm25_idf(0, n)
    idfs = [bm25_idf(df, n) / ceiling for df in frequencies if df > 0]
    han = sum(len(run) for run in HAN_RUN.findall(text))
    visible = sum(1 for ch in text if not ch.isspace())
    return QueryFeatures(
        log_terms=math.log1p(len(terms)),
        mean_idf=float(np.mean(idfs)) if idfs else 0.0,
        max_idf=max(idfs, default=0.0),
        min_idf=min(idfs, default=0.0),
        unknown_share=(sum(1 for df in frequencies if df == 0) / len(terms)) if terms else 0.0,
        quoted=float(bool(QUOTED.search(text))),
        codes=float(bool(CODE.search(text))),
        question=float(bool(QUESTION_START.search(text)) or text.rstrip().endswith(("?", "？", "吗"))),
        chinese=han / visible if visible else 0.0,
        temporal=bool(TEMPORAL.search(text)),
    )
