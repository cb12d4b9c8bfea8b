"""Write docs/configuration.md: every setting of ``search.config.Settings``.

    python scripts/config_reference.py            # (re)write docs/configuration.md
    python scripts/config_reference.py --check    # exit 1 when the file is out of date

For each setting: its dotted name, environment variable, type, default and description. A
description is the field's ``description=`` where it has one; else a line from WRITTEN_HERE
below (for settings with no comment of their own, or one shared with their neighbours); else
the comment written next to the field in search/config.py; else the comment next to the key in
configs/default.yaml. The output depends on the code alone (not on the environment), so the
check is stable.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "configuration.md"
CONFIG_SOURCE = ROOT / "search" / "config.py"
DEFAULT_YAML = ROOT / "configs" / "default.yaml"
REGENERATE = "python scripts/config_reference.py"

# What a section is for (the heading's paragraph).
SECTIONS = {
    "": "Settings at the top level.",
    "encoder": "The model that turns documents and queries into vectors, and how it runs.",
    "store": "The SQL store: the source of truth every index follows.",
    "index": "The FAISS vector index.",
    "lexical": "The tantivy BM25 index and its text analysis.",
    "search": "Query modes, fusion and reranking defaults (each can be changed per request where the API says so).",
    "cache": "Query embeddings and result pages: memory, Redis and SQLite levels.",
    "ingest": "`dss ingest` and the limits on a document's size.",
    "api": "The HTTP service (`dss serve`).",
    "kafka": "The Kafka consumer and producer (`dss consume`, `dss serve --consume`, `dss produce`).",
}

# For the settings that carry no comment of their own in search/config.py (none, a fragment, or
# one shared with the settings next to it).
WRITTEN_HERE = {
    "encoder.backend": "sentence-transformers (the default model is packaged with the project), or deepseek: a local DeepSeek checkpoint directory named in `encoder.model`.",
    "encoder.device": "auto, cpu, cuda or cuda:N.",
    "encoder.max_seq_length": "Longest input in tokens; null = the model's own limit.",
    "encoder.threads": "Intra-op threads of the encoder; null = the runtime's default.",
    "encoder.onnx_cache_dir": "Where exported ONNX models are kept; null = ~/.cache/deepseek-search/onnx.",
    "encoder.micro_batch_max": "Most concurrent queries encoded in one call (1 = no batching): a batch takes what queued while the last one ran, plus what arrives within `micro_batch_wait_ms`. Small batches keep the encoder and the ranking thread busy side by side; raise it on a GPU.",
    "encoder.micro_batch_wait_ms": "Extra wait for more queries after the first of a batch; 0 = only those already queued.",
    "index.use_gpu": "auto: search a trained index on a GPU where faiss-gpu and a CUDA device are present; never; always.",
    "search.default_mode": "The mode a request gets when it asks for `default` (or for no mode): dynamic (per-query weights from the learned model), hybrid (fixed linear weights), rrf (reciprocal rank fusion), dense or lexical.",
    "search.category_weight": "Largest weight of category affinity (for a query squarely about one category); less as the query's category distribution spreads.",
    "search.category_temperature": "Softmax temperature over the query's cosine to each category centroid.",
    "search.freshness_weight": "Weight of freshness in reranking; 0 = none. Settable per request.",
    "search.temporal_freshness_weight": 'Freshness weight used instead for a query asking for recent things ("latest", a year, "最新").',
    "search.half_life_days": "Age at which a document's freshness halves. Settable per request.",
    "search.diversity": "MMR diversification of the page, 1 − λ; 0 = none. Settable per request.",
    "cache.memory_entries": "Entries of the in-process LRU; 0 = no memory level.",
    "cache.sqlite": "Keep a cache level in data_dir/cache.sqlite, which survives restarts.",
    "cache.ttl_s": "Lifetime of a cached result page (an applied write makes older pages unreachable at once anyway).",
    "kafka.partitions": "Partitions of the topics the consumer creates (used only when creating them).",
    "kafka.max_batch": "Most events in one micro-batch.",
    "kafka.max_wait_ms": "A micro-batch closes this long after its first event, unless it is full before.",
    "kafka.retry_min_ms": "First back-off after a broker error; it doubles up to `retry_max_ms`.",
    "kafka.retry_max_ms": "Longest back-off between reconnects.",
    "encoder.batch_size": "Texts per encoder call when encoding documents (ingest, reindex).",
    "ingest.batch_size": "Documents per write batch in `dss ingest` (one store transaction, one encoder call).",
    "ingest.max_text_chars": "Longest title + text a document may have, in characters (longer: refused).",
    "index.train_points_per_list": "Fewest training vectors per IVF list: caps nlist at N / this.",
    "lexical.stemmer": "A Snowball stemmer language, or none.",
    "search.candidates": "Candidates taken from each signal before fusion.",
    "search.hybrid_dense_weight": "Weight of the dense signal in `hybrid` mode (lexical gets the rest).",
    "search.rrf_k": "The k of reciprocal rank fusion (`rrf` mode): 1 / (k + rank).",
    "search.max_k": "Largest k for the engine itself (the HTTP API's own, lower limit is `api.max_k`).",
    "search.rerank_depth": "How many of the relevance order's top candidates reranking considers.",
    "cache.enabled": "Use the caches at all.",
    "cache.redis_timeout_ms": "Socket timeout of a Redis call; a slower Redis is treated as unreachable.",
    "cache.redis_retry_s": "After a Redis error, skip the Redis level this long, then reconnect.",
    "cache.embedding_ttl_s": "Lifetime of a cached query embedding.",
    "cache.key_prefix": "Prefix of every Redis key.",
    "api.host": "Bind address of `dss serve`.",
    "api.port": "Port of `dss serve`.",
    "api.max_query_chars": "Longest query text accepted.",
    "api.max_k": "Largest page (`k`) a search request may ask for.",
    "api.max_offset": "Largest `offset` a search request may ask for.",
    "api.max_batch_documents": "Most documents in one `POST /documents`.",
    "api.max_body_bytes": "Largest request body; larger bodies get 413.",
    "kafka.topic": "Topic of document-change events.",
    "kafka.dead_letter_topic": "Where malformed or refused events go, with the reason.",
    "kafka.group_id": "Consumer group: consumers with the same id split the partitions.",
    "kafka.max_event_bytes": "Largest event accepted; larger ones are dead-lettered.",
    "kafka.session_timeout_ms": "Kafka consumer session timeout.",
    "kafka.heartbeat_interval_ms": "Kafka consumer heartbeat interval.",
    "data_dir": "The data directory: store.sqlite (with the default store), indexes/, caches, API keys.",
}


# -- where descriptions come from ---------------------------------------------------------------


def _clean(lines: list[str]) -> str:
    text = " ".join(line.strip() for line in lines if line.strip())
    return re.sub(r"\s+", " ", text).strip()


def source_comments(path: Path = CONFIG_SOURCE) -> dict[tuple[str, str], str]:
    """(class name, field name) -> the comment block above the field plus its trailing comment."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found: dict[tuple[str, str], str] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            above: list[str] = []
            row = item.lineno - 2  # 0-based index of the line above the field
            while row >= 0 and lines[row].strip().startswith("#"):
                above.insert(0, lines[row].strip().lstrip("#"))
                row -= 1
            trailing = _trailing_comment(lines[(item.end_lineno or item.lineno) - 1])
            text = _clean(above + ([trailing] if trailing else []))
            if text:
                found[(node.name, item.target.id)] = text
    return found


def _trailing_comment(line: str) -> str | None:
    """The comment at the end of a line of code (``#`` outside string literals)."""
    quote: str | None = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#":
            comment = line[i + 1 :].strip()
            return None if comment.startswith(("type:", "noqa")) else comment
    return None


def yaml_comments(path: Path = DEFAULT_YAML) -> dict[str, str]:
    """Dotted key -> the comment at the end of its line in configs/default.yaml."""
    found: dict[str, str] = {}
    section = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*):", line)
        if not match:
            continue
        indent, key = match.groups()
        if not indent:
            section = key
            dotted = key
        else:
            dotted = f"{section}.{key}"
        comment = _trailing_comment(line)
        if comment:
            found[dotted] = comment.rstrip(". ").replace("...", "").strip()
    return found


# -- rendering ------------------------------------------------------------------------------------


def render_type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return render_type(args[0])
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(render_type(a) for a in args)
    if annotation is type(None):
        return "null"
    if annotation is Path:
        return "path"
    if isinstance(annotation, type):
        return {"str": "string", "bool": "boolean", "int": "integer", "float": "number"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _bounds(field: FieldInfo) -> str:
    parts = []
    for item in [*field.metadata, *_annotated_metadata(field.annotation)]:
        for name, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(item, name, None)
            if value is not None:
                parts.append(f"{symbol} {_number(value)}")
    return ", ".join(dict.fromkeys(parts))


def _annotated_metadata(annotation: Any) -> list[Any]:
    found = []
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is typing.Annotated:
            for meta in typing.get_args(arg)[1:]:
                found.extend(getattr(meta, "metadata", [meta]))
    return found


def _number(value: Any) -> str:
    return f"{value:,}".replace(",", "_") if isinstance(value, int) and abs(value) >= 10_000 else str(value)


def render_default(value: Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path):
        return f"`{value.as_posix()}`"
    if isinstance(value, str):
        return f'`"{value}"`' if value == "" or not value.strip() else f"`{value}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _settings_class() -> type[BaseModel]:
    """``search.config.Settings``, importable when this script runs from anywhere."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from search.config import Settings

    return Settings


def settings_rows() -> list[tuple[str, str, FieldInfo, str | None]]:
    """(section, dotted name, field, class name) for every setting, in declaration order."""
    rows: list[tuple[str, str, FieldInfo, str | None]] = []
    for name, field in _settings_class().model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for sub, subfield in annotation.model_fields.items():
                rows.append((name, f"{name}.{sub}", subfield, annotation.__name__))
        else:
            rows.append(("", name, field, "Settings"))
    return rows


def describe(dotted: str, field: FieldInfo, owner: str | None, code: dict, yaml: dict) -> str:
    leaf = dotted.rsplit(".", 1)[-1]
    if field.description:
        return field.description
    if dotted in WRITTEN_HERE:
        return WRITTEN_HERE[dotted]
    comment = code.get((owner, leaf)) or yaml.get(dotted)
    if not comment:
        return "(no description: add a comment next to it in search/config.py)"
    comment = re.sub(r"``([^`]+)``", r"`\1`", comment)  # reST literals to Markdown
    comment = re.sub(r"\bNone\b", "null", comment)  # what a YAML file says
    return comment if comment.endswith((".", ")")) else comment + "."


def render() -> str:
    code, yaml = source_comments(), yaml_comments()
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by scripts/config_reference.py from search/config.py; do not edit by hand.",
        f"     Regenerate with: {REGENERATE} -->",
        "",
        "Every setting, where it comes from and what it does. Settings are read, highest first, from",
        "command-line flags (such as `--data-dir`), environment variables, the YAML file given with",
        "`--config` (else `configs/default.yaml`), and the defaults below.",
        "",
        "- **Environment**: `DSS_` followed by the dotted name in capitals, with `__` between levels:",
        "  `index.nprobe` is `DSS_INDEX__NPROBE`, `data_dir` is `DSS_DATA_DIR`.",
        "- **YAML**: the same names nested, as in `configs/default.yaml`.",
        "- Unknown keys, unknown `DSS_` variables and out-of-range values stop the program with a",
        "  message naming the key.",
        "",
    ]
    rows = settings_rows()
    sections = list(dict.fromkeys(section for section, *_ in rows))
    for section in sections:
        title = f"`{section}`" if section else "Top level"
        out += [f"## {title}", "", SECTIONS.get(section, ""), ""]
        out += ["| setting | environment variable | type | default | description |", "|---|---|---|---|---|"]
        for row_section, dotted, field, owner in rows:
            if row_section != section:
                continue
            env = "DSS_" + dotted.replace(".", "__").upper()
            kind = render_type(field.annotation)
            bounds = _bounds(field)
            if bounds:
                kind = f"{kind} ({bounds})"
            default = render_default(field.get_default(call_default_factory=True))
            text = describe(dotted, field, owner, code, yaml)
            out.append(f"| `{dotted}` | `{env}` | {_cell(kind)} | {_cell(default)} | {_cell(text)} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/configuration.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.is_file() else ""
        if current != text:
            print(
                f"{OUTPUT.relative_to(ROOT)} is out of date with search/config.py: run `{REGENERATE}`", file=sys.stderr
            )
            return 1
        print(f"{OUTPUT.relative_to(ROOT)} is up to date")
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
