"""The dss command line, end to end on the bundled sample and a small BEIR collection."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from tests.conftest import SAMPLE

runner = CliRunner()


def _run(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.mark.integration  # the real MiniLM model, through the CLI
def test_ingest_search_stats_on_the_sample(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    first = _run("ingest", str(SAMPLE), "--data-dir", data)
    assert first.exit_code == 0, first.output
    assert "applied 40" in first.stdout
    again = _run("ingest", str(SAMPLE), "--data-dir", data)
    assert "applied 0, unchanged 40" in again.stdout

    for mode in ("dense", "lexical", "hybrid"):
        result = _run("search", "heat transfer in supersonic flight", "-k", "3", "--mode", mode, "--data-dir", data)
        assert result.exit_code == 0, result.output
        assert "sci-002" in result.stdout
    chinese = _run("search", "最新的开源大模型", "--mode", "lexical", "--data-dir", data)
    assert "zh-tech-001" in chinese.stdout

    stats = _run("stats", "--data-dir", data)
    assert stats.exit_code == 0, stats.output
    for expected in ("documents (live)", "40", "IDMap2,Flat", "all-MiniLM-L6-v2", "lexical index on disk"):
        assert expected in stats.stdout
    on_cpu = not __import__("torch").cuda.is_available()
    assert ("onnx, int8 model" if on_cpu else "torch") in stats.stdout  # the query path runtime auto took

    bad_mode = _run("search", "x", "--mode", "sparse", "--data-dir", data)
    assert bad_mode.exit_code == 2 and "mode must be one of" in bad_mode.output


@pytest.mark.integration  # the real MiniLM model, through the CLI
def test_ingest_reports_bad_lines(tmp_path: Path) -> None:
    source = tmp_path / "docs.jsonl"
    source.write_text('{"id": "a", "text": "fine"}\n{broken\n{"id": "b", "text": "also fine"}\n')
    result = _run("ingest", str(source), "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 0
    assert "line 2: invalid JSON" in result.output
    assert "applied 2" in result.stdout and "bad lines 1" in result.stdout


def test_missing_input_and_bad_config_exit_2(tmp_path: Path, monkeypatch) -> None:
    missing = _run("ingest", str(tmp_path / "nope.jsonl"), "--data-dir", str(tmp_path))
    assert missing.exit_code == 2 and "no such file" in missing.output
    monkeypatch.setenv("DSS_INDEX__NPROBE", "-1")
    bad = _run("stats", "--data-dir", str(tmp_path))
    assert bad.exit_code == 2 and "index.nprobe" in bad.output


@pytest.mark.integration  # the real MiniLM model, through the CLI
def test_eval_json_on_a_small_beir_collection(tmp_path: Path) -> None:
    beir = tmp_path / "mini"
    (beir / "qrels").mkdir(parents=True)
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    (beir / "corpus.jsonl").write_text(
        "\n".join(json.dumps({"_id": d["id"], "title": d["title"], "text": d["text"]}) for d in map(json.loads, lines))
    )
    queries = {"q1": "heat transfer in supersonic flight", "q2": "phone camera battery", "q3": "sourdough yeast"}
    (beir / "queries.jsonl").write_text("\n".join(json.dumps({"_id": q, "text": t}) for q, t in queries.items()))
    (beir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\tsci-002\t1\nq1\tzh-sci-001\t1\nq2\telec-001\t1\nq3\tfood-001\t1\n"
    )
    for mode in ("dense", "lexical", "hybrid"):
        result = _run("eval", str(beir), "--mode", mode, "--json")
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        for key in ("ndcg@10", "recall@100", "mrr@10", "docs", "queries", "ingest_docs_per_s"):
            assert key in summary
        assert summary["docs"] == 40 and summary["queries"] == 3 and summary["mode"] == mode
        assert summary["mrr@10"] >= 0.5 and 0 < summary["ndcg@10"] <= 1
