"""The LLM Researcher: a prompt from the archive and the cognition base, code back.

The prompt holds the parents' code, scores and analyses, reference candidates, recent
insights, cognition entries retrieved for the parents' weaknesses, the Mixer interface
and the screening rules. The reply is name, motivation and code (a whole module, or a
unified diff against the first parent). A near-duplicate of the archive (same code
fingerprint, or a motivation too close to an archived one) is sent back with the reason,
a bounded number of times; so is one found at record time to duplicate a proposal made
at the same time (`send_back`). Unusable replies become values with a failure class and
a reason; the scheduler records them and goes on.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from loop.archive import code_fingerprint
from loop.cognition import CognitionBase, similarity
from loop.contract import INTERFACE, METRICS, RULES, baseline_source, interface_problem
from loop.diffs import DiffError, apply_unified_diff
from loop.llm import (
    BudgetExhausted,
    Caller,
    ChatModel,
    Exchange,
    LLMCallError,
    LLMCancelled,
    LLMConfigError,
    Message,
    Reply,
    Schema,
)
from loop.outcome import FailureClass
from loop.proposal import ArchiveView, Proposal

PROPOSAL_SCHEMA = Schema(
    "mixer_proposal",
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "short identifier of the design"},
            "motivation": {"type": "string", "description": "hypothesis and expected effect"},
            "code": {"type": "string", "description": "the whole module, or empty"},
            "diff": {"type": "string", "description": "unified diff against parent 1, or empty"},
        },
        "required": ["name", "motivation", "code", "diff"],
        "additionalProperties": False,
    },
)


def system_prompt(interface: str = INTERFACE, metrics: str = METRICS, goal: str = "recall") -> str:
    """The Researcher's instructions for a campaign's task (loop.contract's texts for it)."""
    return f"""\
You are the Researcher in an autonomous search for efficient token mixers (linear
attention, state space models, gating, delta rules, convolutions, routing). Propose ONE
new mixer that should beat its parent on {goal} at equal or smaller state.

{interface}

{RULES}

{metrics}

Answer with one JSON object: {{"name": ..., "motivation": ..., "code": ..., "diff": ...}}.
`motivation` states the hypothesis in the metrics' words (which test set should move, at
what state_size). Put the whole module in `code` and leave `diff` empty, or leave `code`
empty and give a unified diff against parent 1's code in `diff`."""


SYSTEM = system_prompt()

NAME_CHARS = re.compile(r"[^A-Za-z0-9_.+-]+")


@dataclass(frozen=True)
class ResearchConfig:
    max_code_chars: int = 20_000
    duplicate_rounds: int = 2  # times a near-duplicate is sent back before giving up
    motivation_similarity: float = 0.9  # cosine of token counts at or above: a duplicate
    cognition_entries: int = 4
    insights: int = 8


@dataclass(frozen=True)
class ResearchResult:
    """A proposal, or why there is none (failure class and reason); the calls made; and
    `pause` when the campaign must pause (budget spent, endpoint unusable). Neither a
    proposal nor a failure nor a pause: the call was cancelled. `messages` is the
    conversation up to the proposal's reply, for a send-back."""

    proposal: Proposal | None
    failure: FailureClass | None = None
    reason: str = ""
    code: str = ""  # the rejected code, kept for the failure record
    name: str = ""
    motivation: str = ""
    exchanges: tuple[Exchange, ...] = ()
    duplicates_sent_back: int = 0
    pause: str | None = None
    messages: tuple[Message, ...] = ()


@dataclass(frozen=True)
class Known:
    """What the archive already holds, for the novelty check."""

    fingerprints: dict[str, str]  # code fingerprint -> candidate name
    motivations: dict[str, str]  # candidate name -> motivation


class LLMResearcher:
    def __init__(
        self,
        chat: ChatModel,
        portal: Caller,
        cognition: CognitionBase,
        config: ResearchConfig = ResearchConfig(),
        system: str = SYSTEM,
    ) -> None:
        self.chat = chat
        self.portal = portal
        self.cognition = cognition
        self.config = config
        self.system = system

    def prompt(
        self,
        parents: Sequence[ArchiveView],
        references: Sequence[ArchiveView],
        insights: Sequence[str],
        feedback: Sequence[str] = (),
    ) -> list[Message]:
        parts: list[str] = []
        for i, view in enumerate(parents, 1):
            parts.append(f"## Parent {i}: {view.name} ({view.candidate_id})\n{_scores(view)}")
            if view.analysis:
                parts.append(f"Analysis: {view.analysis}")
            source = baseline_source(view.code)
            if source is None:
                parts.append(f"Code:\n```python\n{view.code}\n```")
            else:
                parts.append(
                    f"Code: `{view.code.strip()}`, a baseline; its source (a diff cannot "
                    f"apply to it: send a whole module, importing helpers from kernels.layers "
                    f"or kernels.ops if useful):\n```python\n{source}\n```"
                )
        if not parents:
            parts.append("## No parents yet: propose a first design from the cognition entries.")
        if references:
            parts.append("## Reference candidates")
            parts += [f"- {v.name}: {_scores(v)}; {v.motivation[:300]}" for v in references]
        recent = list(insights)[-self.config.insights :]
        if recent:
            parts.append("## Insights from earlier experiments")
            parts += [f"- {text}" for text in recent]
        query = " ".join([*(v.analysis for v in parents), *recent]) or "recall state gating"
        entries = self.cognition.search(query, self.config.cognition_entries)
        if entries:
            parts.append("## Design knowledge (cognition base)")
            parts += [e.render() for e in entries]
        if feedback:
            parts.append("## Behaviour notes")
            parts += [f"- {text}" for text in feedback]
        parts.append("Propose one new mixer now, as the JSON object described.")
        return [Message("system", self.system), Message("user", "\n\n".join(parts))]

    def propose(
        self,
        parents: Sequence[ArchiveView],
        references: Sequence[ArchiveView],
        insights: Sequence[str],
        known: Known,
        feedback: Sequence[str] = (),
    ) -> ResearchResult:
        messages = self.prompt(parents, references, insights, feedback)
        return self._converse(messages, parents, known, [], 0)

    def send_back(
        self,
        result: ResearchResult,
        duplicate: str,
        parents: Sequence[ArchiveView],
        known: Known,
    ) -> ResearchResult:
        """A proposal found, when it was to be recorded, to duplicate one recorded since
        it was asked for: sent back with the reason in the same conversation, as
        `propose` does, or given up once it was sent back `duplicate_rounds` times."""
        assert result.proposal is not None
        sent_back = result.duplicates_sent_back
        if sent_back >= self.config.duplicate_rounds:
            return ResearchResult(
                None,
                FailureClass.DUPLICATE,
                f"still a near-duplicate after {sent_back} send-back(s): {duplicate}",
                code=result.proposal.code,
                name=result.proposal.name,
                motivation=result.proposal.motivation,
                exchanges=result.exchanges,
                duplicates_sent_back=sent_back,
            )
        messages = [*result.messages, _rejection(duplicate)]
        return self._converse(messages, parents, known, list(result.exchanges), sent_back + 1)

    def _converse(
        self,
        messages: list[Message],
        parents: Sequence[ArchiveView],
        known: Known,
        exchanges: list[Exchange],
        sent_back: int,
    ) -> ResearchResult:
        parent_ids = tuple(v.candidate_id for v in parents)
        while True:
            try:
                reply = self.portal.call(
                    self.chat.complete(
                        "researcher", messages, purpose="propose", schema=PROPOSAL_SCHEMA
                    )
                )
            except LLMCancelled:
                # The run is stopping: the calls that did complete are still kept.
                return ResearchResult(None, exchanges=tuple(exchanges))
            except BudgetExhausted as exc:
                return ResearchResult(None, exchanges=tuple(exchanges), pause=str(exc))
            except LLMConfigError as exc:
                return ResearchResult(None, exchanges=tuple(exchanges), pause=str(exc))
            except LLMCallError as exc:
                exchanges.append(exc.exchange)
                return ResearchResult(
                    None,
                    FailureClass.LLM_RESPONSE,
                    str(exc),
                    exchanges=tuple(exchanges),
                    duplicates_sent_back=sent_back,
                )
            exchanges.append(reply.exchange)
            read = self._read(reply, parents)
            if isinstance(read, ResearchResult):
                return _with(read, exchanges, sent_back)
            name, motivation, code = read
            duplicate = self.duplicate_of(code, motivation, known)
            if duplicate is None:
                proposal = Proposal(
                    name=name,
                    motivation=motivation,
                    code=code,
                    parent_ids=parent_ids,
                    origin="llm",
                )
                return ResearchResult(
                    proposal,
                    exchanges=tuple(exchanges),
                    duplicates_sent_back=sent_back,
                    messages=(*messages, Message("assistant", reply.text)),
                )
            if sent_back >= self.config.duplicate_rounds:
                return ResearchResult(
                    None,
                    FailureClass.DUPLICATE,
                    f"still a near-duplicate after {sent_back} send-back(s): {duplicate}",
                    code=code,
                    name=name,
                    motivation=motivation,
                    exchanges=tuple(exchanges),
                    duplicates_sent_back=sent_back,
                )
            sent_back += 1
            messages = [*messages, Message("assistant", reply.text), _rejection(duplicate)]

    def _read(
        self, reply: Reply, parents: Sequence[ArchiveView]
    ) -> tuple[str, str, str] | ResearchResult:
        data = reply.data
        if data is None:
            code = _python_block(reply.text)
            if code is None:
                return ResearchResult(
                    None,
                    FailureClass.LLM_RESPONSE,
                    "the reply holds neither a JSON object nor a python code block",
                )
            data = {"name": "", "motivation": _outside_code(reply.text), "code": code}
        name = str(data.get("name") or "").strip()
        motivation = str(data.get("motivation") or "").strip()
        code = str(data.get("code") or "")
        diff = str(data.get("diff") or "")
        if not code.strip() and diff.strip():
            if not parents:
                return _reject(
                    FailureClass.LLM_RESPONSE, "a diff was sent but there is no parent", name
                )
            try:
                code = apply_unified_diff(parents[0].code, diff)
            except DiffError as exc:
                return _reject(FailureClass.LLM_RESPONSE, f"the diff does not apply: {exc}", name)
        if not code.strip():
            return _reject(FailureClass.LLM_RESPONSE, "the reply has no code", name, motivation)
        name = NAME_CHARS.sub("-", name).strip("-")[:60] or (
            "llm-" + hashlib.sha256(code.encode()).hexdigest()[:8]
        )
        if len(code) > self.config.max_code_chars:
            return _reject(
                FailureClass.FORBIDDEN,
                f"code is {len(code)} characters; the limit is {self.config.max_code_chars}",
                name,
                motivation,
                code,
            )
        problem = interface_problem(code)
        if problem is not None:
            return _reject(FailureClass.SYNTAX_IMPORT, problem, name, motivation, code)
        return name, motivation or "(no motivation given)", code

    def duplicate_of(self, code: str, motivation: str, known: Known) -> str | None:
        """Why the proposal is a near-duplicate of the archive, or None."""
        twin = known.fingerprints.get(code_fingerprint(code))
        if twin is not None:
            return f"the code is the same as {twin}'s (up to comments and layout)"
        best, best_name = 0.0, ""
        for name, other in known.motivations.items():
            score = similarity(motivation, other)
            if score > best:
                best, best_name = score, name
        if best >= self.config.motivation_similarity:
            return f"the motivation repeats {best_name}'s (similarity {best:.2f})"
        return None


def _rejection(duplicate: str) -> Message:
    return Message(
        "user",
        f"Rejected as a near-duplicate: {duplicate}. Propose a different design "
        "(a different mechanism, not a rewording), as the same JSON object.",
    )


def _scores(view: ArchiveView) -> str:
    accs = ", ".join(f"acc_{k} {v:.3f}" for k, v in sorted(view.accuracies.items()))
    fit = f"fitness {view.fitness:+.3f}" if view.fitness is not None else "not scored"
    if view.fitness is not None and view.seeds > 1:
        fit += f" (mean of {view.seeds} seeds, spread {view.fitness_spread:.3f})"
    state = f"state_size {view.state_size}" if view.state_size is not None else ""
    return "; ".join(p for p in (fit, accs, state) if p)


def _reject(
    failure: FailureClass, reason: str, name: str = "", motivation: str = "", code: str = ""
) -> ResearchResult:
    return ResearchResult(None, failure, reason, code=code, name=name, motivation=motivation)


def _with(result: ResearchResult, exchanges: list[Exchange], sent_back: int) -> ResearchResult:
    return ResearchResult(
        None,
        result.failure,
        result.reason,
        code=result.code,
        name=result.name,
        motivation=result.motivation,
        exchanges=tuple(exchanges),
        duplicates_sent_back=sent_back,
    )


_PY_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def _python_block(text: str) -> str | None:
    blocks = [b for b in _PY_BLOCK.findall(text) if "Mixer" in b]
    return max(blocks, key=len) if blocks else None


def _outside_code(text: str) -> str:
    return " ".join(_PY_BLOCK.sub(" ", text).split())[:2000]
