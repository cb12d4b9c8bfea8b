"""A replica: a serving process's own copy of the indexes, kept from the primary's store.

With several serving processes on one data directory, the primary owns ``data_dir/indexes``
(the only tantivy writer there, the snapshots, reindex jobs); each replica builds and keeps
a copy under ``data_dir/replicas/r<N>`` from the same store, follows the store's change log
like any other follower, and adopts the primary's published generation, name included: when a reindex
publishes a new one (maybe with another encoder), the replica rebuilds its copy live with
the encoder that generation records. A copy is never a source: when it cannot be opened with
the primary's encoder, it is dropped and built again from the store.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from indexer.collection import ENCODER_FILE, Collection, open_collection
from indexer.layout import adopt_generation_name, current_generation, indexes_root
from indexer.reindex import ReindexReport, rebuild_live
from search.config import EncoderSettings, Settings
from search.vector_index import EncoderMismatch

log = logging.getLogger(__name__)


def replica_settings(primary: Settings, number: int) -> Settings:
    """Replica ``number``'s settings: its own directory, the primary's store and encoder."""
    return primary.model_copy(
        update={
            "data_dir": primary.data_dir / "replicas" / f"r{number}",
            "store": primary.store.model_copy(update={"url": primary.store_url}),
            "encoder": published_encoder(current_generation(primary.data_dir)) or primary.encoder,
        }
    )


def published_encoder(generation: Path) -> EncoderSettings | None:
    """The encoder settings a generation was built with (None before it recorded them)."""
    recorded = generation / ENCODER_FILE
    return EncoderSettings.model_validate_json(recorded.read_text()) if recorded.is_file() else None


def open_replica(primary: Settings, number: int) -> Collection:
    """Replica ``number``'s copy, under the name of the primary's current generation (so
    that both report the same ``generation``)."""
    settings = replica_settings(primary, number)
    published = current_generation(primary.data_dir).name
    adopt_generation_name(settings.data_dir, published)
    try:
        return open_collection(settings)
    except EncoderMismatch:
        log.warning("replica index built by another encoder: building it again from the store")
        shutil.rmtree(indexes_root(settings.data_dir), ignore_errors=True)
        adopt_generation_name(settings.data_dir, published)
        return open_collection(settings)


class GenerationFollower:
    """A replica's watch on the generation the primary has published."""

    def __init__(self, collection: Collection, primary_dir: Path) -> None:
        self.collection = collection
        self.primary_dir = primary_dir
        self.mirrored = current_generation(primary_dir).name

    def poll(self) -> ReindexReport | None:
        """Rebuild this copy when the primary has published a new generation since."""
        published = current_generation(self.primary_dir)
        if published.name == self.mirrored:
            return None
        report = rebuild_live(self.collection, published_encoder(published), name=published.name)
        self.mirrored = published.name
        log.info("replica rebuilt after the primary's reindex", extra={"generation": published.name})
        return report
