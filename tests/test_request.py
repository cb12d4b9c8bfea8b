"""The one request type: how every caller's search becomes a ``SearchRequest``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from api.models import SearchBody, SearchQuery
from search.filters import Filters
from search.request import RankOptions, SearchRequest


def test_get_and_post_make_the_same_request() -> None:
    posted = SearchBody.model_validate(
        {
            "q": "swept wing",
            "k": 5,
            "offset": 10,
            "mode": "hybrid",
            "nprobe": 4,
            "explain": True,
            "filters": {
                "category": ["aero", "heat"],
                "metadata": {"lang": "en", "year": 1962},
                "updated_after": "2024-01-01T00:00:00Z",
            },
            "freshness": 0.2,
            "diversity": 0.3,
        }
    ).to_request()
    got = SearchQuery.parse(
        b"q=swept+wing&k=5&offset=10&mode=hybrid&nprobe=4&explain=true&category=aero&category=heat"
        b"&meta=lang%3Den&meta=year%3D1962&updated_after=2024-01-01T00:00:00Z&freshness=0.2&diversity=0.3&unknown=1"
    )
    assert got == posted
    assert posted == SearchRequest(
        "swept wing",
        k=5,
        offset=10,
        mode="hybrid",
        nprobe=4,
        filters=Filters(("aero", "heat"), {"lang": "en", "year": 1962}, datetime(2024, 1, 1, tzinfo=UTC)),
        options=RankOptions(freshness=0.2, diversity=0.3),
        explain=True,
    )


def test_a_query_string_the_route_refuses_raises() -> None:
    for bad in (b"k=5", b"q=a&k=0", b"q=a&mode=fuzzy", b"q=a&meta=novalue", b"q=a&category=a%00b"):
        with pytest.raises(ValidationError):
            SearchQuery.parse(bad)


def test_the_cache_key_holds_what_changes_the_answer_and_nothing_else() -> None:
    base = SearchRequest("heat  conduction", k=10)
    assert base.cache_key() == SearchRequest("heat conduction", k=10, explain=True).cache_key()  # normalised
    different = [
        SearchRequest("heat conduction", k=5),
        SearchRequest("heat conduction", offset=10),
        SearchRequest("heat conduction", mode="dense"),
        SearchRequest("heat conduction", nprobe=3),
        SearchRequest("heat conduction", filters=Filters(("aero",))),
        SearchRequest("heat conduction", options=RankOptions(diversity=0.5)),
        SearchRequest("Heat conduction"),  # case is kept: a cased encoder tells cases apart
    ]
    assert len({base.cache_key(), *(r.cache_key() for r in different)}) == len(different) + 1


def test_a_request_refuses_what_no_engine_can_answer() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        SearchRequest("q", mode="fuzzy")
    with pytest.raises(ValueError):
        SearchRequest("q", k=0)
    assert SearchRequest("q", k=10, offset=20).depth == 30
    assert SearchRequest("a").same_but_query(SearchRequest("b"))
    assert not SearchRequest("a").same_but_query(SearchRequest("b", k=3))
