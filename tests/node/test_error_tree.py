"""One exception tree per package: every error derives from its package's root, says in
its docstring what the caller should do, and the trust package's `VerificationError` is
the only class of that name. The command line turns each root into one error line."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

from attestation.errors import TrustError, VerificationError
from governance.errors import GovernanceError
from governance.icp.errors import IcpRejectError
from kernels.errors import KernelInputError
from loop.errors import LoopError
from loop.researcher.offline import GrammarExhausted
from loop.sandbox import SandboxError
from node.cli import main as cli
from node.errors import AsiNodeError, ConfigError

REPO = Path(__file__).resolve().parents[2]
ROOTS: dict[str, type[Exception]] = {
    "node": AsiNodeError,
    "loop": LoopError,
    "kernels": KernelInputError,
    "attestation": TrustError,
    "governance": GovernanceError,
}
# Third-party modules a node may lack (GPU kernels, vendor SDKs): a module that cannot be
# imported for want of one of these is skipped, and only for that reason.
OPTIONAL = {"triton", "fla", "nv_attestation_sdk", "nvidia", "pynvml", "verifier"}
# Scripts that run only inside another tool; they must define no classes.
NOT_IMPORTABLE = {"node.store.migrations.env": "runs only inside alembic's migration context"}


def _modules() -> list[ModuleType]:
    found = []
    for package in ROOTS:
        top = importlib.import_module(package)
        found.append(top)
        for info in pkgutil.walk_packages(top.__path__, f"{package}."):
            if info.name in NOT_IMPORTABLE:
                continue
            try:
                found.append(importlib.import_module(info.name))
            except ImportError as exc:
                if (exc.name or "").split(".")[0] not in OPTIONAL:
                    raise
    return found


@cache
def _exception_classes() -> tuple[type[BaseException], ...]:
    return tuple(
        value
        for module in _modules()
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == module.__name__
    )


def test_every_exception_class_derives_from_its_packages_root() -> None:
    classes = _exception_classes()
    assert len(classes) > 60  # the walk found the packages' modules
    strays = sorted(
        f"{c.__module__}.{c.__qualname__}"
        for c in classes
        if not issubclass(c, ROOTS[c.__module__.split(".")[0]])
    )
    assert strays == []


def test_every_exception_class_says_what_the_caller_should_do() -> None:
    bare = sorted(
        f"{c.__module__}.{c.__qualname__}"
        for c in _exception_classes()
        if not (c.__dict__.get("__doc__") or "").strip()
    )
    assert bare == []


def test_the_trust_package_has_the_one_verification_error() -> None:
    defined = [c for c in _exception_classes() if c.__name__ == "VerificationError"]
    assert defined == [VerificationError]
    # Also no class of that name in a script, a test helper or a module skipped above.
    sources = [p for d in (*ROOTS, "scripts", "tests") for p in (REPO / d).rglob("*.py")]
    named = sorted(
        str(path.relative_to(REPO))
        for path in sources
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.name == "VerificationError"
    )
    assert named == ["attestation/errors.py"]


def test_modules_skipped_by_the_walk_define_no_classes() -> None:
    for name in NOT_IMPORTABLE:
        path = REPO / (name.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text())
        assert not any(isinstance(n, ast.ClassDef) for n in ast.walk(tree)), name


def test_a_verification_error_names_its_step_and_what_passed() -> None:
    error = VerificationError("snp.8 policy", "debug is not allowed", ("snp.1 parse: ok",))
    assert str(error) == "snp.8 policy: debug is not allowed"
    assert (error.step, error.detail, error.passed) == (
        "snp.8 policy",
        "debug is not allowed",
        ("snp.1 parse: ok",),
    )
    assert VerificationError("step 1 (policy)", "no checkpoints").passed == ()


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("data_path /x: no such file"),
        VerificationError("step 3 (missing anchor)", "checkpoint of size 20 has no anchor"),
        IcpRejectError("the canister refused the call: not authorised", code=4),
        GrammarExhausted("every genome of the grammar is known: use the llm researcher"),
        SandboxError("cannot start the sandbox: no unshare"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_error_of_any_root_reaching_the_cli_is_one_line_and_exit_code_2(
    error: Exception, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def command(_: object) -> int:
        raise error

    monkeypatch.setattr(cli, "cmd_init", command)
    assert cli.main(["init"]) == 2
    assert capsys.readouterr().err == f"asi-node: error: {error}\n"
