"""The [gpu] settings: GPU leases and the compile cache the sandboxes share."""

from __future__ import annotations

from pathlib import Path

from node.runtime import open_node


def test_listed_gpus_give_leases_a_shared_cache_and_no_address_space_cap(tmp_path: Path) -> None:
    home = tmp_path / "home"
    open_node(home, create=True)
    config = home / "config.toml"
    config.write_text(config.read_text().replace("devices = []", "devices = [0, 1]"))
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
