"""The ``dss`` command line: ingest, search, eval, stats, reindex, serve, keys."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from search.config import ConfigError, Settings, load_settings
from search.request import MODES

if TYPE_CHECKING:  # the heavy modules are imported inside the commands that need them
    from indexer.collection import Collection
    from indexer.ingest import IngestReport

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models are local files; never reach for a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="deepseek-search: semantic search engine.")
console = Console()
err = Console(stderr=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", help="YAML settings file.")]
DataDirOption = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (store, indexes).")]
MODE_HELP = " | ".join(MODES)
ModeOption = Annotated[str, typer.Option("--mode", help=MODE_HELP)]


def _query_runtime(query_setup: str) -> str:
    """The path queries take, as ``runtime: auto`` chose it (e.g. "onnx, int8 model")."""
    setup = json.loads(query_setup)
    runtime: str = setup["runtime"]
    return runtime + (", int8 model" if setup.get("int8_queries") else "")


def _settings(config: Path | None, data_dir: Path | None) -> Settings:
    try:
        return load_settings(config, data_dir=data_dir)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


@contextmanager
def _open(settings: Settings) -> Iterator[Collection]:
    from indexer.collection import open_collection
    from search.store import SchemaError
    from search.vector_index import EncoderMismatch

    with err.status("loading encoder and indexes"):
        try:
            collection = open_collection(settings)
        except (EncoderMismatch, SchemaError) as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    try:
        yield collection
    finally:
        collection.close()


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)


def _ingest_with_progress(collection: Collection, path: Path, total: int, label: str) -> IngestReport:
    from indexer.ingest import ingest as run_ingest

    settings = collection.settings
    with _progress() as progress:
        task = progress.add_task(label, total=total)
        return run_ingest(
            collection,
            path,
            settings.ingest.batch_size,
            settings.ingest.max_text_chars,
            on_batch=lambda n: progress.advance(task, n),
        )


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="JSONL file or BEIR folder (corpus.jsonl).")],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Add or update documents; unchanged ones are skipped, bad lines reported and skipped."""
    from indexer.ingest import count_lines

    settings = _settings(config, data_dir)
    try:
        total = count_lines(path)
    except FileNotFoundError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    with _open(settings) as collection:
        report = _ingest_with_progress(collection, path, total, "ingesting")
    for bad in report.bad[:50]:
        err.print(f"[yellow]line {bad.line}: {bad.error}[/yellow]")
    if len(report.bad) > 50:
        err.print(f"[yellow]... and {len(report.bad) - 50} more bad lines[/yellow]")
    console.print(
        f"read {report.read}, applied {report.applied}, unchanged {report.unchanged}, "
        f"stale {report.stale}, bad lines {len(report.bad)} in {report.seconds:.1f}s "
        f"({report.docs_per_s:.1f} docs/s)"
    )


@app.command()
def search(
    query: Annotated[str, typer.Argument()],
    k: Annotated[int, typer.Option("-k", min=1, max=1000)] = 10,
    mode: ModeOption = "default",
    nprobe: Annotated[int | None, typer.Option(min=1)] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Search and print a result table."""
    from search.request import SearchRequest

    settings = _settings(config, data_dir)
    with _open(settings) as collection:
        try:
            result = collection.engine.search(SearchRequest(query, k=k, mode=mode, nprobe=nprobe))
        except ValueError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    table = Table(title=f"{query!r} ({result.mode})")
    for column in ("#", "id", "score", "title", "snippet"):
        table.add_column(column, overflow="fold")
    for rank, hit in enumerate(result.hits, start=1):
        table.add_row(str(rank), hit.id, f"{hit.score:.4f}", hit.title[:60], hit.snippet[:100])
    console.print(table)
    console.print(", ".join(f"{name} {ms:.1f} ms" for name, ms in result.timings_ms.items()))


def _fraction(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 <= value <= 1 else None


@app.command("eval")
def evaluate(
    beir_dir: Annotated[Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv")],
    modes: Annotated[
        list[str] | None,
        typer.Option("--mode", help=f"{MODE_HELP}, or hybrid:W for fixed weight W on dense; repeatable"),
    ] = None,
    nprobe: Annotated[int | None, typer.Option(min=1)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of results per mode.")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Index a BEIR collection (into a temporary data dir unless --data-dir) and score it,
    once per mode, on one index."""
    from indexer.collection import open_collection
    from indexer.ingest import count_lines
    from search.evaluation import evaluate as run_eval
    from search.request import RankOptions, SearchRequest

    requested = modes or ["default"]
    parsed: list[tuple[str, str, RankOptions | None]] = []
    for name in requested:
        mode, _, weight = name.partition(":")
        options = None
        if weight:
            w = _fraction(weight)
            if mode != "hybrid" or w is None:
                err.print(f"[red]--mode {name}: a weight goes with hybrid only, hybrid:W with 0 <= W <= 1[/red]")
                raise typer.Exit(2)
            options = RankOptions(weights={"dense": w, "lexical": 1 - w})
        parsed.append((name, mode, options))
    with tempfile.TemporaryDirectory(prefix="dss-eval-") as tmp:
        settings = _settings(config, data_dir or Path(tmp))
        started = time.perf_counter()
        with err.status("loading encoder"):
            collection = open_collection(settings)
        load_seconds = time.perf_counter() - started
        summaries = []
        try:
            report = _ingest_with_progress(collection, beir_dir, count_lines(beir_dir), "indexing")
            for name, mode, options in parsed:
                try:
                    result = run_eval(collection.engine, beir_dir, mode, nprobe, options=options)
                    resolved = collection.engine.resolved(SearchRequest(name, mode=mode)).mode
                except ValueError as exc:
                    err.print(f"[red]{exc}[/red]")
                    raise typer.Exit(2) from None
                summaries.append(
                    {
                        "collection": beir_dir.name,
                        "mode": name if name == resolved or options else f"{name} ({resolved})",
                        **result.metrics,
                        "queries": result.queries,
                        "search_ms_per_query": round(1000 * result.search_seconds / max(result.queries, 1), 3),
                    }
                )
            state = collection.vectors.state
        finally:
            collection.close()
    context = {
        "docs": report.read,
        "ingest_docs_per_s": round(report.docs_per_s, 2),
        "ingest_s": round(report.seconds, 2),
        "encoder": str(collection.encoder.fingerprint),
        "index": state.kind,
        "load_s": round(load_seconds, 2),
    }
    metrics = [key for key in summaries[0] if key not in ("collection", "mode")]
    table = Table(title=f"{beir_dir.name} · {context['docs']} docs · {context['index']}")
    table.add_column("mode")
    for key in metrics:
        table.add_column(key, justify="right")
    for summary in summaries:
        table.add_row(str(summary["mode"]), *(str(summary[key]) for key in metrics))
    console.print(table)
    if as_json:
        for summary in summaries:
            print(json.dumps({**summary, **context}), flush=True)


@app.command("fit-weights")
def fit_weights(
    beir_dirs: Annotated[list[Path], typer.Argument(help="BEIR folders with judged queries")],
    out: Annotated[Path | None, typer.Option("--out", help="Write the fitted model (JSON) here.")] = None,
    folds: Annotated[int, typer.Option("--folds", min=2)] = 5,
    l2: Annotated[float, typer.Option("--l2", min=0)] = 0.02,
    as_json: Annotated[bool, typer.Option("--json", help="End with the report as one JSON line.")] = False,
    config: ConfigOption = None,
) -> None:
    """Fit the dynamic weight model on judged queries and cross-validate it: across
    collections (fit on each, test on each other) and k folds within each."""
    from indexer.collection import open_collection
    from indexer.ingest import count_lines
    from search.matching.fitting import build_training_set, cross_validation_report, fit

    sets = []
    for beir_dir in beir_dirs:
        with (
            tempfile.TemporaryDirectory(prefix="dss-fit-") as tmp,
            open_collection(_settings(config, Path(tmp))) as collection,
        ):
            _ingest_with_progress(collection, beir_dir, count_lines(beir_dir), f"indexing {beir_dir.name}")
            sets.append(build_training_set(collection.engine, beir_dir))
    report = cross_validation_report(sets, folds=folds, l2=l2)
    table = Table(title="nDCG@10: dynamic weights vs the best fixed weights fitted on the same queries")
    for column in ("fitted on", "tested on", "fixed", "dynamic"):
        table.add_column(column, justify="right" if column in ("fixed", "dynamic") else "left")
    for row in report:
        table.add_row(str(row["train"]), str(row["test"]), f"{row['fixed']:.4f}", f"{row['dynamic']:.4f}")
    console.print(table)
    model = fit(sets, l2=l2)
    if out:
        model.save(out)
        console.print(f"model fitted on {', '.join(d.name for d in sets)} written to {out}")
    if as_json:
        print(json.dumps({"cross_validation": report, "model": model.to_json()}), flush=True)


@app.command()
def stats(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Counts, index type and training state, encoder, sizes on disk."""
    from indexer.layout import disk_usage

    settings = _settings(config, data_dir)
    with _open(settings) as collection:
        store = collection.store.stats()
        state = collection.vectors.state
        rows = {
            "documents (live)": store.live,
            "tombstones": store.deleted,
            "change sequence": store.last_seq,
            "encoder": str(collection.encoder.fingerprint),
            "encoder device": collection.encoder.device,
            "query runtime": _query_runtime(collection.encoder.query_setup),
            "vector index": state.kind,
            "vector count": state.count,
            "trained": f"yes, at {state.trained_size} vectors (nlist {state.nlist})"
            if state.trained_size
            else f"no: exact search until {collection.vectors.settings.train_threshold} vectors",
            "nprobe (default)": collection.vectors.default_nprobe() if state.trained_size else "-",
            "gpu": state.gpu,
            "lexical documents": collection.lexical.count,
            "index generation": collection.generation.name,
            "vector index on disk": _size(disk_usage(collection.generation / "vectors")),
            "lexical index on disk": _size(disk_usage(collection.generation / "lexical")),
            "store": collection.store.engine.url.render_as_string(hide_password=True),
        }
        if collection.store.dialect == "sqlite":
            rows["store on disk"] = _size(sum(disk_usage(p) for p in settings.data_dir.glob("store.sqlite*")))
    table = Table(title=f"deepseek-search · {settings.data_dir}")
    table.add_column("")
    table.add_column("", justify="right")
    for key, value in rows.items():
        table.add_row(key, str(value))
    console.print(table)


@app.command()
def migrate(
    check: Annotated[
        bool, typer.Option("--check", help="Change nothing; exit 1 if the store needs migrating.")
    ] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Upgrade the store's schema to this release's newest revision (what a process does at
    start unless store.migrate_on_start is off); print the revision before and after."""
    from search.store import SchemaError, prepare_schema

    settings = _settings(config, data_dir)
    if settings.store.url is None and not check:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        report = prepare_schema(settings.store_url, migrate=True, dry_run=check)
    except SchemaError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(f"store: {report.describe(report.before)}")
    if check:
        if report.pending:
            console.print(f"pending: {report.describe(report.after)} -> {report.head}")
            raise typer.Exit(1)
        console.print(f"up to date at {report.head}")
    else:
        console.print(f"now:   {report.describe(report.after)}")


@app.command()
def reindex(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Rebuild every index from the store (re-encoding only if the encoder changed)."""
    from indexer.reindex import rebuild
    from search.encoders import load_encoder
    from search.store import SchemaError, Store

    settings = _settings(config, data_dir)
    with err.status("loading encoder"):
        encoder = load_encoder(settings.encoder)
    try:
        store = Store(settings.store_url, migrate_on_start=settings.store.migrate_on_start)
    except SchemaError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    try:
        with _progress() as progress:
            task = progress.add_task("reindexing", total=max(store.stats().live, 1))
            report = rebuild(
                settings, store, encoder, progress=lambda done, total: progress.update(task, completed=done)
            )
    finally:
        store.close()
    console.print(f"reindexed {report.documents} documents into {report.generation.name} (seq {report.seq})")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: api.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: api.port).")] = None,
    consume: Annotated[bool, typer.Option("--consume", help="Also run the Kafka consumer in-process.")] = False,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="Serving processes (default: api.workers).")
    ] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    settings = _settings(config, data_dir)
    if workers is not None:
        settings.api.workers = workers
    if settings.api.workers > 1:
        # Before prometheus_client is first imported (it picks its value store then): every
        # process writes its samples here and /metrics adds them up (api/metrics.py).
        samples = settings.data_dir.resolve() / "metrics"
        shutil.rmtree(samples, ignore_errors=True)  # a previous run's processes are gone
        samples.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(samples)

    import uvicorn

    from api.app import create_app
    from api.logs import configure_json_logging
    from search.store import SchemaError
    from search.vector_index import EncoderMismatch

    configure_json_logging()
    host, port = host or settings.api.host, port or settings.api.port
    try:
        if settings.api.workers > 1:
            from api.workers import serve_workers

            serve_workers(settings, host, port, consume=consume)
        else:
            uvicorn.run(create_app(settings, consume=consume), host=host, port=port, log_config=None, access_log=False)
    except (ConfigError, EncoderMismatch, SchemaError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@app.command()
def consume(
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Apply document-change events from Kafka until stopped (SIGTERM / Ctrl-C)."""
    import signal
    import threading

    from api.logs import configure_json_logging
    from streaming.consumer import DocumentConsumer
    from streaming.metrics import StreamMetrics

    settings = _settings(config, data_dir)
    configure_json_logging()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with _open(settings) as collection:
        metrics = StreamMetrics()
        if metrics_port:
            from prometheus_client import start_http_server

            start_http_server(metrics_port, addr="127.0.0.1", registry=metrics.registry)
        consumer = DocumentConsumer(settings, collection, metrics)
        consumer.start()
        logging.getLogger("dss").info(
            "consuming", extra={"topic": settings.kafka.topic, "bootstrap": settings.kafka.bootstrap_servers}
        )
        # Wake now and then: the kernel may deliver SIGTERM to another thread (torch, kafka io),
        # and a main thread blocked in a bare wait() would never run the Python handler.
        while not stop.wait(0.5):
            pass
        consumer.stop()


@app.command()
def produce(
    path: Annotated[Path, typer.Argument(help="JSONL: one event (or document) a line.")],
    topic: Annotated[str | None, typer.Option(help="Topic (default: kafka.topic).")] = None,
    config: ConfigOption = None,
) -> None:
    """Publish document-change events, keyed by id. A line without "version" gets the current
    time in microseconds (later publishes win); "op" defaults to upsert; bad lines are skipped."""
    import time as clock

    from pydantic import ValidationError

    from streaming.producer import make_producer, publish
    from streaming.schema import DocumentEvent

    settings = _settings(config, None)
    events, bad = [], 0
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                record.setdefault("schema", 1)
                record.setdefault("op", "upsert")
                record.setdefault("version", clock.time_ns() // 1000)
                if "_id" in record:
                    record["id"] = str(record.pop("_id"))
                events.append(DocumentEvent.model_validate_json(json.dumps(record)))
            except (ValueError, ValidationError, AttributeError) as exc:
                bad += 1
                err.print(f"[yellow]line {number}: {str(exc).splitlines()[0]}[/yellow]")
    producer = make_producer(settings.kafka)
    sent = publish(producer, topic or settings.kafka.topic, events)
    producer.close()
    console.print(f"published {sent} events to {topic or settings.kafka.topic}, skipped {bad} bad lines")


keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys (stored as hashes in the data dir).")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="reader | writer | admin")],
    name: Annotated[str | None, typer.Option(help="A name to list and revoke it by.")] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create a key and print it once; only its hash is stored."""
    from api.keys import KeyStore, Role

    settings = _settings(config, data_dir)
    if role not in Role.__members__:
        err.print(f"[red]role must be one of {', '.join(Role.__members__)}[/red]")
        raise typer.Exit(2)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        secret, record = KeyStore(settings.data_dir).create(Role[role], name)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    err.print(f"created {record.role} key {record.name!r}; it is shown only this once:")
    print(secret)


@keys_app.command("list")
def keys_list(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """List keys (names and roles; the keys themselves are not stored)."""
    from api.keys import KeyStore

    settings = _settings(config, data_dir)
    table = Table()
    for column in ("name", "role", "created"):
        table.add_column(column)
    for key in KeyStore(settings.data_dir).list():
        table.add_row(key.name, key.role, key.created_at)
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(name: str, config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Revoke a key by name (a running server stops accepting it at once)."""
    from api.keys import KeyStore

    settings = _settings(config, data_dir)
    if not KeyStore(settings.data_dir).revoke(name):
        err.print(f"[red]no key named {name!r}[/red]")
        raise typer.Exit(1)
    console.print(f"revoked {name!r}")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
