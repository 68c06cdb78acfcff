from pathlib import Path

import pytest

from callctl.cli import main
from callctl.config import load_settings
from callctl.errors import ConfigError


def test_environment_overrides_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("ari_url: http://10.0.0.1:8088/\nshutdown_grace_s: 5\n")
    s = load_settings(f, {"CALLCTL_SHUTDOWN_GRACE_S": "7.5"})
    assert s.ari_url == "http://10.0.0.1:8088/" and s.shutdown_grace_s == 7.5 and s.source == str(f)


@pytest.mark.parametrize(("text", "message"), [
    ("ari_url: [1\n", "c.yaml:2:1: settings file is not valid YAML"),
    ("bogus: 1\n", "unknown setting 'bogus' (known: "),
    ("shutdown_grace_s: soon\n", "setting 'shutdown_grace_s' is invalid"),
    ("- a\n", "must be a mapping"),
])
def test_bad_settings_file_names_the_file_and_problem(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=None) as info:
        load_settings(f, {})
    assert message in str(info.value)


def test_cli_bad_config_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("database_url: mysql://x\n")
    assert main(["--config", str(f), "run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["callctl: error: database_url must start with postgresql:// (set CALLCTL_DATABASE_URL)"]


def test_cli_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.yaml"), "run"]) == 2
    assert "cannot read settings file" in capsys.readouterr().err
