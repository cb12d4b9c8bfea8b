"""The documentation stays true: the configuration reference matches the settings, and the
README stays a user's page that starts with the two set-up commands."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_COMMANDS = [
    "bash scripts/setup.sh && dss ingest samples/sample.jsonl && DSS_API__AUTH=false dss serve",
    "bash scripts/setup.sh && python3 -m pytest -q",
]


def _config_reference():
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "scripts" / "config_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_current() -> None:
    reference = _config_reference()
    written = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert reference.render() == written, (
        "docs/configuration.md is out of date with search/config.py: "
        "run `python scripts/config_reference.py` and commit the result"
    )


def test_configuration_reference_names_every_setting() -> None:
    reference = _config_reference()
    text = reference.render()
    for _, dotted, _, _ in reference.settings_rows():
        env = "DSS_" + dotted.replace(".", "__").upper()
        assert f"| `{dotted}` | `{env}` |" in text
    assert "no description" not in text, "a setting has no description: comment it in search/config.py"


def test_readme_is_a_short_page_that_starts_with_the_set_up_commands() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 220, (
        f"README.md has {len(lines)} lines; keep it a user's page (at most 220) and move the rest to docs/"
    )
    body = [line for line in lines if line.strip() and not line.startswith("# ")]
    assert body[:4] == ["```bash", *README_COMMANDS, "```"], "README.md must open with the two set-up commands"
