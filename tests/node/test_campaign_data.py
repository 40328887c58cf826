"""Campaigns on tokenised data: the exploration preset, data_path and device checks, the
campaign's held-out split, staged zero-shot benchmarks and their checks, and a real
sandboxed run (train, export, held-out scoring, benchmarks) of the tiny LM preset on a
shard built from a text fixture, under the (hidden) node home."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from loop.benchmarks.stage import Source, stage
from loop.benchmarks.staged import MANIFEST_FILE
from loop.model import swiglu_hidden
from loop.tasks import LMSpec
from loop.tasks.shards import build_shards, generated_shard
from loop.train_device import exploration_preset
from node.campaign.config import Budget, CampaignConfig, parse_config
from node.campaign.tasks import build_backbone, build_task, build_train, check_data, split_key
from node.cli.main import main
from node.errors import ConfigError
from node.runtime import open_node

FIXTURE = Path(__file__).parent / "data" / "tiny_corpus.txt"
BENCHMARKS = Path(__file__).parents[1] / "loop" / "data" / "benchmarks"
BENCHMARK_NAMES = ("piqa", "hellaswag", "arc_easy", "winogrande", "lambada_openai")
GPUS = (0,)  # a GPU node's [gpu] devices
CPU: tuple[int, ...] = ()  # a CPU node's


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


def test_lm_campaigns_are_budgeted_in_tokens_and_build_an_mlp_backbone() -> None:
    config = lm("/data/shard.npy", preset="exploration", train_tokens=2**25, heldout_tokens=2**16)
    preset = exploration_preset("/data/shard.npy", train_tokens=2**25, heldout_tokens=2**16)
    assert build_train(config, 1, 0) == dataclasses.replace(preset.train, threads=1, seed=0)
    assert build_train(config, 1, 0).steps == 2**25 // (16 * 2048)
    assert build_task(config) == preset.spec and preset.spec.heldout_windows == 32
    default = build_train(lm("/data/shard.npy", preset="exploration"), 1, 0)
    assert default.steps * 16 * 2048 >= 10**9  # 1 B tokens unless told otherwise
    tiny = lm("/data/shard.npy", preset="quick", train_tokens=32 * 128 * 5, heldout_tokens=1000)
    assert build_train(tiny, 1, 0).steps == 5
    assert build_train(tiny, 1, 0).abort_min_loss == 4.99  # 0.9 of chance, ln 256
    assert build_task(tiny) == dataclasses.replace(
        LMSpec.quick(), data_path="/data/shard.npy", heldout_windows=8
    )
    assert build_backbone(tiny).mlp_hidden == swiglu_hidden(64) == 192
    assert build_backbone(CampaignConfig()).mlp_hidden == 0  # MQAR screening: no MLP
    keyed = build_task(tiny, split_key(b"node secret", "c-1"))
    assert isinstance(keyed, LMSpec) and len(keyed.split_key) == 64
    assert keyed.spec_digest() == build_task(tiny).spec_digest()  # the key is not published
    assert split_key(b"secret", "c-1") != split_key(b"secret", "c-2")
    assert split_key(b"secret", "c-1") != split_key(b"other", "c-1")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"task": "lm", "preset": "exploration"}, "preset 'exploration' needs task = 'lm'"),
        ({"task": "mqar", "data_path": "/d/s.npy"}, "data_path is for task = 'lm'"),
        ({"task": "lm", "vocab_size": 512}, "vocab_size goes with data_path"),
        ({"task": "lm", "data_path": "/d/s.npy", "vocab_size": 1}, "vocab_size: Input should"),
        ({"task": "mqar", "train_tokens": 10**6}, "train_tokens and heldout_tokens are for"),
        ({"task": "lm", "train_tokens": 10**6, "train_steps": 9}, "train_tokens or train_steps"),
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
    generated_shard(good, n_tokens=16_384)
    check_data(lm(str(good), preset="quick"), home, gpus=CPU)

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
        str(short): "too small for this campaign: a stream of 10 tokens",
        str(wide): "token 300 is outside the vocabulary of 256",
        str(tmp_path / "bytes.npy"): "its folder holds the node home",
    }
    generated_shard(tmp_path / "bytes.npy", n_tokens=4096)
    for path, why in cases.items():
        with pytest.raises(ConfigError, match=why):
            check_data(lm(path, preset="quick", heldout_tokens=128), home, gpus=CPU)
    check_data(lm(str(wide), preset="quick", vocab_size=512, heldout_tokens=128), home, gpus=CPU)

    late = data / "late.npy"  # a stray token past the first million
    tokens = np.zeros(1_500_000, dtype=np.uint16)
    tokens[1_200_000] = 999
    np.save(late, tokens)
    check_data(lm(str(late), preset="quick"), home, gpus=CPU)  # a run reads 2**20 tokens
    with pytest.raises(ConfigError, match="token 999 is outside the vocabulary of 256"):
        check_data(lm(str(late), preset="quick"), home, scan_tokens=None, gpus=CPU)


def test_a_shard_smaller_than_the_held_out_split_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    shard = tmp_path / "data" / "shard.npy"
    generated_shard(shard, n_tokens=129 * 20)  # 20 windows of the quick preset's 128 + 1
    check_data(lm(str(shard), preset="quick", heldout_tokens=19 * 128), home, gpus=CPU)
    with pytest.raises(ConfigError, match="holds 20 windows of 129 tokens; the held-out split"):
        check_data(lm(str(shard), preset="quick", heldout_tokens=20 * 128), home, gpus=CPU)
    with pytest.raises(ConfigError, match="set heldout_tokens lower"):
        check_data(lm(str(shard), preset="quick"), home, gpus=CPU)  # 100 windows held out


def test_a_shard_built_for_another_vocabulary_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    manifest = build_shards(tmp_path / "data", [FIXTURE])  # bytes: vocabulary 256
    shard = str(tmp_path / "data" / manifest.shards[0].file)
    check_data(lm(shard, preset="quick"), home, gpus=CPU)
    with pytest.raises(ConfigError, match=r"tokenizer has 256 tokens .* vocabulary is 32,000"):
        check_data(lm(shard, preset="quick", vocab_size=32_000), home, gpus=CPU)


def test_a_cpu_node_refuses_the_exploration_preset(tmp_path: Path) -> None:
    home = tmp_path / "home"
    shard = tmp_path / "data" / "shard.npy"
    generated_shard(shard, n_tokens=65_536)
    config = lm(str(shard), preset="exploration", vocab_size=256, heldout_tokens=4096)
    with pytest.raises(ConfigError, match=r"needs GPUs: list them .*\[gpu\] devices"):
        check_data(config, home, gpus=CPU)
    check_data(config, home, gpus=GPUS)


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
    small = tmp_path / "data" / "small.npy"
    generated_shard(small, n_tokens=4096)
    config.write_text(f'task = "lm"\npreset = "quick"\ndata_path = "{small}"\n')
    assert main(["--home", str(home), "campaign", "create", "x", "--config", str(config)]) == 2
    assert "the held-out split needs 100" in capsys.readouterr().err
    config.write_text(f'task = "lm"\npreset = "exploration"\ndata_path = "{late}"\n')
    assert main(["--home", str(home), "campaign", "create", "x", "--config", str(config)]) == 2
    assert "needs GPUs" in capsys.readouterr().err  # this test node lists none
    assert open_node(home).store.list_campaigns() == []


def test_a_run_checks_the_shard_before_any_experiment(tmp_path: Path) -> None:
    """A campaign stored without `campaign create`'s checks (or whose shard changed since)
    is refused by the run itself: a shard too small for its held-out split, a shard of
    another vocabulary, and nothing is queued or trained."""
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    small = tmp_path / "data" / "small.npy"
    generated_shard(small, n_tokens=4096)
    manifest = build_shards(tmp_path / "bytes", [FIXTURE])
    wide = lm(str(tmp_path / "bytes" / manifest.shards[0].file), preset="quick", vocab_size=512)
    node = open_node(home)
    for config, why in ((lm(str(small), preset="quick"), "the held-out split needs 100"),
                        (wide, "tokenizer has 256 tokens")):  # fmt: skip
        camp = node.store.create_campaign(why[:12], config.model_dump(mode="json"))
        with pytest.raises(ConfigError, match=why):
            node.run_campaign(camp.id)
        assert node.store.list_experiments(camp.id) == []


def test_a_sandboxed_campaign_trains_and_scores_the_tiny_lm_on_a_text_fixture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shard from text (loop.tasks.shards), sandboxed training of the LM backbone, export,
    and scoring on the campaign's held-out windows (the same bytes for both experiments,
    none of them ever in a training batch) and on benchmarks staged from fixture files,
    every number with its standard error, and lm-fitness-v1 from them."""
    from loop.engineer import Engineer, EvalResult, ExperimentJob

    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    # The home is masked in the jail; these folders under it are shown where they belong.
    manifest = build_shards(home / "data", [FIXTURE])
    shard = home / "data" / manifest.shards[0].file
    staged = home / "benchmarks"
    args = [f"{name}={BENCHMARKS / name}.jsonl" for name in BENCHMARK_NAMES]
    assert main(["bench", "stage", str(staged), *args]) == 0
    config = lm(
        str(shard),
        preset="quick",
        train_tokens=32 * 128 * 12,
        heldout_tokens=16 * 128,
        rerun_seeds=(1,),
        budget=Budget(max_candidates=0),
        benchmarks=str(staged),
    )
    jobs: list[ExperimentJob] = []
    run = Engineer.run

    def recording(self: Engineer, job: ExperimentJob, cancel: object = None) -> EvalResult:
        jobs.append(job)
        return run(self, job, cancel)  # type: ignore[arg-type]

    monkeypatch.setattr(Engineer, "run", recording)
    node = open_node(home)
    camp = node.store.create_campaign("shard", config.model_dump(mode="json"))
    summary = node.run_campaign(camp.id)
    assert summary.reason == "budget" and summary.finished == 2, summary
    exps = node.store.list_experiments(camp.id)
    assert [e.status for e in exps] == ["done", "done"], [e.analysis for e in exps]
    for exp in exps:
        metrics = node.store.get_experiment(exp.id).metrics or {}
        assert 0 < metrics["heldout_loss"] < 5.6 and metrics["heldout_tokens"] == 16 * 128
        assert metrics["heldout_ppl"] > 1 and 0 <= metrics["heldout_acc"] <= 1
        assert metrics["tokens_seen"] == 32 * 128 * 12 and metrics["tokens_per_s"] > 0
        assert metrics["params_embedding"] == 256 * 64
        assert metrics["params_non_embedding"] > 2 * 3 * 64 * 192  # two SwiGLU MLPs and more
        assert 0 < metrics["heldout_loss_stderr"] < metrics["heldout_loss"]
        for name in BENCHMARK_NAMES:
            assert 0 <= metrics[f"bench_{name}_acc"] <= 1
            assert metrics[f"bench_{name}_acc_stderr"] >= 0
            assert metrics[f"bench_{name}_items"] == len(
                (BENCHMARKS / f"{name}.jsonl").read_text().splitlines()
            )
        assert metrics["bench_hellaswag_acc_norm_stderr"] >= 0
        assert metrics["bench_lambada_openai_ppl"] > 1
        headline = [metrics[f"bench_{n}_acc"] for n in BENCHMARK_NAMES if n != "hellaswag"]
        headline.append(metrics["bench_hellaswag_acc_norm"])
        assert metrics["bench_mean_acc"] == pytest.approx(sum(headline) / len(headline))
        errors = [metrics[f"bench_{n}_acc_stderr"] for n in BENCHMARK_NAMES if n != "hellaswag"]
        errors.append(metrics["bench_hellaswag_acc_norm_stderr"])
        spread = math.sqrt(sum(e * e for e in errors)) / len(errors)
        assert metrics["bench_mean_acc_stderr"] == pytest.approx(spread)
    assert [e.fitness_version for e in exps] == ["lm-fitness-v1"] * 2

    assert len(jobs) == 2 and jobs[0].heldout_seed != jobs[1].heldout_seed
    assert all(job.benchmarks == staged for job in jobs)
    first, second = (job.task for job in jobs)
    assert isinstance(first, LMSpec) and isinstance(second, LMSpec)
    assert first.split_key == split_key(node.heldout_secret(), camp.id)
    sets = [job.task.test_sets(job.heldout_seed)[0].batch for job in jobs]
    assert sets[0].tokens.numpy().tobytes() == sets[1].tokens.numpy().tobytes()
    assert sets[0].targets.numpy().tobytes() == sets[1].targets.numpy().tobytes()
    window = first.seq_len + 1
    stream = np.load(shard)
    heldout = {
        bytes(stream[i * window : (i + 1) * window]) for i in first.split(len(stream)).heldout
    }
    for step in range(12):
        batch = first.train_batch(step, jobs[0].seed)
        rows = torch.cat([batch.tokens, batch.targets[:, -1:]], dim=1).numpy().astype(np.uint16)
        assert not {bytes(row) for row in rows} & heldout


def _staged(folder: Path, **manifest_changes: object) -> Path:
    """Fixture benchmarks staged with bytes into `folder`, the manifest then edited."""
    stage(folder, [Source(name, BENCHMARKS / f"{name}.jsonl") for name in BENCHMARK_NAMES])
    if manifest_changes:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest | manifest_changes))
    return folder


def test_campaign_create_refuses_benchmarks_that_cannot_be_scored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Benchmarks staged with another tokenizer (another vocabulary, or another tokenizer
    of the same size), altered since staging, not staged at all, around the node home or
    within the shard's folder, or with answers longer than the model's context: refused
    by create, in one line, before anything is stored."""
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    manifest = build_shards(tmp_path / "data", [FIXTURE])
    shard = tmp_path / "data" / manifest.shards[0].file
    config = tmp_path / "c.toml"
    good = _staged(tmp_path / "good")
    altered = _staged(tmp_path / "altered")
    with (altered / "piqa.npz").open("ab") as handle:
        handle.write(b"\0")
    tokenizer = str(tmp_path / "tokenizer.json")
    sha = "ab" * 32
    unstaged = tmp_path / "unstaged"
    unstaged.mkdir()
    cases = {
        str(_staged(tmp_path / "wide", vocab_size=32_000, tokenizer=tokenizer)): (
            "staged with a tokenizer of 32,000 tokens (" + tokenizer + ") but the campaign's "
            "vocabulary is 256; stage them again with the shard's tokenizer"
        ),
        str(_staged(tmp_path / "other", tokenizer=tokenizer, tokenizer_sha256=sha)): (
            f"staged with tokenizer {tokenizer} but the campaign's data was tokenised with "
            "bytes; stage them again with --tokenizer bytes"
        ),
        str(altered): "piqa.npz: sha256 does not match benchmarks.json",
        str(tmp_path / "empty"): "no such folder (stage it: asi-node bench stage)",
        str(tmp_path): f"it holds the node home {home}",
        str(unstaged): "no benchmarks.json; stage benchmarks there with `asi-node bench stage`",
        str(_staged(tmp_path / "data" / "bench")): "it lies in the shard's folder",
        "good": "give an absolute path",
    }
    for folder, why in cases.items():
        config.write_text(
            f'task = "lm"\npreset = "quick"\ndata_path = "{shard}"\nbenchmarks = "{folder}"\n'
        )
        assert main(["--home", str(home), "campaign", "create", "x", "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert why in err and err.count("\n") == 1, err
    accepted = lm(str(shard), preset="quick", benchmarks=str(good))
    check_data(accepted, home, gpus=CPU)
    generated = accepted.model_copy(update={"data_path": None})
    check_data(generated, home, gpus=CPU)  # the generated corpus is bytes too
    with pytest.raises(ConfigError, match="piqa has a continuation of 54 tokens, longer than"):
        _context(accepted, home, 32)
    with pytest.raises(ConfigError, match="benchmarks are for task = 'lm'"):
        parse_config({"task": "mqar", "benchmarks": str(good)})
    assert open_node(home).store.list_campaigns() == []


def _context(config: CampaignConfig, home: Path, seq_len: int) -> None:
    """check_data as if the preset's context were `seq_len`."""
    import node.campaign.tasks as tasks

    spec = build_task(config)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tasks, "build_task", lambda *_: dataclasses.replace(spec, seq_len=seq_len))
        check_data(config, home, gpus=CPU)


def test_benchmarks_must_be_staged_with_the_shards_own_tokenizer_file(tmp_path: Path) -> None:
    """A tokenizer file is known by its sha256 wherever it was copied; a shard manifest
    from before digests were recorded is matched by the tokenizer's path."""
    home = tmp_path / "home"
    manifest = build_shards(tmp_path / "data", [FIXTURE])
    shard = str(tmp_path / "data" / manifest.shards[0].file)
    shard_manifest = tmp_path / "data" / "manifest.json"
    recorded = json.loads(shard_manifest.read_text())
    own, other = "cd" * 32, "ef" * 32
    tokenizer = str(tmp_path / "tok" / "tokenizer.json")
    shard_manifest.write_text(
        json.dumps(recorded | {"tokenizer": tokenizer, "tokenizer_sha256": own})
    )
    copied = _staged(
        tmp_path / "copied", tokenizer="/elsewhere/tokenizer.json", tokenizer_sha256=own
    )
    check_data(lm(shard, preset="quick", benchmarks=str(copied)), home, gpus=CPU)
    changed = _staged(tmp_path / "changed", tokenizer=tokenizer, tokenizer_sha256=other)
    with pytest.raises(
        ConfigError, match=re.escape(f"staged with tokenizer {tokenizer} but the campaign's")
    ):
        check_data(lm(shard, preset="quick", benchmarks=str(changed)), home, gpus=CPU)
    shard_manifest.write_text(json.dumps(recorded | {"tokenizer": tokenizer}))  # no digest
    check_data(lm(shard, preset="quick", benchmarks=str(changed)), home, gpus=CPU)
    with pytest.raises(ConfigError, match=r"staged with tokenizer /elsewhere/tokenizer\.json"):
        check_data(lm(shard, preset="quick", benchmarks=str(copied)), home, gpus=CPU)


def test_a_run_checks_the_staged_benchmarks_before_any_experiment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    manifest = build_shards(tmp_path / "data", [FIXTURE])
    shard = tmp_path / "data" / manifest.shards[0].file
    staged = _staged(tmp_path / "staged")
    config = lm(str(shard), preset="quick", benchmarks=str(staged))
    node = open_node(home)
    camp = node.store.create_campaign("bench", config.model_dump(mode="json"))
    (staged / "hellaswag.npz").unlink()  # gone after the campaign was created
    with pytest.raises(ConfigError, match=r"hellaswag\.npz: missing"):
        node.run_campaign(camp.id)
    assert node.store.list_experiments(camp.id) == []


def test_training_never_sees_the_staged_benchmarks_and_evaluation_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loop import engineer as engineer_module
    from loop.engineer import Engineer, ExperimentJob
    from loop.model import BackboneConfig
    from loop.outcome import FailureClass
    from loop.sandbox import Limits, SandboxError, SandboxOutcome
    from loop.screen import ScreenConfig
    from loop.train import TrainConfig

    seen: dict[str, Limits] = {}

    def fake(spec: dict[str, object], workspace: Path, limits: Limits, **_: object) -> object:
        seen[workspace.name] = limits
        if workspace.name == "train":
            (workspace / "artifacts").mkdir(parents=True)
            return SandboxOutcome(0, {"payload": {}}, None, "", "", 0.0, ())
        return SandboxOutcome(0, None, FailureClass.CRASH, "stop here", "", 0.0, ())

    monkeypatch.setattr(engineer_module, "run_sandboxed", fake)
    home = tmp_path / "home"
    home.mkdir()
    staged = _staged(tmp_path / "staged")
    job = ExperimentJob(
        experiment_id="e1",
        code="from kernels.baselines import DeltaNet as Mixer\n",
        task=LMSpec.quick(),
        train=TrainConfig.quick().with_steps(2),
        seed=0,
        heldout_seed=1,
        backbone=BackboneConfig(vocab_size=256),
        screen=ScreenConfig(max_cost_ratio=None),
        benchmarks=staged,
    )
    Engineer(tmp_path / "ws", Limits(hidden_paths=(home,))).run(job)
    assert staged in seen["train"].hidden_paths and staged not in seen["train"].readable_paths
    assert staged in seen["eval"].readable_paths and staged not in seen["eval"].hidden_paths
    assert home in seen["eval"].hidden_paths
    beside = dataclasses.replace(job, benchmarks=tmp_path)  # would show the home
    with pytest.raises(SandboxError, match="keep staged benchmarks in a folder of their own"):
        Engineer(tmp_path / "ws", Limits(hidden_paths=(home,))).run(beside)


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
        task=dataclasses.replace(LMSpec.quick(), data_path=str(shard), heldout_windows=4),
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
