"""The trust commands: `log export`, `audit`, `icp`, `attest` and `chain`.

What an auditor or an operator runs to export and check the node's log, its anchors on
the EVM chain and the Internet Computer, its TEE evidence and its chain set-up. Like the
rest of the CLI, each imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.errors import AsiNodeError, ConfigError
from node.files import write_file

if TYPE_CHECKING:
    from attestation.tee.policy import Policy
    from governance.anchor_audit import VerifiedAnchor
    from governance.chain import Controller
    from governance.deploy_config import Allocation, DaoParams
    from governance.obedience_audit import ObedienceFacts
    from node.anchoring.audit_icp import IcpFinding
    from node.settings import Settings
    from node.store import OutboxRow


def cmd_log(args: argparse.Namespace) -> int:
    from node.runtime import open_node

    node = open_node(args.home)
    tlog = node.log()
    tlog.checkpoint()  # the bundle covers everything appended so far
    if args.lines:
        tmp = args.path.with_name(f".{args.path.name}.tmp")
        try:
            with tmp.open("wb") as f:
                f.writelines(tlog.export_lines())
            tmp.replace(args.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ConfigError(f"cannot write {args.path}: {exc.strerror or exc}") from None
        print(f"wrote {args.path}: {tlog.size} entries (line-delimited), node {tlog.node_id}")
        return 0
    bundle = tlog.export()
    write_file(args.path, bundle.to_bytes())
    print(
        f"wrote {args.path}: {len(bundle.entries)} entries, {len(bundle.checkpoints)} "
        f"checkpoints, node {tlog.node_id}"
    )
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from attestation.audit import audit
    from node.tlog.audit_source import read_source

    if args.state is not None:
        return _audit_with_state(args)
    icp = _icp_audit_target(args) if args.icp else None  # a user mistake stops us first
    seen = [read_source(str(path)).decode("utf-8", "replace") for path in args.checkpoint]
    if not (args.rpc or icp):
        report = _streamed_audit(args, seen)
        print(json.dumps(report.as_json(), indent=2) if args.json else report.render())
        return 0 if report.ok else 1
    # The chain and ICP checks read every entry's leaf and statement: the bundle whole.
    data = read_source(args.source)
    report = audit(
        data,
        args.source,
        trusted_fingerprint=args.key,
        seen_checkpoints=seen,
        require_attestation=args.require_attestation,
    )
    obedience = None
    if args.rpc and report.ok:
        anchored = audit_anchors(report, args)
        if anchored is not None:
            obedience = _audit_obedience(report, args, *anchored)
    finding = None
    if icp is not None and report.ok and report.log is not None:
        finding = _audit_icp(report, data, *icp)
    if args.json:
        out = report.as_json()
        if obedience is not None:
            out["obedience"] = obedience.as_json()
        if finding is not None:
            out["icp_anchor"] = finding.as_json()
        print(json.dumps(out, indent=2))
    else:
        print(report.render())
    return 0 if report.ok else 1


def _streamed_audit(args: argparse.Namespace, seen: list[str]) -> Any:
    """The log audit alone, reading the bundle once as it arrives (memory bounded)."""
    from attestation.audit import audit_with, verify_stream
    from node.tlog.audit_source import open_source

    with open_source(args.source, lines=True) as stream:
        return audit_with(
            args.source,
            lambda passed: verify_stream(stream, args.key, passed, seen),
            args.require_attestation,
        )


def _audit_with_state(args: argparse.Namespace) -> int:
    """`audit SOURCE --state DIR`: a node URL's log checked from the kept checkpoint on
    (its new entries, a consistency proof from the kept checkpoint); a first audit, or a
    bundle file, is checked whole and against the kept checkpoint. The state is written
    only when the audit passed."""
    from attestation.audit import STEPS, audit_with, verify_entries
    from attestation.bundle import read_bundle
    from attestation.errors import FormatError, VerificationError
    from node.tlog.audit_source import increment, is_url, latest_origin, open_source, read_source
    from node.tlog.audit_state import StateDir

    if args.rpc or args.icp:
        raise ConfigError("--state audits the log alone: run --rpc and --icp without --state")
    states = StateDir.open(args.state)
    seen = [read_source(str(path)).decode("utf-8", "replace") for path in args.checkpoint]
    kept = None
    if is_url(args.source):
        kept = states.load(latest_origin(args.source))
    if kept is not None:
        state = kept

        def verify(passed: Any) -> Any:
            head, entries = increment(args.source, state)
            return verify_entries(head, entries, args.key, passed, seen, resume=state)

        report = audit_with(args.source, verify, args.require_attestation)
        what = f"from the kept checkpoint at size {kept.checkpoint.size}"
    else:
        with open_source(args.source, lines=True) as stream:
            try:
                head, entries = read_bundle(stream)
            except FormatError as exc:
                head, entries, error = None, iter(()), str(exc)
            kept = states.load(head.origin) if head is not None else None
            extra = [kept.note] if kept is not None else []

            def verify_all(passed: Any) -> Any:
                if head is None:
                    raise VerificationError(STEPS[0], error)
                return verify_entries(head, entries, args.key, passed, [*seen, *extra])

            report = audit_with(args.source, verify_all, args.require_attestation)
        what = "whole" + (f", extending the kept checkpoint at size {kept.checkpoint.size}"
                          if kept is not None else "")  # fmt: skip
    if report.ok and report.log is not None and report.log.state is not None:
        path = states.save(report.log.state, kept if is_url(args.source) else None)
        note = f"kept state: {path} (size {report.log.size}; audited {what})"
    else:
        note = "kept state unchanged: the audit did not pass"
    if args.json:
        out = report.as_json()
        out["state"] = note
        print(json.dumps(out, indent=2))
    else:
        print(report.render())
        print(note)
    return 0 if report.ok else 1


def _icp_audit_target(args: argparse.Namespace) -> tuple[str, str, bytes, float]:
    """(url, canister, root key, max age) for `audit --icp`: flags, else the [icp] settings."""
    from attestation.icp import MAINNET_ROOT_KEY_DER
    from node.settings import load_settings

    icp = load_settings(args.home).icp
    canister = args.canister or icp.anchor_canister
    if not canister:
        raise ConfigError("audit --icp needs the anchor canister: give --canister ID")
    key_path = args.root_key or (Path(icp.root_key_path) if icp.root_key_path else None)
    if key_path is None:
        return args.icp, canister, MAINNET_ROOT_KEY_DER, icp.max_certificate_age_s
    try:
        return args.icp, canister, key_path.read_bytes(), icp.max_certificate_age_s
    except OSError as exc:
        raise ConfigError(f"--root-key {key_path}: {exc.strerror}") from None


def _audit_icp(
    report: Any, data: bytes, url: str, canister: str, key: bytes, age: float
) -> IcpFinding:
    """One more audit step: the log's certified anchor on the IC matches the log."""
    from attestation.audit import StepResult
    from node.anchoring.audit_icp import STEP_NAME, check_icp_anchor

    finding = check_icp_anchor(
        data, report.log.origin, url=url, canister=canister, root_key_der=key, max_age_s=age
    )
    report.steps.append(StepResult(len(report.steps) + 1, STEP_NAME, finding.ok, finding.detail))
    report.ok = report.ok and finding.ok
    return finding


def add_anchor_options(p: Any, rpc: str, controller: str) -> None:
    """The options `audit_anchors` reads, with the command's own help for the first two."""
    p.add_argument("--rpc", help=rpc)
    p.add_argument("--controller", help=controller)
    p.add_argument("--chain-id", type=int, help="refuse any other chain id")
    p.add_argument(
        "--approved-node",
        action="append",
        help="node address allowed to anchor (repeatable; default: the controller's allow-list)",
    )


def audit_anchors(
    report: Any, args: argparse.Namespace
) -> tuple[Controller, list[VerifiedAnchor]] | None:
    """One more audit step: every checkpoint of the bundle anchored on the chain, with its
    root, by a node on the allow-list (`--approved-node`, or the controller's own), and
    every anchor of that node's log a root of the bundle's entries. The controller and
    the verified anchors for the next step; None when this one failed."""
    from attestation.audit import ANCHOR_STEP, StepResult
    from attestation.errors import VerificationError
    from governance.anchor_audit import verify_with_allow_list
    from governance.chain import Chain, Controller
    from governance.errors import GovernanceError
    from node.anchoring.chain_home import EMBEDDED, load_deployment, open_audit_chain
    from node.settings import load_settings
    from node.tlog.log import log_id

    number, name = len(report.steps) + 1, ANCHOR_STEP
    try:
        home = Path(load_settings(args.home).home)
        if args.rpc == EMBEDDED:
            chain, deployment = open_audit_chain(EMBEDDED, home)
        else:
            chain, deployment = Chain.connect(args.rpc, expected_chain_id=args.chain_id), None
        address = args.controller
        if address is None:
            address = (deployment or load_deployment(home)).addresses["CampaignController"]
        controller = Controller(chain, address)
        verified, _ = verify_with_allow_list(
            controller,
            log_id(report.log.origin),
            [(cp.size, cp.root_hash) for cp in report.log.checkpoints],
            args.approved_node or None,
            leaves=report.log.leaves,
        )
    except (VerificationError, GovernanceError, AsiNodeError) as exc:
        report.ok = False
        report.steps.append(StepResult(number, name, False, str(exc)))
        return None
    nodes = ", ".join(sorted({v.node for v in verified}))
    report.steps.append(
        StepResult(
            number,
            name,
            True,
            f"{len(verified)} checkpoint(s) anchored on chain {chain.chain_id} "
            f"({chain.label}) by approved node {nodes}",
        )
    )
    return controller, verified


def _audit_obedience(
    report: Any, args: argparse.Namespace, controller: Controller, anchors: list[VerifiedAnchor]
) -> ObedienceFacts | None:
    """One more audit step: the log against the controller's history (every binding
    directive logged in time, no start while the chain held a campaign, acknowledgements
    committing to their entries, the node active at its anchors), judged with the
    tolerances given. The node is the one that anchored the log, which must be the one
    its attestation binding names, if any."""
    from attestation.audit import StepResult
    from attestation.errors import TrustError
    from governance.errors import GovernanceError
    from governance.obedience_audit import Tolerances, verify_obedience
    from node.anchoring.chain_home import EMBEDDED
    from node.tlog.log import log_id

    number, name = len(report.steps) + 1, "obedience"
    try:
        facts = verify_obedience(
            controller,
            report.log,
            _audited_node(report, anchors),
            log_id(report.log.origin),
            Tolerances(
                poll_s=args.poll_seconds,
                grace_s=args.grace_seconds,
                stop_deadline_s=args.stop_deadline_seconds,
                clock_skew_s=args.clock_skew_seconds,
            ),
            replayed_chain=args.rpc == EMBEDDED,
        )
    except (TrustError, GovernanceError, AsiNodeError) as exc:
        report.ok = False
        report.steps.append(StepResult(number, name, False, str(exc)))
        return None
    # An ungoverned log passes with a warning (FLAGGED), never as a plain [ok  ].
    report.steps.append(StepResult(number, name, True, facts.summary(), warning=not facts.governed))
    return facts


def _audited_node(report: Any, anchors: list[VerifiedAnchor]) -> str:
    """The EVM address whose obedience is audited: the account that anchored the log,
    checked against the address the node's attestation binding names, if it has one."""
    from attestation.errors import VerificationError

    anchored = anchors[0].node
    bound = None
    if report.attestation is not None and report.attestation["status"] != "rejected":
        with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
            bound = json.loads(report.log.attestation_evidence)["binding"]["evm_address"]
    if bound is not None and str(bound).lower() != anchored.lower():
        raise VerificationError(
            "step 1 (policy)",
            f"the log is anchored by {anchored}, but the node's attestation binding names {bound}",
        )
    return anchored


def cmd_icp(args: argparse.Namespace) -> int:
    """The node's ICP principal, certificate checks, certified anchors read back."""
    from attestation.errors import VerificationError
    from attestation.icp import MAINNET_ROOT_KEY_DER, verify_certificate
    from attestation.icp.certificate import certificate_from_read_state, decode_cbor
    from attestation.icp.principal import from_text, to_text
    from governance.icp import AnchorCanister, HttpTransport, IcpClient, IcpError, NodeIdentity
    from node.settings import load_settings

    settings = load_settings(args.home)
    icp = settings.icp
    root_key_path = getattr(args, "root_key", None)
    root_key_path = root_key_path or (Path(icp.root_key_path) if icp.root_key_path else None)
    try:
        root_key = root_key_path.read_bytes() if root_key_path else MAINNET_ROOT_KEY_DER
        if args.action == "principal":
            identity = NodeIdentity.load_or_create(settings.home / icp.identity_path)
            print(identity.principal_text)
            return 0
        if args.action == "verify":
            data = args.certificate.read_bytes()
            obj = decode_cbor(data, str(args.certificate))
            if isinstance(obj, Mapping) and set(obj) == {"certificate"}:
                data = certificate_from_read_state(data)  # a read_state response body
            cert = verify_certificate(
                data,
                root_key_der=root_key,
                canister_id=from_text(args.canister),
                now_ns=args.at if args.at is not None else time.time_ns(),
                max_age_ns=int(args.max_age * 1e9),
            )
            signer = f"subnet {to_text(cert.subnet_id)}" if cert.subnet_id else "the root key"
            print(f"valid: certified at {cert.time_ns} ns, signed by {signer}")
            print(f"root hash {cert.root_hash.hex()}")
            return 0
        url = args.url or icp.url
        canister = args.canister or icp.anchor_canister
        if not url or not canister:
            print(
                "asi-node: error: give --url and --canister, or set [icp] url and anchor_canister",
                file=sys.stderr,
            )
            return 2
        client = IcpClient(
            HttpTransport(url),
            NodeIdentity.load_or_create(settings.home / icp.identity_path),
            root_key_der=root_key,
            max_age_ns=int(icp.max_certificate_age_s * 1e9),
        )
        anchor = AnchorCanister(client, from_text(canister)).latest(args.log_id)
    except VerificationError as exc:
        print(f"asi-node: not verified: {exc}", file=sys.stderr)
        return 1
    except (IcpError, ValueError, OSError) as exc:
        print(f"asi-node: error: {exc}", file=sys.stderr)
        return 2
    if anchor is None:
        print(f"{args.log_id}: no anchor (certified absent)")
    else:
        print(
            f"{args.log_id}: size {anchor.tree_size} root {anchor.root.hex()} "
            f"(certified at {anchor.certified_at_ns} ns)"
        )
    return 0


def _attest_policy(args: argparse.Namespace, settings: Settings) -> Policy:
    from attestation.tee.policy import Policy

    if args.policy is not None:
        return Policy.load(args.policy)
    section = settings.attestation
    if section.measurements:
        return Policy.from_mapping(
            {"allow_debug": section.allow_debug, "measurements": section.measurements},
            f"{settings.config_path} [attestation]",
        )
    return Policy(allow_debug=section.allow_debug, any_measurement=True)


def _parse_at(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--at {text!r}: expected a date like 2025-06-01 or an ISO time"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def cmd_attest(args: argparse.Namespace) -> int:
    from attestation.errors import VerificationError
    from attestation.tee.errors import TeeError
    from attestation.tee.evidence import verify_file
    from node.settings import load_settings

    settings = load_settings(args.home)
    try:
        if args.action == "collect":
            from node.evidence import collect_and_log
            from node.runtime import open_node

            collected = collect_and_log(
                open_node(args.home),
                args.provider or settings.attestation.provider,
                evm_address=args.evm_address,
                icp_principal=args.icp_principal,
                gpus=args.gpus or settings.attestation.gpus,
                out=args.out,
            )
            print(f"logged as entry {collected.entry} of the node's log (node {collected.node_id})")
            print(collected.describe())
            print(f"binding nonce {collected.bundle.binding.nonce}; written to {collected.path}")
            return 0
        try:
            data = args.file.read_bytes()
            certs = [path.read_bytes() for path in args.certs or []]
        except OSError as exc:
            raise ConfigError(f"{exc.filename}: cannot read: {exc.strerror}") from None
        at = _parse_at(args.at)
        policy = _attest_policy(args, settings)
        print(f"verifying {args.file} at {at:%Y-%m-%d %H:%M} UTC; policy: {policy.describe()}")
        if policy.any_measurement:
            print("  note: no measurement allow-list ([attestation] measurements or --policy)")
        try:
            verdict = verify_file(
                data, policy=policy, at=at, certificates=certs, log_public_key=args.log_key
            )
        except VerificationError as exc:
            for step in exc.passed:
                print(f"  ok    {step}")
            print(f"  FAIL  {exc.step}: {exc.detail}")
            print(f"result: REJECTED at step {exc.step}")
            return 1
        for step in verdict.steps:
            print(f"  ok    {step}")
        if not verdict.attested:
            print("result: UNATTESTED (provider none): the node runs without a TEE")
            return 3
        print(f"result: VERIFIED {verdict.kind}")
        return 0
    except TeeError as exc:
        print(f"asi-node: error: {exc}", file=sys.stderr)
        return 2


def cmd_chain(args: argparse.Namespace) -> int:
    from governance.chain import Chain, address_of
    from node.anchoring.chain_home import (
        deploy_for_node,
        load_key,
        read_key_file,
        save_deployment,
    )
    from node.runtime import open_node
    from node.store import Outbox

    if args.action == "deploy":
        params, distribution = _deploy_settings(args)  # refused before anything happens
    node = open_node(args.home, create=True)
    home = Path(node.settings.home)
    if args.action == "deploy":
        deployer_key = read_key_file(args.deployer_key_file)
        chain = Chain.connect(args.rpc, expected_chain_id=args.chain_id)
        node_key = load_key(home)
        deployment = deploy_for_node(
            chain,
            deployer_key,
            node_key,
            guardian=args.guardian,
            extra_nodes=tuple(args.approve or ()),
            fund_node_wei=int(args.fund_node_eth * 10**18),
            params=params,
            distribution=distribution,
        )
        path = save_deployment(home, deployment)
        print(f"deployed on chain {deployment.chain_id} ({args.rpc}); recorded in {path}")
        for name, address in deployment.addresses.items():
            print(f"  {name:<20} {address}")
        print(f"  node address         {address_of(node_key)} (approved)")
        print("  " + _describe_dao(params, distribution, args.guardian or deployment.deployer))
        return 0
    if args.rpc:
        chain_settings = node.settings.chain.model_copy(update={"rpc_url": args.rpc})
        node.settings = node.settings.model_copy(update={"chain": chain_settings})
    anchoring = node.anchoring()  # the embedded chain when no RPC URL is set
    print(
        f"chain {anchoring.chain.chain_id} at {anchoring.chain.label}, "
        f"head {anchoring.chain.head()}"
    )
    print(f"controller {anchoring.controller.address}; node {anchoring.publisher.address} approved")
    print("outbox: " + _outbox_line(Outbox(node.log_db()).rows(), ("pending", "sent")))
    icp = node.settings.icp
    icp_rows = Outbox(node.log_db(), "icp").rows()
    if icp.anchor_canister or icp_rows:
        where = f"canister {icp.anchor_canister} at {icp.url}" if icp.anchor_canister else "off"
        print(f"icp outbox ({where}): " + _outbox_line(icp_rows, ("pending",)))
    return 0


def _deploy_settings(args: argparse.Namespace) -> tuple[DaoParams, tuple[Allocation, ...]]:
    """The DAO parameters and token holders `chain deploy` was given, checked; ConfigError
    (one line naming the option) for a bad value or an unsafe production DAO."""
    from dataclasses import replace

    from governance.deploy_config import (
        DEV_PARAMS,
        DEV_SUPPLY,
        Clock,
        Profile,
        check_production,
        parse_address,
        parse_duration,
        parse_threshold,
        production_params,
        read_distribution,
    )

    dev = Profile(args.profile) is Profile.DEV
    clock = Clock(args.clock) if args.clock else Clock.BLOCKNUMBER
    if args.block_time <= 0:
        raise ConfigError(f"--block-time: {args.block_time} is not a positive number of seconds")
    distribution: tuple[Allocation, ...] = ()
    if args.distribution is not None:
        try:
            distribution = read_distribution(args.distribution)
        except ValueError as exc:
            raise ConfigError(f"--distribution: {exc}") from None
    supply = sum(a.amount for a in distribution) or DEV_SUPPLY
    if args.guardian:
        try:
            parse_address(args.guardian, "the guardian")
        except ValueError as exc:
            raise ConfigError(f"--guardian: {exc}") from None
    base = (
        replace(DEV_PARAMS, clock=clock)
        if dev
        else production_params(clock=clock, block_s=args.block_time, supply=supply)
    )
    params = base
    for flag, field, parse in (
        ("--voting-delay", "voting_delay", lambda t: parse_duration(t, clock, args.block_time)),
        ("--voting-period", "voting_period", lambda t: parse_duration(t, clock, args.block_time)),
        (
            "--late-quorum-extension",
            "late_quorum_extension",
            lambda t: parse_duration(t, clock, args.block_time),
        ),
        ("--timelock-delay", "timelock_delay_s", lambda t: parse_duration(t, None)),
        ("--proposal-threshold", "proposal_threshold", lambda t: parse_threshold(t, supply)),
        ("--quorum", "quorum_percent", int),
    ):
        text = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if text is None:
            continue
        try:
            changed: dict[str, Any] = {field: parse(text)}
            params = replace(params, **changed)
        except ValueError as exc:
            raise ConfigError(f"{flag}: {exc}") from None
    if not dev:
        try:
            check_production(params, args.guardian, distribution)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return params, distribution


def _describe_dao(params: DaoParams, distribution: tuple[Allocation, ...], guardian: str) -> str:
    from governance.deploy_config import DEV_SUPPLY, TOKEN, Clock

    unit = "blocks" if params.clock is Clock.BLOCKNUMBER else "s"
    total = sum(a.amount for a in distribution) or DEV_SUPPLY
    holders = f"{len(distribution)} holder(s)" if distribution else "the deployer"
    return (
        f"DAO: {params.clock} clock; voting delay {params.voting_delay} {unit}, period "
        f"{params.voting_period} {unit}, late-quorum extension "
        f"{params.late_quorum_extension} {unit}; timelock {params.timelock_delay_s} s; "
        f"threshold {params.proposal_threshold / TOKEN:g} tokens; quorum "
        f"{params.quorum_percent}%; guardian {guardian}; {total / TOKEN:g} tokens to {holders}"
    )


def _outbox_line(rows: list[OutboxRow], open_states: tuple[str, ...]) -> str:
    """Counts per status, the latest confirmed size and why the oldest open root waits."""
    states = (*open_states, "confirmed", "failed")
    line = ", ".join(f"{sum(r.status == s for r in rows)} {s}" for s in states)
    confirmed = [r.tree_size for r in rows if r.status == "confirmed"]
    if confirmed:
        line += f"; latest confirmed size {max(confirmed)}"
    waiting = [r for r in rows if r.status in open_states and r.last_error]
    if waiting:
        line += f"; size {waiting[0].tree_size} waits: {waiting[0].last_error}"
    return line


def add_parsers(sub: Any) -> None:
    """The `log`, `audit`, `icp`, `attest` and `chain` commands."""
    p = sub.add_parser("log", help="the transparency log")
    lsub = p.add_subparsers(dest="action", required=True)
    e = lsub.add_parser("export", help="write a self-contained bundle for `asi-node audit`")
    e.add_argument("path", type=Path, help="bundle file to write (JSON)")
    e.add_argument(
        "--lines",
        action="store_true",
        help="write the line-delimited bundle (version 3), streamed: for large logs",
    )
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("audit", help="verify a log bundle or a node's log offline")
    p.add_argument("source", help="bundle file, or a node's base URL (http://host:port)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument(
        "--require-attestation",
        action="store_true",
        help="fail a node whose log carries no verified TEE evidence (default: a warning)",
    )
    p.add_argument("--key", help="trusted node key fingerprint (sha256:...) to pin")
    p.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        help="a signed checkpoint seen before (file); the log must extend it (repeatable)",
    )
    p.add_argument(
        "--state",
        type=Path,
        metavar="DIR",
        help="keep the last verified checkpoint of each log in DIR; the next audit of a node "
        "URL fetches only the entries after it, with a consistency proof from it",
    )
    add_anchor_options(
        p,
        rpc='also check every checkpoint is anchored on this chain (URL, or "embedded" '
        "for the home's embedded chain)",
        controller="CampaignController address (default: the home's record)",
    )
    for flag, default, what in (
        ("--poll-seconds", 5.0, "how often the node reads the controller"),
        ("--grace-seconds", 30.0, "more time the node has to apply a directive"),
        ("--stop-deadline-seconds", 30.0, "the time to stop training after a pause"),
        ("--clock-skew-seconds", 0.0, "how far the node's clock may be from the chain's"),
    ):
        p.add_argument(
            flag,
            type=float,
            default=default,
            metavar="S",
            help=f"with --rpc, the obedience check's tolerance: {what} (default {default:g})",
        )
    p.add_argument(
        "--icp",
        metavar="URL",
        help="also check the log's certified anchor in the ICP anchor canister at this "
        "boundary node or replica URL",
    )
    p.add_argument("--canister", help="anchor canister id (default: [icp] anchor_canister)")
    p.add_argument(
        "--root-key",
        type=Path,
        metavar="DER",
        help="IC root key file, DER (default: [icp] root_key_path, else the mainnet key)",
    )
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("icp", help="Internet Computer: node principal, certificates, anchors")
    isub = p.add_subparsers(dest="action", required=True)
    isub.add_parser("principal", help="print the node's ICP principal (creates its key)")
    i = isub.add_parser("verify", help="verify an IC certificate (or read_state answer) file")
    i.add_argument("certificate", type=Path)
    i.add_argument("--canister", required=True, help="canister id the certificate is about")
    i.add_argument("--root-key", type=Path, help="DER root key (default: [icp] or mainnet)")
    i.add_argument("--at", type=int, help="check freshness at this time, ns since epoch")
    i.add_argument("--max-age", type=float, default=300.0, help="seconds (default 300)")
    i = isub.add_parser("latest", help="the certified latest anchor of a log")
    i.add_argument("log_id")
    i.add_argument("--root-key", type=Path, help="DER root key (default: [icp] or mainnet)")
    i.add_argument("--url", help="boundary node or replica (default: [icp] url)")
    i.add_argument("--canister", help="anchor canister id (default: [icp] anchor_canister)")
    p.set_defaults(func=cmd_icp)

    p = sub.add_parser("attest", help="collect or verify TEE attestation evidence")
    asub = p.add_subparsers(dest="action", required=True)
    a = asub.add_parser("collect", help="collect evidence bound to the node's keys")
    a.add_argument("--provider", choices=["none", "sev-snp", "tdx", "nvidia"])
    a.add_argument("--gpus", action="store_true", help="also collect NVIDIA GPU evidence")
    a.add_argument("--evm-address", required=True, help="the node's EVM address, 0x...")
    a.add_argument(
        "--icp-principal", help="the node's ICP principal (default: its [icp] identity's)"
    )
    a.add_argument(
        "--out", type=Path, help="output file (default: <home>/attestation/evidence.json)"
    )
    a = asub.add_parser("verify", help="verify an evidence file step by step")
    a.add_argument("file", type=Path, help="evidence bundle, SNP/HCL report, TDX quote, GPU report")
    a.add_argument("--at", help="judge validity dates at this date (default: now)")
    a.add_argument("--policy", type=Path, help="policy TOML/JSON (default: [attestation] settings)")
    a.add_argument(
        "--certs", type=Path, nargs="*", help="certificates raw evidence lacks (PEM/DER)"
    )
    a.add_argument("--log-key", help="require the binding document to name this node log key")
    p.set_defaults(func=cmd_attest)

    p = sub.add_parser("chain", help="deploy the contracts; check the node's chain set-up")
    chsub = p.add_subparsers(dest="action", required=True)
    d = chsub.add_parser("deploy", help="deploy token, governor, timelock, controller; record them")
    d.add_argument("--rpc", required=True, help="JSON-RPC URL of the chain")
    d.add_argument(
        "--deployer-key-file", type=Path, required=True, help="file with the funded deployer key"
    )
    d.add_argument("--chain-id", type=int, help="refuse any other chain id")
    d.add_argument(
        "--profile",
        choices=["production", "dev"],
        default="production",
        help="production (default): safe parameters, guardian and distribution required; "
        "dev: fast test parameters, the deployer holds the supply and is the guardian",
    )
    d.add_argument(
        "--guardian",
        metavar="ADDRESS",
        help="the guardian (a multisig): pauses campaigns, cancels proposals (required "
        "outside --profile dev, where it defaults to the deployer)",
    )
    d.add_argument(
        "--distribution",
        type=Path,
        metavar="FILE",
        help="initial token holders, JSON or CSV of address,amount in whole tokens "
        "(required outside --profile dev)",
    )
    d.add_argument(
        "--clock",
        choices=["blocknumber", "timestamp"],
        help="the token's ERC-6372 clock: blocknumber (default) or timestamp (L2s)",
    )
    d.add_argument(
        "--block-time",
        type=float,
        default=12.0,
        metavar="S",
        help="seconds per block, to turn durations into blocks on the block clock (default 12)",
    )
    d.add_argument(
        "--voting-delay",
        metavar="DURATION",
        help="e.g. 1d (default; dev: 1 block); a bare number is in clock units",
    )
    d.add_argument(
        "--voting-period",
        metavar="DURATION",
        help="e.g. 1w (default; dev: 50 blocks); a bare number is in clock units",
    )
    d.add_argument(
        "--timelock-delay",
        metavar="DURATION",
        help="e.g. 2d (default; dev: 60 s; at least 1d outside dev); a bare number is seconds",
    )
    d.add_argument(
        "--proposal-threshold",
        metavar="TOKENS|PCT%",
        help="votes needed to propose: tokens, or a share of the supply (default 0.25%%; "
        "dev: 0; above zero outside dev)",
    )
    d.add_argument("--quorum", metavar="PCT", help="quorum, percent of the supply (default 4)")
    d.add_argument(
        "--late-quorum-extension",
        metavar="DURATION",
        help="how long a vote stays open after a late quorum (default 1d; dev: 0)",
    )
    d.add_argument("--approve", action="append", help="approve another node address (repeatable)")
    d.add_argument(
        "--fund-node-eth", type=float, default=0.0, help="ether sent from the deployer to the node"
    )
    d = chsub.add_parser("status", help="connect, check contracts and node account, show outbox")
    d.add_argument("--rpc", help="JSON-RPC URL (default: chain.rpc_url, else the embedded chain)")
    p.set_defaults(func=cmd_chain)
