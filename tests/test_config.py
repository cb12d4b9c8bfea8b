from pathlib import Path

import pytest
import yaml

from search.config import DEFAULT_CONFIG_FILE, ConfigError, Settings, load_settings


def test_shipped_yaml_matches_code_defaults() -> None:
    shipped = yaml.safe_load(DEFAULT_CONFIG_FILE.read_text())
    defaults = Settings.model_validate({}).model_dump(mode="json")
    assert shipped == defaults


def test_environment_overrides_nested_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSS_INDEX__NPROBE", "16")
    monkeypatch.setenv("DSS_DATA_DIR", "/tmp/dss-env")
    settings = load_settings()
    assert settings.index.nprobe == 16
    assert settings.data_dir == Path("/tmp/dss-env")
    assert settings.index.factory == "IVF{nlist},SQfp16"  # untouched keys keep the YAML value


def test_explicit_override_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSS_DATA_DIR", "/tmp/from-env")
    assert load_settings(data_dir=Path("/tmp/from-flag")).data_dir == Path("/tmp/from-flag")


def test_environment_beats_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("search:\n  candidates: 50\n  hybrid_dense_weight: 0.3\n")
    monkeypatch.setenv("DSS_SEARCH__CANDIDATES", "70")
    settings = load_settings(config)
    assert settings.search.candidates == 70
    assert settings.search.hybrid_dense_weight == 0.3


@pytest.mark.parametrize(
    "yaml_text, named",
    [
        ("index:\n  nprobez: 3\n", "index.nprobez"),
        ("bogus: 1\n", "bogus"),
        ("index:\n  nprobe: lots\n", "index.nprobe"),
        ("encoder:\n  backend: word2vec\n", "encoder.backend"),
    ],
)
def test_bad_yaml_names_the_key(tmp_path: Path, yaml_text: str, named: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings(config)


@pytest.mark.parametrize(
    "name, value, named",
    [
        ("DSS_INDEX__NPROBEZ", "1", "DSS_INDEX__NPROBEZ"),
        ("DSS_NOPE", "1", "DSS_NOPE"),
        ("DSS_SEARCH__CANDIDATES", "-5", "search.candidates"),
    ],
)
def test_bad_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.yaml")
