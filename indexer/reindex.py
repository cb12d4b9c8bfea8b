"""Full rebuild of the indexes from the store, into a new generation published atomically.

Embeddings come from the store; only documents whose stored embedding was made by another
encoder are re-encoded (and their new embedding written back), so a rebuild with an
unchanged encoder never runs the model.

Live (zero downtime): the new generation is built while the old one keeps answering queries
and taking writes; then writes pause for a last catch-up of what arrived meanwhile, the new
generation is published on disk and swapped in with one assignment, and writes resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from indexer.collection import Collection, open_indexes
from indexer.layout import new_generation, publish
from indexer.writer import Progress
from search.config import EncoderSettings, Settings
from search.encoders import Encoder, load_encoder
from search.store import Store


@dataclass(frozen=True)
class ReindexReport:
    generation: Path
    documents: int
    seq: int
    encoder: str


def rebuild(settings: Settings, store: Store, encoder: Encoder, progress: Progress | None = None) -> ReindexReport:
    """Offline rebuild (nothing serves this data directory meanwhile)."""
    generation = new_generation(settings.data_dir)
    indexes = open_indexes(settings, store, encoder, generation)
    indexes.indexer.catch_up(progress)
    indexes.close()
    publish(settings.data_dir, generation)
    return ReindexReport(generation, indexes.vectors.count, indexes.vectors.seq, str(encoder.fingerprint))


def rebuild_live(
    collection: Collection,
    encoder_settings: EncoderSettings | None = None,
    progress: Progress | None = None,
    name: str | None = None,
) -> ReindexReport:
    """Rebuild while ``collection`` keeps serving; optionally with another encoder, and into a
    generation of the given ``name`` (a replica's copy of its primary's)."""
    settings = collection.settings
    encoder = collection.encoder
    if encoder_settings is not None and encoder_settings != settings.encoder:
        settings = settings.model_copy(update={"encoder": encoder_settings})
        encoder = load_encoder(encoder_settings)
    generation = new_generation(settings.data_dir, name)
    indexes = open_indexes(settings, collection.store, encoder, generation, collection.query_path)
    indexes.indexer.catch_up(progress)  # the bulk of the work; queries and writes go on
    with collection.writes_paused():
        indexes.indexer.catch_up()  # writes that landed during the build
        indexes.indexer.snapshot()
        publish(settings.data_dir, generation)
        old = collection.indexes
        collection.indexes = indexes  # the switch: one assignment
        collection.settings = settings
    old.engine.close()
    old.lexical.close()
    return ReindexReport(generation, indexes.vectors.count, indexes.vectors.seq, str(encoder.fingerprint))
