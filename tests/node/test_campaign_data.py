"""Campaigns on tokenised data: the exploration preset, data_path checks, and a real
sandboxed run reading a shard that lies under the (hidden) node home."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from loop.tasks import LMSpec
from loop.tasks.shards import generated_shard
from loop.train_device import exploration_preset
from node.campaign.config import Budget, CampaignConfig, parse_config
from node.campaign.tasks import build_backbone, build_task, build_train, check_data
from node.cli.main import main
from node.errors import ConfigError
from node.runtime import open_node


def lm(data_path: str, **kw: object) -> CampaignConfig:
    return CampaignConfig(task="lm", data_path=data_path, baselines=("deltanet", "linear"), **kw)


def test_the_exploration_preset_is_loop_train_devices() -> None:
    config = lm("/data/shard.npy", preset="exploration")
    preset = exploration_preset("/data/shard.npy")
    assert build_task(config) == preset.spec
    assert build_backbone(config) == preset.model
    assert build_train(config, 2, 7) == dataclasses.replace(preset.train, threads=2, seed=7)
    wide = lm("/data/shard.npy", preset="exploration", vocab_size=50_257, train_steps=300)
    spec = build_task(wide)
    assert isinstance(spec, LMSpec) and spec.vocab_size == 50_257 and spec.seq_len == 2048
    assert build_backbone(wide).vocab_size == 50_257
    assert build_train(wide, 1, 0) == dataclasses.replace(
        exploration_preset("/data/shard.npy", vocab_size=50_257).train.with_steps(300),
        threads=1,
        seed=0,
    )
    small = build_task(lm("/data/shard.npy", preset="quick"))
    assert small == dataclasses.replace(LMSpec.quick(), data_path="/data/shard.npy")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"task": "lm", "preset": "exploration"}, "preset 'exploration' needs task = 'lm'"),
        ({"task": "mqar", "data_path": "/d/s.npy"}, "data_path is for task = 'lm'"),
        ({"task": "lm", "vocab_size": 512}, "vocab_size goes with data_path"),
        ({"task": "lm", "data_path": "/d/s.npy", "vocab_size": 1}, "vocab_size: Input should"),
    ],
)
def test_data_settings_that_cannot_work_are_refused(data: dict[str, object], why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_config(data)


def test_check_data_names_what_is_wrong_with_the_shard(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    good = data / "bytes.npy"
    generated_shard(good, n_tokens=4096)
    check_data(lm(str(good), preset="quick"), home)

    odd = data / "odd.bin"
    odd.write_bytes(b"\x01\x02\x03")
    wide = data / "wide.npy"
    np.save(wide, np.full(4096, 300, dtype=np.uint16))
    short = data / "short.npy"
    np.save(short, np.zeros(10, dtype=np.uint16))
    flat = data / "matrix.npy"
    np.save(flat, np.zeros((64, 64), dtype=np.uint16))
    cases = {
        str(data / "nope.npy"): "no such file",
        "data/bytes.npy": "give an absolute path",
        str(odd): "not a token shard",
        str(flat): "expected a 1-D integer array",
        str(short): "10 tokens, too few for sequences of 128",
        str(wide): "token 300 is outside the vocabulary of 256",
        str(tmp_path / "bytes.npy"): "its folder holds the node home",
    }
    generated_shard(tmp_path / "bytes.npy", n_tokens=4096)
    for path, why in cases.items():
        with pytest.raises(ConfigError, match=why):
            check_data(lm(path, preset="quick"), home)
    check_data(lm(str(wide), preset="quick", vocab_size=512), home)

    late = data / "late.npy"  # a stray token past the first million
    tokens = np.zeros(1_500_000, dtype=np.uint16)
    tokens[1_200_000] = 999
    np.save(late, tokens)
    check_data(lm(str(late), preset="quick"), home)  # a run reads the first 2**20 only
    with pytest.raises(ConfigError, match="token 999 is outside the vocabulary of 256"):
        check_data(lm(str(late), preset="quick"), home, scan_tokens=None)


def test_campaign_create_refuses_a_missing_shard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    config = tmp_path / "c.toml"
    config.write_text(f'task = "lm"\npreset = "quick"\ndata_path = "{tmp_path}/gone.npy"\n')
    assert main(["--home", str(home), "campaign", "create", "x", "--config", str(config)]) == 2
    assert f"data_path {tmp_path}/gone.npy: no such file" in capsys.readouterr().err
    late = tmp_path / "data" / "late.npy"  # create reads every token
    late.parent.mkdir()
    tokens = np.zeros(1_500_000, dtype=np.uint16)
    tokens[-1] = 999
    np.save(late, tokens)
    config.write_text(f'task = "lm"\npreset = "quick"\ndata_path = "{late}"\n')
    assert main(["--home", str(home), "campaign", "create", "x", "--config", str(config)]) == 2
    assert "token 999 is outside the vocabulary of 256" in capsys.readouterr().err
    assert open_node(home).store.list_campaigns() == []


def test_a_sandboxed_campaign_trains_on_a_shard_under_the_hidden_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    shard = home / "data" / "shard.npy"  # the home is masked in the jail; this folder is not
    generated_shard(shard, n_tokens=65_536)
    config = lm(
        str(shard),
        preset="quick",
        train_steps=12,
        rerun_seeds=(1,),
        budget=Budget(max_candidates=0),
    )
    node = open_node(home)
    camp = node.store.create_campaign("shard", config.model_dump(mode="json"))
    summary = node.run_campaign(camp.id)
    assert summary.reason == "budget" and summary.finished == 2, summary
    exps = node.store.list_experiments(camp.id)
    assert [e.status for e in exps] == ["done", "done"], [e.analysis for e in exps]
    for exp in exps:
        metrics = node.store.get_experiment(exp.id).metrics or {}
        assert "heldout_loss" in metrics


def test_the_engineer_never_exposes_a_folder_that_holds_a_hidden_path(tmp_path: Path) -> None:
    from loop.engineer import Engineer, ExperimentJob
    from loop.model import BackboneConfig
    from loop.sandbox import Limits, SandboxError
    from loop.screen import ScreenConfig
    from loop.train import TrainConfig

    home = tmp_path / "home"
    home.mkdir()
    shard = tmp_path / "shard.npy"  # beside the home: its folder would show the home
    generated_shard(shard, n_tokens=4096)
    job = ExperimentJob(
        experiment_id="e1",
        code="from kernels.baselines import DeltaNet as Mixer\n",
        task=dataclasses.replace(LMSpec.quick(), data_path=str(shard)),
        train=TrainConfig.quick().with_steps(2),
        seed=0,
        heldout_seed=1,
        backbone=BackboneConfig(vocab_size=256),
        options={},
        screen=ScreenConfig(max_cost_ratio=None),
    )
    engineer = Engineer(tmp_path / "ws", Limits(hidden_paths=(home,)))
    with pytest.raises(SandboxError, match="keep shards in a folder of their own"):
        engineer.run(job)


def test_the_readme_campaign_on_a_shard_is_a_valid_exploration_config() -> None:
    import re
    import tomllib

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if "data_path" in b]
    config = parse_config(tomllib.loads(block), "README")
    assert config.preset == "exploration" and config.data_path is not None
    assert build_backbone(config) == exploration_preset(config.data_path).model
