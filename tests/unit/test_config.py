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


def test_recording_settings_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("spool_dir: /srv/callctl/spool\nrecording_objection_key: '#'\n")
    s = load_settings(f, {})
    # Not set: next to the spool, where earlier versions filed them.
    assert s.recordings_dir is None and s.recordings_path == Path("/srv/callctl/recordings")
    assert s.recording_objection_key == "#"
    s = load_settings(f, {"CALLCTL_RECORDINGS_DIR": "/data/recordings", "CALLCTL_RECORDING_OBJECTION_KEY": "7"})
    assert s.recordings_path == Path("/data/recordings") and s.recording_objection_key == "7"
    assert load_settings(None, {}).recording_objection_key == "9"


@pytest.mark.parametrize(("text", "env", "message"), [
    ("recording_objection_key: 12\n", {},
     "recording_objection_key '12' must be one key: 0-9, * or # (set CALLCTL_RECORDING_OBJECTION_KEY or "
     "recording_objection_key in the settings file)"),
    ("", {"CALLCTL_RECORDING_OBJECTION_KEY": "A"}, "recording_objection_key 'A' must be one key: 0-9, * or #"),
    ("recording_objection_key: #\n", {}, "c.yaml: setting 'recording_objection_key' is invalid: no value "
                                         "(in YAML quote '#' and '*': '#')"),
    ("recordings_dir: ''\n", {}, "c.yaml: setting 'recordings_dir' is invalid: expected a path, got nothing"),
])
def test_a_bad_recording_setting_is_one_line_naming_it(tmp_path: Path, text: str, env: dict[str, str],
                                                       message: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(f, env)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_objection_key_is_never_a_key_a_recorded_call_uses_for_something_else() -> None:
    from callctl.recording.rules import objection_key_problem

    in_use = {"#": "transfer"}
    assert objection_key_problem("#", in_use) == "is already used during a recorded call (transfer): choose another"
    assert objection_key_problem("9", in_use) is None
    assert objection_key_problem("*") is None and objection_key_problem("") is not None


def test_ari_lost_calls_after_s_must_be_positive(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("ari_lost_calls_after_s: 0\n")
    with pytest.raises(ConfigError, match=r"ari_lost_calls_after_s 0\.0 must be above 0"):
        load_settings(f, {})
