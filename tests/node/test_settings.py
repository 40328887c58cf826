"""Settings: the TOML file, ASI_NODE_* overrides, errors that name the bad key, init_home."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

from node.errors import ConfigError
from node.settings import Settings, default_config_text, init_home, load_settings
from node.store import Store
from node.store.migrations import MIGRATIONS


def write_config(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(text)
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_defaults_without_a_config_file(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, env={})
    assert settings.home == tmp_path
    assert settings.database_url == f"sqlite:///{tmp_path / 'node.db'}"
    assert (settings.loop.workers, settings.loop.threads_per_worker) == (2, 1)
    assert settings.loop.researcher_mode == "offline"
    assert (settings.api.host, settings.api.port, settings.api.operator_token) == (
        "127.0.0.1",
        8787,
        None,
    )
    assert settings.log.level == "INFO"
    assert settings.config_path == tmp_path / "config.toml"
    assert settings.workspaces_dir == tmp_path / "workspaces"


def test_values_come_from_the_toml_file(tmp_path: Path) -> None:
    write_config(
        tmp_path,
        'database_url = "postgresql+psycopg://asi@db:5432/asi"\n'
        "[loop]\nworkers = 3\n[sandbox]\nwall_seconds = 60\n[log]\nlevel = 'debug'\n",
    )
    settings = load_settings(tmp_path, env={})
    assert settings.database_url == "postgresql+psycopg://asi@db:5432/asi"
    assert settings.loop.workers == 3
    assert settings.sandbox.wall_seconds == 60.0
    assert settings.sandbox.cpu_seconds == Settings().sandbox.cpu_seconds
    assert settings.log.level == "DEBUG"


def test_environment_wins_over_the_file_key_by_key(tmp_path: Path) -> None:
    write_config(tmp_path, "[loop]\nworkers = 3\nthreads_per_worker = 2\n")
    env = {"ASI_NODE_LOOP__WORKERS": "5", "ASI_NODE_API__PORT": "9000", "UNRELATED": "x"}
    settings = load_settings(tmp_path, env=env)
    assert settings.loop.workers == 5
    assert settings.loop.threads_per_worker == 2  # from the file, untouched by the env
    assert settings.api.port == 9000


def test_nested_and_top_level_environment_keys(tmp_path: Path) -> None:
    env = {
        "ASI_NODE_SANDBOX__MEMORY_BYTES": "1073741824",
        "ASI_NODE_LOOP__RESEARCHER_MODE": "llm",
        "ASI_NODE_DATABASE_URL": "sqlite:////srv/asi/node.db",
    }
    settings = load_settings(tmp_path, env=env)
    assert settings.sandbox.memory_bytes == 2**30
    assert settings.loop.researcher_mode == "llm"
    assert settings.database_url == "sqlite:////srv/asi/node.db"


def test_home_argument_beats_variable_beats_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"ASI_NODE_HOME": str(tmp_path / "from-env")}
    assert load_settings(tmp_path / "from-arg", env=env).home == tmp_path / "from-arg"
    assert load_settings(env=env).home == tmp_path / "from-env"
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert load_settings(env={}).home == tmp_path / "user" / ".asi-node"


def test_process_environment_is_read_when_no_env_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASI_NODE_HOME", str(tmp_path))
    monkeypatch.setenv("ASI_NODE_LOOP__WORKERS", "7")
    settings = load_settings()
    assert (settings.home, settings.loop.workers) == (tmp_path, 7)


def test_secret_is_read_from_a_file_and_never_shown(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    settings = load_settings(tmp_path, env={"ASI_NODE_API__OPERATOR_TOKEN_FILE": str(token_file)})
    assert settings.api.operator_token is not None
    assert settings.api.operator_token.get_secret_value() == "s3cret-token"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.api)


def test_settings_ignore_the_process_environment_when_built_directly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ASI_NODE_LOOP__WORKERS", "9")
    assert Settings().loop.workers == 2


def config_error(tmp_path: Path, text: str | None, env: dict[str, str] | None = None) -> str:
    if text is not None:
        write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, env=env or {})
    error = info.value
    # Nothing chained would be printed under the message: no pydantic traceback.
    assert error.__cause__ is None and (error.__suppress_context__ or error.__context__ is None)
    message = str(info.value)
    assert "pydantic" not in message and "Traceback" not in message
    return message


def test_unknown_key_in_the_file_is_named_with_the_known_ones(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[loop]\nworkres = 4\n")
    assert str(tmp_path / "config.toml") in message
    assert "loop.workres: unknown key" in message
    assert "workers, threads_per_worker, researcher_mode" in message


def test_unknown_section_in_the_file_is_an_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[tpu]\ncount = 8\n")
    assert "tpu: unknown key" in message and "loop, sandbox, gpu, api, log" in message


def test_wrong_type_in_the_file_says_what_was_expected(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[loop]\nworkers = "many"\n')
    assert f"{tmp_path / 'config.toml'}: loop.workers:" in message
    assert "valid integer" in message and "'many'" in message


def test_out_of_range_value_is_named(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[api]\nport = 70000\n")
    assert "api.port" in message and "65535" in message


def test_bad_toml_syntax_names_the_file_and_the_place(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[loop]\nworkers = = 4\n")
    assert str(tmp_path / "config.toml") in message
    assert "not valid TOML" in message and "line 2" in message


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    message = config_error(tmp_path, None, {"ASI_NODE_LOOP__WORKERS": "lots"})
    assert "environment variable ASI_NODE_LOOP__WORKERS: loop.workers:" in message


def test_unknown_environment_key_names_the_variable(tmp_path: Path) -> None:
    message = config_error(tmp_path, None, {"ASI_NODE_LOOP__WORKRES": "4"})
    assert "environment variable ASI_NODE_LOOP__WORKRES: loop.workres: unknown key" in message


def test_home_cannot_be_set_inside_its_own_config(tmp_path: Path) -> None:
    message = config_error(tmp_path, 'home = "/elsewhere"\n')
    assert "ASI_NODE_HOME" in message


def test_a_bad_secret_is_not_echoed(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[api]\noperator_token = 123456789\n")
    assert "api.operator_token" in message and "123456789" not in message


def test_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    message = config_error(tmp_path, None, {"ASI_NODE_API__OPERATOR_TOKEN_FILE": str(missing)})
    assert "ASI_NODE_API__OPERATOR_TOKEN_FILE" in message and str(missing) in message


def test_unsupported_database_url_is_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, 'database_url = "mysql://x@y/z"\n')
    assert "database_url" in message and "postgresql+psycopg" in message


def test_init_home_lays_out_a_private_home(tmp_path: Path) -> None:
    home = tmp_path / "node"
    assert init_home(home, env={}) == home
    assert mode(home) == 0o711
    assert mode(home / "workspaces") == 0o711
    assert mode(home / "config.toml") == 0o600
    assert mode(home / "node.db") == 0o600
    with Store.open(f"sqlite:///{home / 'node.db'}") as store:
        assert store.list_campaigns() == []
        assert store.schema_version() == len(MIGRATIONS)


def test_written_config_is_commented_and_loads_as_the_defaults(tmp_path: Path) -> None:
    init_home(tmp_path, env={})
    text = (tmp_path / "config.toml").read_text()
    assert text == default_config_text()
    assert text.count("\n# ") > 10
    assert load_settings(tmp_path, env={}) == Settings(home=tmp_path)
    parsed = tomllib.loads(text)
    assert set(parsed) == {
        "loop",
        "sandbox",
        "gpu",
        "api",
        "log",
        "llm",
        "icp",
        "tlog",
        "governance",
        "attestation",
        "chain",
        "ray",
        "network",
    }
    assert set(parsed["llm"]["researcher"]) == set()  # per-role overrides all commented
    assert set(parsed["sandbox"]) == set(Settings().sandbox.model_dump())


def test_init_home_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    init_home(tmp_path, env={})
    config = write_config(tmp_path, "[loop]\nworkers = 8\n")
    with Store.open(f"sqlite:///{tmp_path / 'node.db'}") as store:
        store.create_campaign("kept", {})
    with pytest.raises(ConfigError, match=r"already exists.*--force"):
        init_home(tmp_path, env={})
    assert "workers = 8" in config.read_text()
    init_home(tmp_path, force=True, env={})
    assert load_settings(tmp_path, env={}).loop.workers == 2
    with Store.open(f"sqlite:///{tmp_path / 'node.db'}") as store:
        assert [c.name for c in store.list_campaigns()] == ["kept"]


def test_init_home_creates_the_database_the_environment_names(tmp_path: Path) -> None:
    elsewhere = tmp_path / "db" / "other.db"
    elsewhere.parent.mkdir()
    init_home(tmp_path / "node", env={"ASI_NODE_DATABASE_URL": f"sqlite:///{elsewhere}"})
    assert elsewhere.exists()
    assert not (tmp_path / "node" / "node.db").exists()


def test_init_home_writes_nothing_when_the_environment_is_bad(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ASI_NODE_LOOP__WORKERS"):
        init_home(tmp_path / "node", env={"ASI_NODE_LOOP__WORKERS": "zero"})
    assert not (tmp_path / "node").exists()


def test_init_home_without_a_path_uses_asi_node_home(tmp_path: Path) -> None:
    home = tmp_path / "from-env"
    assert init_home(env={"ASI_NODE_HOME": str(home)}) == home
    assert (home / "config.toml").exists()


def test_icp_canister_ids_must_be_principals(tmp_path: Path) -> None:
    env = {"ASI_NODE_ICP__ANCHOR_CANISTER": "ryjl3-tyaaa-aaaaa-aaaba-caa"}
    with pytest.raises(ConfigError, match="anchor_canister"):
        load_settings(tmp_path, env=env)
    env = {"ASI_NODE_ICP__ANCHOR_CANISTER": "ryjl3-tyaaa-aaaaa-aaaba-cai"}
    assert load_settings(tmp_path, env=env).icp.anchor_canister == "ryjl3-tyaaa-aaaaa-aaaba-cai"
