"""lm-evaluation-harness's dataset rows -> the (context, continuation) requests it scores.

Each benchmark reads the rows of the Hugging Face dataset that lm-evaluation-harness's
task config names, and builds what that config builds at zero shots:

- piqa ({goal, sol1, sol2, label}): context "Question: {goal}\\nAnswer:", one request per
  solution, continuation " " + solution; acc and acc_norm.
- hellaswag ({activity_label, ctx_a, ctx_b, endings, label}): the context is
  "{activity_label}: {ctx_a} {ctx_b capitalised}" and the choices are the endings, all
  cleaned as the harness cleans WikiHow text (strip, " [title]" -> ". ", bracketed
  spans removed, double spaces halved); acc and acc_norm.
- arc_easy, arc_challenge ({question, choices: {text, label}, answerKey}): context
  "Question: {question}\\nAnswer:", one request per choice text; acc and acc_norm.
- winogrande ({sentence, option1, option2, answer}): partial evaluation: one context per
  option (the sentence up to its "_", the option filled in), the same continuation
  (" " + the rest of the sentence after "_", stripped) scored after each; acc.
- lambada_openai, lambada_standard ({text}): context all words but the last (split on
  single spaces), continuation " " + the last word; acc is whether greedy decoding
  produces the whole continuation, perplexity exp(-mean log-likelihood).

As the harness's models do before tokenising (`_encode_pair`), whitespace at the end of
a context moves to the front of its continuation. `choice_chars` is the choice's length
in characters, without the delimiter, which acc_norm divides the log-likelihood by.

Files are JSON Lines (one row per line) or a JSON array of rows (convert a Hub parquet
split with `datasets` or pandas first). A row that does not fit its task raises
BenchmarkFormatError naming the file, the line (or array index) and the field.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from loop.errors import LoopError

TARGET_DELIMITER = " "  # lm-evaluation-harness's default target_delimiter


class BenchmarkFormatError(LoopError):
    """A benchmark file does not hold the rows of its task in lm-evaluation-harness's
    format, or names an unknown task. The message names the file, the line and the field:
    fix or replace that file (the validation split of the dataset the harness uses) and
    stage again; nothing was written."""


class Kind(enum.StrEnum):
    MULTIPLE_CHOICE = "multiple_choice"  # the most likely request is the answer
    LAST_WORD = "last_word"  # one request; greedy decoding must produce it (LAMBADA)


@dataclass(frozen=True)
class Request:
    """One log-likelihood request: the context, then the continuation that is scored."""

    context: str
    continuation: str
    choice_chars: int  # the choice's characters, for acc_norm


@dataclass(frozen=True)
class Item:
    """One benchmark row: its requests in choice order, the index of the right one, and
    where it was read (file and line)."""

    requests: tuple[Request, ...]
    gold: int
    where: str = ""


def encode_pair(context: str, continuation: str) -> tuple[str, str]:
    """Trailing whitespace of the context moves onto the continuation, as the harness's
    models do before tokenising, so word-boundary tokens belong to the continuation."""
    stripped = context.rstrip()
    return stripped, context[len(stripped) :] + continuation


def _request(context: str, choice: str, choice_chars: int | None = None) -> Request:
    ctx, cont = encode_pair(context, TARGET_DELIMITER + choice)
    return Request(ctx, cont, len(choice) if choice_chars is None else choice_chars)


class _Row:
    """A row's fields, each read with a check whose error names the file, line and field."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise BenchmarkFormatError(f"{where}: expected a JSON object, got {_kind(data)}")
        self.data: dict[str, object] = data
        self.where = where

    def fail(self, field: str, problem: str) -> BenchmarkFormatError:
        return BenchmarkFormatError(f"{self.where}: field {field!r}: {problem}")

    def get(self, field: str, within: Mapping[str, object] | None = None) -> object:
        """The value of `field` (a dotted name whose last part is read from `within`, a
        nested object of the row, when given)."""
        key = field.rsplit(".", 1)[-1]
        source = self.data if within is None else within
        if key not in source:
            raise self.fail(field, "missing")
        return source[key]

    def text(self, field: str) -> str:
        value = self.get(field)
        if not isinstance(value, str):
            raise self.fail(field, f"expected a string, got {_kind(value)}")
        return value

    def texts(self, field: str, within: Mapping[str, object] | None = None) -> list[str]:
        value = self.get(field, within)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(field, f"expected a list of strings, got {_kind(value)}")
        if len(value) < 2:
            raise self.fail(field, f"expected at least 2 choices, got {len(value)}")
        return value

    def index(self, field: str, choices: int, *, digits: bool) -> int:
        """An answer index below `choices`: an integer, or (`digits`) a string of digits."""
        value = self.get(field)
        if digits and isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            wanted = "an integer or a string of digits" if digits else "an integer"
            raise self.fail(field, f"expected {wanted}, got {_kind(value)}")
        if not 0 <= value < choices:
            hint = " (an unlabelled test split? stage the validation split)" if value < 0 else ""
            raise self.fail(field, f"{value} is not a choice index 0..{choices - 1}{hint}")
        return value


def _kind(value: object) -> str:
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return {
        type(None): "null",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _piqa(row: _Row) -> Item:
    context = f"Question: {row.text('goal')}\nAnswer:"
    choices = [row.text("sol1"), row.text("sol2")]
    gold = row.index("label", 2, digits=False)
    return Item(tuple(_request(context, c) for c in choices), gold)


def _clean_wikihow(text: str) -> str:
    """HellaSwag's cleaning: strip, " [title]" -> ". ", drop bracketed spans, halve
    double spaces (once, left to right)."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def _hellaswag(row: _Row) -> Item:
    ctx = row.text("ctx_a") + " " + row.text("ctx_b").capitalize()
    context = _clean_wikihow(row.text("activity_label") + ": " + ctx)
    endings = [_clean_wikihow(e) for e in row.texts("endings")]
    gold = row.index("label", len(endings), digits=True)
    return Item(tuple(_request(context, e) for e in endings), gold)


def _arc(row: _Row) -> Item:
    context = f"Question: {row.text('question')}\nAnswer:"
    choices = row.get("choices")
    if not isinstance(choices, dict):
        raise row.fail("choices", f"expected an object with text and label, got {_kind(choices)}")
    texts = row.texts("choices.text", choices)
    labels = row.texts("choices.label", choices)
    if len(labels) != len(texts):
        raise row.fail("choices.label", f"{len(labels)} labels for {len(texts)} texts")
    key = row.text("answerKey")
    if key not in labels:
        raise row.fail("answerKey", f"{key!r} is not one of the labels {labels}")
    return Item(tuple(_request(context, t) for t in texts), labels.index(key))


def _winogrande(row: _Row) -> Item:
    sentence = row.text("sentence")
    blank = sentence.find("_")
    if blank < 0:
        raise row.fail("sentence", 'no "_" marks where an option goes')
    answer = row.text("answer")
    if answer not in ("1", "2"):
        raise row.fail("answer", f'expected "1" or "2", got {answer!r}')
    rest = TARGET_DELIMITER + sentence[blank + 1 :].strip()
    requests = []
    for field in ("option1", "option2"):
        context = sentence[:blank] + row.text(field)
        ctx, cont = encode_pair(context, rest)
        requests.append(Request(ctx, cont, len(context)))
    return Item(tuple(requests), int(answer) - 1)


def _lambada(row: _Row) -> Item:
    words = row.text("text").split(" ")
    if len(words) < 2 or not " ".join(words[:-1]):
        raise row.fail("text", "needs a context and a last word (at least two words)")
    ctx, cont = encode_pair(" ".join(words[:-1]), TARGET_DELIMITER + words[-1])
    return Item((Request(ctx, cont, len(words[-1])),), 0)


@dataclass(frozen=True)
class TaskFormat:
    """A benchmark the stager knows: its rows, its kind and the metric that counts.

    `headline` is the number the LM fitness averages: acc_norm where lm-evaluation-
    harness's users usually report it (HellaSwag, ARC-Challenge), else acc."""

    name: str
    kind: Kind
    fields: str
    headline: Literal["acc", "acc_norm"]
    acc_norm: bool  # whether the harness reports acc_norm for it
    build: Callable[[_Row], Item]


TASKS: Mapping[str, TaskFormat] = {
    t.name: t
    for t in (
        TaskFormat("piqa", Kind.MULTIPLE_CHOICE, "goal, sol1, sol2, label", "acc", True, _piqa),
        TaskFormat(
            "hellaswag",
            Kind.MULTIPLE_CHOICE,
            "activity_label, ctx_a, ctx_b, endings, label",
            "acc_norm",
            True,
            _hellaswag,
        ),
        TaskFormat(
            "arc_easy", Kind.MULTIPLE_CHOICE, "question, choices, answerKey", "acc", True, _arc
        ),
        TaskFormat(
            "arc_challenge",
            Kind.MULTIPLE_CHOICE,
            "question, choices, answerKey",
            "acc_norm",
            True,
            _arc,
        ),
        TaskFormat(
            "winogrande",
            Kind.MULTIPLE_CHOICE,
            "sentence, option1, option2, answer",
            "acc",
            False,
            _winogrande,
        ),
        TaskFormat("lambada_openai", Kind.LAST_WORD, "text", "acc", False, _lambada),
        TaskFormat("lambada_standard", Kind.LAST_WORD, "text", "acc", False, _lambada),
    )
}


def task_format(name: str) -> TaskFormat:
    if name not in TASKS:
        raise BenchmarkFormatError(f"unknown benchmark {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


def _rows(path: Path) -> Iterator[tuple[str, object]]:
    """(where, row) for each row of a JSON Lines file or a JSON array."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchmarkFormatError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchmarkFormatError(f"{path}: cannot be read as UTF-8 text: {exc}") from None
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BenchmarkFormatError(f"{path}: not a JSON array: {exc}") from None
        for i, row in enumerate(rows):
            yield f"{path} item {i}", row
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BenchmarkFormatError(f"{path} line {number}: not JSON: {exc.msg}") from None
        yield f"{path} line {number}", row


def read_items(name: str, path: Path, limit: int | None = None) -> list[Item]:
    """The first `limit` (None: all) rows of `path` as items of benchmark `name`."""
    task = task_format(name)
    items: list[Item] = []
    for where, data in _rows(path):
        if limit is not None and len(items) >= limit:
            break
        items.append(dataclasses.replace(task.build(_Row(data, where)), where=where))
    if len(items) < 2:
        raise BenchmarkFormatError(
            f"{path}: {len(items)} row(s) of {name}; a benchmark needs at least 2 "
            f"(rows with the fields {task.fields})"
        )
    return items
