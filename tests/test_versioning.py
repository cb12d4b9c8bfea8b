import pytest

from indexer.versioning import Outcome, VersionState, decide

LIVE_V3 = VersionState(3, False, "h")
DEAD_V3 = VersionState(3, True, None)


@pytest.mark.parametrize(
    "state, op, version, content, outcome, stored",
    [
        (None, "upsert", None, "h", Outcome.APPLIED, 1),
        (None, "upsert", 7, "h", Outcome.APPLIED, 7),
        (LIVE_V3, "upsert", 4, "x", Outcome.APPLIED, 4),
        (LIVE_V3, "upsert", 2, "x", Outcome.STALE, 3),
        (LIVE_V3, "upsert", 3, "h", Outcome.UNCHANGED, 3),  # duplicate delivery
        (LIVE_V3, "upsert", 3, "x", Outcome.STALE, 3),  # same version, other content
        (LIVE_V3, "upsert", None, "h", Outcome.UNCHANGED, 3),  # re-ingest, same content
        (LIVE_V3, "upsert", None, "x", Outcome.APPLIED, 4),  # re-ingest, changed content
        (DEAD_V3, "upsert", 2, "h", Outcome.STALE, 3),  # late older upsert: no resurrection
        (DEAD_V3, "upsert", 3, "h", Outcome.STALE, 3),  # same version as the delete
        (DEAD_V3, "upsert", 4, "h", Outcome.APPLIED, 4),  # a newer version may recreate it
        (DEAD_V3, "upsert", None, "h", Outcome.APPLIED, 4),
        (LIVE_V3, "delete", 3, None, Outcome.APPLIED, 3),
        (LIVE_V3, "delete", 5, None, Outcome.APPLIED, 5),
        (LIVE_V3, "delete", 2, None, Outcome.STALE, 3),
        (LIVE_V3, "delete", None, None, Outcome.APPLIED, 4),
        (DEAD_V3, "delete", 3, None, Outcome.UNCHANGED, 3),  # duplicate delete
        (DEAD_V3, "delete", 6, None, Outcome.APPLIED, 6),
        (DEAD_V3, "delete", None, None, Outcome.UNCHANGED, 3),
        (None, "delete", 5, None, Outcome.APPLIED, 5),  # tombstone for a not-yet-seen id
        (None, "delete", None, None, Outcome.UNCHANGED, None),
    ],
)
def test_version_rules(state, op, version, content, outcome, stored) -> None:
    decision = decide(state, op, version, content)
    assert decision.outcome is outcome
    assert decision.version == stored
    if outcome is Outcome.STALE:
        assert "version" in decision.reason
