from pathlib import Path

import pytest

from search.config import LexicalSettings
from search.lexical import LexicalEntry, LexicalIndex


def _entry(key: int, title: str, text: str) -> LexicalEntry:
    return LexicalEntry(key, title, f"{title}\n{text}")


@pytest.fixture
def index(tmp_path: Path) -> LexicalIndex:
    lexical = LexicalIndex(tmp_path / "lex", LexicalSettings())
    lexical.apply(
        [
            _entry(1, "Supersonic aircraft", "heating of aircraft wings at high speeds"),
            _entry(2, "Library catalogues", "subject headings in the catalogue"),
            _entry(3, "机器学习", "最新的机器学习模型用于语义搜索"),
            _entry(4, "Mixed", "DeepSeek 模型 for semantic search"),
        ],
        [],
        seq=4,
    )
    return lexical


def test_bm25_with_english_stemming_and_stopwords(index: LexicalIndex) -> None:
    assert [k for k, _ in index.search("the heated wing of an aircraft", 10)] == [1]
    assert index.query_terms("the catalogues of a library") == ["catalogu", "librari"]
    assert index.search("the of and", 10) == []  # stopwords only


def test_chinese_and_mixed_queries(index: LexicalIndex) -> None:
    assert next(k for k, _ in index.search("机器学习", 10)) == 3
    assert {k for k, _ in index.search("语义搜索", 10)} == {3}
    assert next(k for k, _ in index.search("DeepSeek 模型", 10)) == 4
    assert {k for k, _ in index.search("semantic search", 10)} == {4}


def test_title_field(index: LexicalIndex) -> None:
    assert [k for k, _ in index.search("catalogues", 10, field="title")] == [2]
    assert index.search("headings", 10, field="title") == []


def test_update_and_delete(index: LexicalIndex) -> None:
    index.apply([_entry(1, "Subsonic flow", "propellers")], [2], seq=6)
    assert index.search("supersonic", 10) == []
    assert [k for k, _ in index.search("propeller", 10)] == [1]
    assert index.search("catalogue", 10) == []
    assert index.count == 3
    assert index.seq == 6


def test_persistence(tmp_path: Path, index: LexicalIndex) -> None:
    index.close()
    del index
    reopened = LexicalIndex(tmp_path / "lex", LexicalSettings())
    assert reopened.seq == 4 and reopened.count == 4
    assert [k for k, _ in reopened.search("aircraft", 10)] == [1]


def test_analyzer_change_requires_reindex(tmp_path: Path, index: LexicalIndex) -> None:
    index.close()
    del index
    with pytest.raises(RuntimeError, match="dss reindex"):
        LexicalIndex(tmp_path / "lex", LexicalSettings(stemmer="none"))
