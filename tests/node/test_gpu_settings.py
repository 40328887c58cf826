"""The [gpu] settings: GPU leases and the compile cache the sandboxes share."""

from __future__ import annotations

from pathlib import Path

import pytest

import node.runtime
from node.runtime import open_node


def test_listed_gpus_give_leases_a_shared_cache_and_no_address_space_cap(tmp_path: Path) -> None:
    home = tmp_path / "home"
    open_node(home, create=True)
    config = home / "config.toml"
    assert 'devices = "auto"' in config.read_text()  # what init writes
    config.write_text(config.read_text().replace('devices = "auto"', "devices = [0, 1]"))
    engineer = open_node(home).engineer()
    assert engineer.devices is not None and engineer.devices.devices == (0, 1)
    limits = engineer.limits
    assert limits.address_space_bytes is None
    assert limits.shared_cache == home / "cache" / "compile" and limits.shared_cache.is_dir()
    assert limits.extra_env["TRITON_CACHE_AUTOTUNING"] == "1"
    assert home in limits.hidden_paths  # the cache is re-exposed; the rest of the home is not


def test_without_gpus_training_stays_on_the_cpu(tmp_path: Path) -> None:
    engineer = open_node(tmp_path / "home", create=True).engineer()
    assert engineer.devices is None
    assert engineer.limits.shared_cache is None
    assert engineer.limits.address_space_bytes == 8 * 2**30


def _devices(home: Path, value: str) -> None:
    config = home / "config.toml"
    lines = config.read_text().splitlines()
    config.write_text(
        "\n".join(f"devices = {value}" if ln.startswith("devices = ") else ln for ln in lines)
    )


@pytest.mark.parametrize("visible", [0, 3])
def test_auto_uses_every_visible_gpu_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, visible: int
) -> None:
    monkeypatch.setattr(node.runtime, "visible_gpus", lambda: visible)
    opened = open_node(tmp_path / "home", create=True)
    assert opened.gpus() == tuple(range(visible))
    engineer = opened.engineer()
    if visible:
        assert engineer.devices is not None and engineer.devices.devices == (0, 1, 2)
        assert opened.device_line() == 'training on GPU(s) 0, 1, 2 ([gpu] devices = "auto")'
    else:
        assert engineer.devices is None
        assert opened.device_line() == "training on the CPU (no GPU visible)"


def test_gpus_left_unused_are_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node.runtime, "visible_gpus", lambda: 2)
    home = tmp_path / "home"
    open_node(home, create=True)
    _devices(home, "[]")
    opened = open_node(home)
    assert opened.gpus() == ()
    assert opened.device_line().startswith("WARNING: training on the CPU although 2 GPU(s)")
    _devices(home, "[1]")
    listed = open_node(home)
    assert listed.gpus() == (1,)
    assert listed.device_line() == "training on GPU(s) 1 ([gpu] devices)"


def test_a_bad_devices_value_is_named(tmp_path: Path) -> None:
    from node.errors import ConfigError

    home = tmp_path / "home"
    open_node(home, create=True)
    _devices(home, '"all"')
    with pytest.raises(ConfigError, match=r"gpu\.devices"):
        open_node(home)
