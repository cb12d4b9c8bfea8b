"""FAISS vector index keyed by the store's int64 document keys.

Small collections are searched exactly (``IDMap2,Flat``). Once N reaches ``train_threshold``
the index is rebuilt from the configured factory string (default ``IVF{nlist},SQfp16``, nlist =
8·sqrt(N), at most N / 39) and trained; it is trained again whenever the collection has grown
``retrain_growth`` times since. A query probes about sqrt(N) / 2 lists (see IndexSettings).
Inner product on L2-normalised vectors is cosine similarity.

GPU: the CPU index is the single source of truth and takes every update. When a GPU is used,
searches run on a GPU clone of it; any update marks the clone stale and the next search
re-clones it (``index_cpu_to_gpu``) under the index lock, so a search never sees a deleted or
outdated vector. Writes arrive in batches, so the copy is paid once per batch, not per document.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from search.config import IndexSettings
from search.encoders.base import Fingerprint
from search.snapshots import atomic_write, atomic_write_text

INDEX_FILE = "vectors.faiss"
MANIFEST_FILE = "manifest.json"


class EncoderMismatch(RuntimeError):
    """The saved index holds vectors of another encoder than the configured one."""


@dataclass(frozen=True)
class IndexState:
    kind: str  # "flat" or the factory string in use
    count: int
    nlist: int
    trained_size: int
    gpu: bool


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class VectorIndex:
    def __init__(self, settings: IndexSettings, fingerprint: Fingerprint) -> None:
        self.settings = settings
        self.fingerprint = fingerprint
        self.seq = 0  # the store change sequence this index reflects
        self.trained_size = 0  # N at the last training; 0 while exact (flat)
        self.nlist = 0
        self.layout_changed = False  # the saved index was built from another factory string
        self.index: faiss.Index = self._flat()
        self._lock = threading.RLock()
        self._use_gpu = settings.use_gpu == "always" or (settings.use_gpu == "auto" and gpu_available())
        if settings.use_gpu == "always" and not gpu_available():
            raise RuntimeError("index.use_gpu is 'always' but faiss sees no GPU (is faiss-gpu installed?)")
        self._gpu_resources = faiss.StandardGpuResources() if self._use_gpu else None
        self._gpu_index: faiss.Index | None = None

    # -- shape of the index ---------------------------------------------------------------

    def _flat(self) -> faiss.Index:
        return faiss.index_factory(self.fingerprint.dimension, "IDMap2,Flat", faiss.METRIC_INNER_PRODUCT)

    def nlist_for(self, n: int) -> int:
        lists = round(self.settings.nlist_factor * math.sqrt(max(n, 1)))
        return max(1, min(lists, n // self.settings.train_points_per_list))

    def trainable(self, n: int) -> bool:
        return n >= self.settings.train_threshold

    def wants_rebuild(self) -> bool:
        """True when the index should be (re)trained for its current size."""
        n = self.count
        if self.layout_changed:
            return True
        if self.trained_size == 0:
            return self.trainable(n)
        return n >= self.settings.retrain_growth * self.trained_size

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    @property
    def state(self) -> IndexState:
        kind = self.settings.factory.format(nlist=self.nlist) if self.trained_size else "IDMap2,Flat"
        return IndexState(kind, self.count, self.nlist, self.trained_size, self._use_gpu)

    def default_nprobe(self) -> int:
        return self.settings.nprobe or max(1, min(self.nlist, round(math.sqrt(self.trained_size) / 2)))

    # -- updates --------------------------------------------------------------------------

    def upsert(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        if len(keys) == 0:
            return
        with self._lock:
            self.index.remove_ids(keys)  # type: ignore[arg-type]  # faiss's wrapper takes ids; its stub only IDSelector
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), keys)
            self._gpu_index = None

    def remove(self, keys: np.ndarray) -> None:
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        if len(keys) == 0:
            return
        with self._lock:
            self.index.remove_ids(keys)  # type: ignore[arg-type]  # faiss's wrapper takes ids; its stub only IDSelector
            self._gpu_index = None

    def rebuild(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """Replace the contents with all (keys, vectors) given; trains when big enough."""
        keys_parts, vector_parts = [], []
        for keys, vectors in batches:
            keys_parts.append(np.asarray(keys, dtype=np.int64))
            vector_parts.append(np.asarray(vectors, dtype=np.float32))
        dim = self.fingerprint.dimension
        keys = np.concatenate(keys_parts) if keys_parts else np.zeros(0, dtype=np.int64)
        vectors = np.concatenate(vector_parts) if vector_parts else np.zeros((0, dim), np.float32)
        n = len(keys)
        if self.trainable(n):
            nlist = self.nlist_for(n)
            index = faiss.index_factory(dim, self.settings.factory.format(nlist=nlist), faiss.METRIC_INNER_PRODUCT)
            ivf = faiss.try_extract_index_ivf(index)
            if ivf is not None:  # FAISS warns below 39 points a list; nlist_for keeps the configured minimum
                ivf.cp.min_points_per_centroid = self.settings.train_points_per_list
            index.train(vectors)
            _hash_direct_map(index)
            trained_size = n
        else:
            index, nlist, trained_size = self._flat(), 0, 0
        if n:
            index.add_with_ids(vectors, keys)
        with self._lock:
            self.index, self.nlist, self.trained_size = index, nlist, trained_size
            self.layout_changed = False
            self._gpu_index = None

    # -- queries --------------------------------------------------------------------------

    def search(
        self,
        queries: np.ndarray,
        k: int,
        nprobe: int | None = None,
        allowed: Sequence[int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and keys ``[n, k]``; missing results have key -1. ``allowed`` restricts
        the search to those keys (a filter evaluated by the store)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        with self._lock:
            if allowed is not None:
                k = min(k, len(allowed))
            k = min(k, self.count)
            if k <= 0:
                n = len(queries)
                return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
            selector = None
            if allowed is not None:
                selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
            if self.trained_size:
                probes = min(nprobe or self.default_nprobe(), self.nlist)
                # faiss's Python layer sets keyword arguments as fields; its stubs take none.
                params: faiss.SearchParameters = faiss.SearchParametersIVF(nprobe=probes, sel=selector)  # type: ignore[call-arg]
            else:
                params = faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
            # A filtered search stays on the CPU: GPU indexes take no id selector.
            index = self.index if selector is not None else self._search_index()
            return index.search(queries, k, params=params)

    def reconstruct(self, keys: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Stored vectors ``[n, d]`` for ``keys`` and a mask of the keys found (zero rows for
        keys the index lacks: a document written to the store but not yet indexed)."""
        ids = np.ascontiguousarray(keys, dtype=np.int64)
        dim = self.fingerprint.dimension
        with self._lock:
            try:
                return self.index.reconstruct_batch(ids), np.ones(len(ids), dtype=bool)
            except RuntimeError:  # some key is missing: fall back to one at a time
                vectors = np.zeros((len(ids), dim), dtype=np.float32)
                found = np.zeros(len(ids), dtype=bool)
                for i, key in enumerate(ids):
                    try:
                        vectors[i] = self.index.reconstruct(int(key))
                        found[i] = True
                    except RuntimeError:
                        pass
                return vectors, found

    def _search_index(self) -> faiss.Index:
        if not self._use_gpu or not self.trained_size:
            return self.index  # exact search on small collections stays on the CPU
        if self._gpu_index is None:
            assert self._gpu_resources is not None  # made with _use_gpu
            self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self.index)
        return self._gpu_index

    # -- persistence ----------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        with self._lock:
            atomic_write(directory / INDEX_FILE, lambda tmp: faiss.write_index(self.index, tmp))
            manifest = {
                "fingerprint": str(self.fingerprint),
                "seq": self.seq,
                "count": self.count,
                "nlist": self.nlist,
                "trained_size": self.trained_size,
                "factory": self.settings.factory,
            }
            # Written after the index: a crash in between leaves an older seq, and catching
            # up again from it is harmless because every update is an idempotent upsert/remove.
            atomic_write_text(directory / MANIFEST_FILE, json.dumps(manifest))

    @classmethod
    def load(cls, directory: Path, settings: IndexSettings, fingerprint: Fingerprint) -> VectorIndex:
        """The saved index when there is one (checked against ``fingerprint``), else an empty one."""
        vectors = cls(settings, fingerprint)
        manifest_path = Path(directory) / MANIFEST_FILE
        index_path = Path(directory) / INDEX_FILE
        if not (manifest_path.is_file() and index_path.is_file()):
            return vectors
        manifest = json.loads(manifest_path.read_text())
        if manifest["fingerprint"] != str(fingerprint):
            raise EncoderMismatch(
                f"the vector index in {directory} was built with encoder {manifest['fingerprint']}, "
                f"but the configuration now uses {fingerprint}. Run `dss reindex` to re-encode the "
                "collection with the new encoder (or restore the previous encoder settings)."
            )
        vectors.trained_size = int(manifest["trained_size"])
        vectors.nlist = int(manifest["nlist"])
        # Another factory string or another nlist rule (as when the default went from 4 to 8
        # sqrt(N) lists) rebuilds the index from the stored embeddings.
        vectors.layout_changed = bool(vectors.trained_size) and (
            manifest["factory"] != settings.factory or vectors.nlist != vectors.nlist_for(vectors.trained_size)
        )
        vectors.index = faiss.read_index(str(index_path))
        vectors.seq = int(manifest["seq"])
        if vectors.trained_size and vectors.nlist:
            _hash_direct_map(vectors.index)
        return vectors


def _hash_direct_map(index: faiss.Index) -> None:
    """A hash table from id to list position makes an IVF index's remove_ids cheap for
    updates. FAISS cannot remove through it from fast-scan lists (codes packed in SIMD
    blocks, "PQ...x4fs"): those are scanned for the ids instead."""
    ivf = faiss.try_extract_index_ivf(index)
    # faiss's stubs lack BlockInvertedLists and DirectMap, and give an IVF index's lists as optional.
    lists = faiss.downcast_InvertedLists(ivf.invlists) if ivf is not None else None  # type: ignore[arg-type]
    if ivf is None or isinstance(lists, faiss.BlockInvertedLists):  # type: ignore[attr-defined]
        return
    if ivf.direct_map.type != faiss.DirectMap.Hashtable:  # type: ignore[attr-defined]
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
