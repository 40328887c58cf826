"""Zero-shot benchmarks: lm-evaluation-harness rows -> requests -> staged token ids ->
rows for the forward graphs -> acc, acc_norm and perplexity with standard errors; bad
files refused at stage time with the file, line and field named."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from loop.benchmarks.formats import TASKS, BenchmarkFormatError, encode_pair, read_items
from loop.benchmarks.scoring import mean_stderr, request_rows, summarise
from loop.benchmarks.stage import Source, stage
from loop.benchmarks.staged import MANIFEST_FILE, StagedError, load
from loop.tasks import IGNORE_INDEX
from node.cli.main import main

DATA = Path(__file__).parent / "data" / "benchmarks"
FIXTURES = ("piqa", "hellaswag", "arc_easy", "winogrande", "lambada_openai")


def sources() -> list[Source]:
    return [Source(name, DATA / f"{name}.jsonl") for name in FIXTURES]


def test_every_fixture_builds_the_requests_of_its_task_config() -> None:
    piqa = read_items("piqa", DATA / "piqa.jsonl")[0]
    assert [(r.context, r.continuation) for r in piqa.requests] == [
        (
            "Question: Keep a cup of tea warm for longer.\nAnswer:",
            " Put a saucer on top of the cup.",
        ),
        ("Question: Keep a cup of tea warm for longer.\nAnswer:", " Put the cup in the freezer."),
    ]
    assert piqa.gold == 0 and piqa.requests[0].choice_chars == len(
        "Put a saucer on top of the cup."
    )
    # HellaSwag's WikiHow cleaning: " [title]" -> ". ", bracketed spans dropped, ctx_b
    # capitalised; the label may be a string of digits.
    wikihow = read_items("hellaswag", DATA / "hellaswag.jsonl")[1]
    assert (
        wikihow.requests[0].context
        == "Home and Garden: How to water a plant. Fill a can with water. Then"
    )
    assert wikihow.requests[0].continuation == "  pour the water slowly around the stem."
    assert wikihow.requests[3].continuation == "  Sing to the can until it is empty."
    assert wikihow.gold == 0
    # ARC: the answer key indexes the labels, whatever they are.
    assert [item.gold for item in read_items("arc_easy", DATA / "arc_easy.jsonl")] == [0, 1, 0, 1]
    # WinoGrande: one context per option, the same continuation after each.
    wino = read_items("winogrande", DATA / "winogrande.jsonl")[1]
    assert [(r.context, r.continuation) for r in wino.requests] == [
        ("Alice gave her coat to Bob because Alice", " was cold."),
        ("Alice gave her coat to Bob because Bob", " was cold."),
    ]
    assert wino.gold == 1
    # LAMBADA splits on single spaces: a double space leaves the context ending in one,
    # which moves onto the continuation as the harness's models move it.
    lambada = read_items("lambada_openai", DATA / "lambada_openai.jsonl")
    assert (lambada[0].requests[0].context[-8:], lambada[0].requests[0].continuation) == (
        "? in the",
        " kitchen",
    )
    assert lambada[2].requests[0].continuation == "  attic"
    assert encode_pair("a b  ", " c") == ("a b", "   c")


def test_staging_writes_token_ids_the_evaluator_reads_back(tmp_path: Path) -> None:
    manifest = stage(tmp_path / "staged", sources())
    staged = load(tmp_path / "staged")
    assert manifest == staged.manifest and manifest.tokenizer == "bytes"
    assert [b.name for b in staged.benchmarks] == list(FIXTURES)
    for bench in staged.benchmarks:
        items = read_items(bench.name, DATA / f"{bench.name}.jsonl")
        requests = [r for item in items for r in item.requests]
        assert bench.entry.items == len(items) and bench.entry.requests == len(requests)
        assert bench.gold.tolist() == [item.gold for item in items]
        for r, request in enumerate(requests):
            begin = int(bench.start[r])
            ctx = bench.tokens[begin : begin + int(bench.context_len[r])]
            end = begin + int(bench.context_len[r] + bench.continuation_len[r])
            cont = bench.tokens[begin + int(bench.context_len[r]) : end]
            assert bytes(ctx.tolist()) == request.context.encode()
            assert bytes(cont.tolist()) == request.continuation.encode()
    source = json.loads((tmp_path / "staged" / MANIFEST_FILE).read_text())["benchmarks"][0]
    assert source["source"] == str((DATA / "piqa.jsonl").resolve())
    assert len(source["source_sha256"]) == 64


def test_a_request_longer_than_the_context_is_cut_from_the_left(tmp_path: Path) -> None:
    stage(tmp_path, [Source("lambada_openai", DATA / "lambada_openai.jsonl")])
    (bench,) = load(tmp_path).benchmarks
    rows = request_rows(bench, 16, 0, bench.entry.requests)
    for r in range(bench.entry.requests):
        begin, cont = int(bench.start[r]), int(bench.continuation_len[r])
        whole = bench.tokens[begin : begin + int(bench.context_len[r]) + cont]
        kept = whole[-17:]  # context 16: the last 17 tokens, all but the last as input
        assert rows.tokens[r, :16].tolist() == kept[:-1].tolist()
        targets = rows.targets[r]
        assert targets[targets != IGNORE_INDEX].tolist() == whole[-cont:].tolist()
        assert (targets[: 16 - cont] == IGNORE_INDEX).all()
    short = request_rows(bench, 1024, 1, 2)  # room for all of it: padded on the right
    length = int(bench.context_len[1] + bench.continuation_len[1]) - 1
    assert short.tokens.shape == (1, length)


def test_metrics_are_the_harness_argmax_rules_with_standard_errors(tmp_path: Path) -> None:
    stage(tmp_path, [Source(n, DATA / f"{n}.jsonl") for n in ("piqa", "lambada_openai")])
    piqa, lambada = load(tmp_path).benchmarks
    rng = np.random.default_rng(0)
    lls = -rng.uniform(5, 60, piqa.entry.requests)
    lls[2] = lls[3]  # a tie goes to the first choice
    metrics = summarise(piqa, lls, np.zeros(piqa.entry.requests, dtype=bool))
    pairs = lls.reshape(-1, 2)
    right = (pairs.argmax(axis=1) == piqa.gold).astype(float)
    norm = (pairs / piqa.choice_chars.reshape(-1, 2)).argmax(axis=1) == piqa.gold
    assert metrics.acc == right.mean() and metrics.acc_norm == norm.mean()
    assert metrics.acc_stderr == pytest.approx(right.std(ddof=1) / math.sqrt(len(right)))
    assert metrics.headline == "acc" and metrics.headline_value == metrics.acc

    ll = -rng.uniform(1, 9, lambada.entry.requests)
    greedy = np.array([True, False, True, False, False])
    last = summarise(lambada, ll, greedy)
    assert last.acc == 0.4 and last.acc_stderr == pytest.approx(mean_stderr(greedy * 1.0))
    assert last.perplexity == pytest.approx(math.exp(-ll.mean()))
    assert last.perplexity_stderr == pytest.approx(last.perplexity * mean_stderr(ll))
    assert last.acc_norm is None


def _row_file(tmp_path: Path, name: str, rows: list[object]) -> Path:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


PIQA = {"goal": "g", "sol1": "a", "sol2": "b", "label": 0}
HELLA = {"activity_label": "x", "ctx_a": "a", "ctx_b": "b", "endings": ["1", "2"], "label": "1"}
ARC = {"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "A"}
WINO = {"sentence": "a _ b", "option1": "x", "option2": "y", "answer": "1"}


@pytest.mark.parametrize(
    ("name", "bad", "why"),
    [
        ("piqa", {**PIQA, "label": 2}, "line 2: field 'label': 2 is not a choice index 0..1"),
        ("piqa", {**PIQA, "label": -1}, "an unlabelled test split? stage the validation split"),
        ("piqa", {**PIQA, "label": "1"}, "field 'label': expected an integer, got the string"),
        ("piqa", {k: v for k, v in PIQA.items() if k != "sol2"}, "line 2: field 'sol2': missing"),
        ("piqa", {**PIQA, "goal": 7}, "field 'goal': expected a string, got an integer"),
        ("hellaswag", {**HELLA, "label": "4"}, "field 'label': 4 is not a choice index 0..1"),
        ("hellaswag", {**HELLA, "endings": "12"}, "field 'endings': expected a list of strings"),
        ("arc_easy", {**ARC, "answerKey": "C"}, "field 'answerKey': 'C' is not one of the labels"),
        ("arc_easy", {**ARC, "choices": ["a", "b"]}, "field 'choices': expected an object"),
        ("winogrande", {**WINO, "sentence": "no blank"}, "field 'sentence': no \"_\" marks"),
        ("winogrande", {**WINO, "answer": 1}, "field 'answer': expected a string"),
        ("winogrande", {**WINO, "sentence": "_ b", "option1": ""}, "encodes to no tokens"),
        ("lambada_openai", {"text": "oneword"}, "field 'text': needs a context and a last word"),
        ("lambada_openai", ["text"], "line 2: expected a JSON object, got a list"),
    ],
)
def test_a_row_in_the_wrong_format_is_refused_naming_file_line_and_field(
    tmp_path: Path, name: str, bad: object, why: str
) -> None:
    good = {"piqa": PIQA, "hellaswag": HELLA, "arc_easy": ARC, "winogrande": WINO}.get(
        name, {"text": "a b"}
    )
    path = _row_file(tmp_path, name, [good, bad, good])
    with pytest.raises(BenchmarkFormatError, match=re.escape(str(path))) as exc:
        stage(tmp_path / "staged", [Source(name, path)])
    assert why in str(exc.value)
    assert not (tmp_path / "staged").exists()


def test_bench_stage_reports_a_bad_file_in_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "piqa.jsonl"
    broken.write_text(json.dumps(PIQA) + "\n{not json\n")
    out = tmp_path / "staged"
    argv = ["bench", "stage", str(out), f"piqa={broken}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"asi-node: error: {broken} line 2: not JSON: " + (
        "Expecting property name enclosed in double quotes"
    )
    assert not out.exists()
    for argv, why in (
        (["bench", "stage", str(out), "squad=x.jsonl"], "unknown benchmark 'squad'; known: piqa"),
        (["bench", "stage", str(out), "piqa"], "give a benchmark as NAME=FILE"),
        (["bench", "stage", str(out), f"piqa={tmp_path}/gone.jsonl"], "gone.jsonl: no such file"),
        (["bench", "stage", str(out), f"piqa={DATA}/piqa.jsonl", "--limit", "1"], "at least 2"),
        (
            ["bench", "stage", str(out), f"piqa={DATA}/piqa.jsonl", "--tokenizer", "/no/tok.json"],
            "tokenizer file /no/tok.json does not exist",
        ),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert why in err and err.count("\n") == 1, err
    assert not out.exists()
    assert main(["bench", "stage", str(out), f"piqa={DATA}/piqa.jsonl", "--limit", "3"]) == 0
    assert capsys.readouterr().out.split()[:3] == ["piqa", "3", "items"]
    assert load(out).benchmarks[0].entry.items == 3


def test_a_staged_folder_that_changed_since_staging_is_refused(tmp_path: Path) -> None:
    stage(tmp_path, sources())
    with np.load(tmp_path / "piqa.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["gold"] = 1 - arrays["gold"]  # the answers flipped after staging
    np.savez(tmp_path / "piqa.npz", **arrays)
    with pytest.raises(StagedError, match=r"piqa\.npz: sha256 does not match benchmarks\.json"):
        load(tmp_path)
    (tmp_path / MANIFEST_FILE).unlink()
    with pytest.raises(StagedError, match=r"no benchmarks\.json; stage benchmarks there"):
        load(tmp_path)


def test_the_cli_help_lists_every_benchmark_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "stage", "--help"])
    out = capsys.readouterr().out
    assert all(
        f"{task.name}: {{{task.fields}}}" in " ".join(out.split()) for task in TASKS.values()
    )
