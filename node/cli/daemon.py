"""The long-running commands: `serve` (the HTTP API) and `daemon` (the whole node).

`daemon` is what a contributor's container runs: the HTTP API (as `serve`) in a thread,
and the campaigns under governance (as `gov run`): the directive sources the settings
configure (the EVM CampaignController, the SNS), acknowledged on-chain; with no source
configured the campaigns run ungoverned, and the daemon says so. The daemon owns the
node's log and its anchor followers (the configured chain, or the embedded EVM, and the
ICP canister when configured) for its whole life; the campaign runs only append to the
log. SIGTERM (`docker stop`) or Ctrl-C stops the
training at its next safe point (the experiments go back to the queue, nothing is lost),
drains the anchor followers, then stops the API, and the command exits 0; starting it
again resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attestation.schema import CampaignStatus
from node.errors import ConfigError, StoreError
from node.governed.acks import SHUTDOWN_WAIT_S, OnChainAcks

if TYPE_CHECKING:
    from fastapi import FastAPI

    from governance.directives import DirectiveSource
    from governance.relay import ChainGovernor
    from node.governed.obey import GovernedNode
    from node.runtime import Node

log = logging.getLogger(__name__)

API_START_TIMEOUT_S = 30.0
API_STOP_TIMEOUT_S = 10.0
# The campaigns `daemon` takes by default: a done one runs again when a peer's imports
# queue work in it.
RUNNABLE = (
    CampaignStatus.CREATED,
    CampaignStatus.RUNNING,
    CampaignStatus.PAUSED,
    CampaignStatus.DONE,
)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from node.cli.home import open_home

    node = open_home(args.home, create=True)
    host = args.host or node.settings.api.host
    port = args.port or node.settings.api.port
    check_listen(host, port)
    uvicorn.run(serve_app(node), host=host, port=port, log_level="warning")
    return 0


def check_listen(host: str, port: int) -> None:
    """ConfigError naming why `host:port` cannot be listened on (a bad host, a port in
    use), before anything starts."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: the host does not resolve ({exc})"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def port_number(text: str) -> int:
    """argparse type: a TCP port, 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1-65535")
    return port


def serve_app(node: Node, node_status: Callable[[], Mapping[str, Any]] | None = None) -> FastAPI:
    """The app `serve` runs: the node's store, operator token, CORS origins and TEE
    evidence, and the Governor of the deployment when a chain is configured
    (`serve_governor`); the daemon adds its governed runs' status to /health."""
    from node.api.app import create_app
    from node.api.attestation import evidence_path

    return create_app(
        node.store,
        governor=serve_governor(node),
        operator_token=node.settings.api.operator_token,
        attestation_evidence=evidence_path(node.settings),
        node_status=node_status,
        threads_per_worker=node.settings.loop.threads_per_worker,
        log_store=node.log_db(),
        cors_origins=node.settings.api.cors_origins,
        isolation_mode=isolation_mode(node.settings.sandbox.allow_unisolated),
        attested=node.settings.attestation.under_tee,
    )


def isolation_mode(allow_unisolated: bool) -> str:
    """How this host's sandbox jails candidates, for /metrics: "namespaces" (the jail),
    "unisolated" (rlimits only, as the settings allow) or "refused" (the node will not
    run candidates here)."""
    from loop.sandbox import namespace_problem

    if namespace_problem() is None:
        return "namespaces"
    return "unisolated" if allow_unisolated else "refused"


def serve_governor(node: Node) -> ChainGovernor | None:
    """The Governor the /gov proposal, ballot and keeper routes relay through.

    None (those routes answer 503) without `chain.rpc_url`, or, with a warning, when no
    deployment is recorded in the home. Otherwise the chain is connected and checked
    (chain id, contract code) and `api.relayer_key_path` (default: the node's chain key)
    pays the gas; it needs no votes, and a warning says so if it has some.
    """
    from governance.relay import ChainGovernor
    from node.anchoring.chain_home import DEPLOYMENT_FILE, connect_deployed, load_key, read_key_file

    settings = node.settings
    if not settings.chain.rpc_url:
        return None
    home = Path(settings.home)
    if not (home / DEPLOYMENT_FILE).exists():
        print(
            f"asi-node: warning: chain.rpc_url is set but {home / DEPLOYMENT_FILE} does not "
            "exist (run `asi-node chain deploy`); the /gov proposal, ballot and keeper routes "
            "answer 503",
            file=sys.stderr,
        )
        return None
    chain, deployment = connect_deployed(settings.chain, home)
    path = settings.api.relayer_key_path
    key = read_key_file(home / path) if path else load_key(home)
    governor = ChainGovernor.from_deployment(chain, deployment, key)
    if governor.relayer_votes():
        print(
            f"asi-node: warning: the relayer {governor.relayer} holds voting power; it only "
            "pays gas, so relay from an account without votes (api.relayer_key_path)",
            file=sys.stderr,
        )
    if not chain.balance(governor.relayer):
        print(
            f"asi-node: warning: the relayer {governor.relayer} holds no ether on chain "
            f"{chain.chain_id}; relayed ballots and keeper calls fail until it is funded",
            file=sys.stderr,
        )
    return governor


def cmd_daemon(args: argparse.Namespace) -> int:
    from node.cli.home import open_home
    from node.cli.progress import print_anchors
    from node.evidence import collect_at_start
    from node.governed.obey import sources_from_settings
    from node.store import DirectiveLedger

    node = open_home(args.home, create=True)
    print(node.device_line(), flush=True)
    host = args.host or node.settings.api.host
    port = args.port or node.settings.api.port
    check_listen(host, port)
    # With a TEE provider set, evidence comes first: the log carries it before any
    # experiment, and a machine that cannot produce it does not start (ConfigError).
    evidence = collect_at_start(node)
    if evidence is not None:
        print(f"attestation: {evidence.describe()}, logged as entry {evidence.entry}", flush=True)
    campaigns = [node.store.get_campaign(ref).id for ref in args.campaigns] or [
        c.id for c in node.store.list_campaigns() if c.status in RUNNABLE
    ]
    sources = sources_from_settings(node.settings, node.store)
    if not sources:
        obeyed = sorted({d.source for d in DirectiveLedger(node.store).list_applied()})
        if obeyed:
            raise ConfigError(
                f"this node has obeyed governance ({', '.join(obeyed)}) but no governance "
                "source is configured now: running ungoverned could start campaigns it was "
                "told to pause or stop; configure the source again (chain.rpc_url, [icp])"
            )
        print(
            "asi-node: warning: no governance source is configured (chain.rpc_url after "
            "`asi-node chain deploy`, or the [icp] SNS settings): the campaigns run "
            "ungoverned",
            file=sys.stderr,
        )
    live = Live()
    with (
        stop_on_signals() as stop,
        node.anchoring_followers(),
        api_running(serve_app(node, live.status), host, port),
        following_peers(node),
    ):
        print(f"serving the HTTP API on http://{host}:{port}", flush=True)
        obey(node, campaigns, sources, stop, adopt_new=not args.campaigns, live=live)
    print_anchors(node)
    print("asi-node: stopped; run again to resume", flush=True)
    return 0


@contextlib.contextmanager
def following_peers(node: Node) -> Iterator[None]:
    """The peers of `[network] peers`, and with `[network] directory` the nodes the
    controller lists, synced every `[network] sync_seconds` while the block runs
    (nothing when neither is set)."""
    from node.network.anchors import anchors_for, unchecked_note
    from node.network.directory import to_follow
    from node.network.follow import Follower, LogPin
    from node.network.peers import PeerBook
    from node.network.syncing import peer_syncs

    network = node.settings.network
    if not (network.peers or network.directory):
        yield
        return
    follower = Follower(
        node.store,
        PeerBook(node.settings.home),
        network,
        log_store=node.log_db(),
        anchors=anchors_for(node.settings),
    )

    def show(line: str) -> None:
        print(f"{datetime.now().astimezone():%Y-%m-%d %H:%M:%S} {line}", flush=True)

    def peers() -> dict[str, LogPin | None]:
        follow, unread = to_follow(node.settings)
        if unread is not None:
            show(f"network: warning: {unread}; syncing [network] peers only")
        return follow

    which = f"{len(network.peers)} peer(s)" + (" and the directory" if network.directory else "")
    checked = unchecked_note(node.settings) or "peers' logs read up to their chain anchors"
    print(f"following {which}, synced every {network.sync_seconds:g} s; {checked}", flush=True)
    with peer_syncs(follower, peers, network.sync_seconds, show):
        yield


def obey(
    node: Node,
    campaigns: list[str],
    sources: Iterable[DirectiveSource],
    stop: threading.Event,
    *,
    adopt_new: bool = False,
    live: Live | None = None,
) -> None:
    """Run `campaigns` as the directive `sources` allow, acknowledging on-chain what was
    applied (the EVM source), until `stop`; then stop every run and wait for it. With
    `adopt_new`, a campaign created meanwhile (`campaign create`) is run too; `live`
    gets the governed node, for /health."""
    from node.governed.obey import StepReport, governed_node

    sources = list(sources)
    if sources and node.settings.log_url != node.settings.database_url:
        raise ConfigError(
            "log_database_url puts this node's log apart from database_url, but governed "
            "runs keep their directives beside the campaigns and commit to log entries "
            "there: run governed nodes with one database, or unset log_database_url"
        )
    governed = governed_node(node, campaigns, sources, on_event=_progress(node))
    if live is not None:
        live.governed = governed
    acks = chain_acks(node, sources)
    names = ", ".join(s.name for s in sources) or "no governance source"
    which = ", ".join(governed.campaigns) or "no campaign yet"
    print(f"obeying {names} for {which}; Ctrl-C stops", flush=True)

    def after_step(report: StepReport) -> None:
        if adopt_new:
            try:
                created = [
                    c for c in node.store.list_campaigns() if c.status is CampaignStatus.CREATED
                ]
            except StoreError as exc:  # looked for again after the next poll
                log.warning("new campaigns not looked for", extra={"error": str(exc)})
                created = []
            for camp in created:
                if governed.adopt(camp.id):
                    print(f"{camp.name}: new campaign {camp.id}, run from now on", flush=True)
        if acks is not None:
            acks(report)

    governed.serve(stop, node.settings.governance.poll_seconds, after_step=after_step)
    if acks is not None:
        acks.wait(SHUTDOWN_WAIT_S)


class Live:
    """The daemon's governed node once `obey` has built it; /health reads its status."""

    def __init__(self) -> None:
        self.governed: GovernedNode | None = None

    def status(self) -> dict[str, Any]:
        return {} if self.governed is None else self.governed.status()


def _progress(node: Node) -> Callable[[str, str, dict[str, Any]], None]:
    """Progress lines of every run, each led by its campaign's name."""
    from node.cli.progress import EventPrinter, event_line

    names: dict[str, str] = {}
    printer = EventPrinter()

    def show(campaign_id: str, kind: str, data: dict[str, Any]) -> None:
        line = event_line(kind, data)
        if line is not None:
            if campaign_id not in names:
                names[campaign_id] = node.store.get_campaign(campaign_id).name
            stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")
            text = f"{stamp} {names[campaign_id]}: {line.strip()}"
            printer.line(kind, text, data.get("experiment"))

    return show


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event SIGINT and SIGTERM set while the block runs; the old handlers come back."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        print(f"\nasi-node: stopping ({signal.Signals(signum).name})", flush=True)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def api_running(app: FastAPI, host: str, port: int) -> Iterator[None]:
    """uvicorn serving `app` in a thread while the block runs (from the moment it
    listens); stopped, and waited for, at the end. ConfigError if it could not start
    (the port taken since it was checked)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="http-api", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + API_START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the HTTP API did not start on {host}:{port}")
            time.sleep(0.02)
        yield
    finally:
        server.should_exit = True
        thread.join(API_STOP_TIMEOUT_S)


def chain_acks(node: Node, sources: Iterable[DirectiveSource]) -> OnChainAcks | None:
    """On-chain acknowledgements for the EVM controller among `sources` (None without
    one), sent with the node's chain key over a connection of their own. A node not on
    the controller's allow-list still obeys; a warning says its acknowledgements fail."""
    from governance.chain import Controller
    from governance.errors import NodeNotApprovedError
    from governance.evm_source import EvmSource
    from governance.relay import ChainAcker
    from node.anchoring.chain_home import connect_deployed, load_key

    evm = next((s for s in sources if isinstance(s, EvmSource)), None)
    if evm is None:
        return None
    settings = node.settings
    home = Path(settings.home)
    chain, deployment = connect_deployed(settings.chain, home)
    controller = Controller(chain, deployment.addresses["CampaignController"])
    acker = ChainAcker(controller, load_key(home))
    try:
        acker.check_approved()
    except NodeNotApprovedError as exc:
        print(f"asi-node: warning: {exc}", file=sys.stderr, flush=True)
    return OnChainAcks(node.store, acker, evm.name)


def add_parsers(sub: Any) -> None:
    """The `serve` and `daemon` commands."""
    p = sub.add_parser("serve", help="serve the HTTP API (read-only, and the /gov relay)")
    p.add_argument("--host", help="address to listen on (default: api.host)")
    p.add_argument("--port", type=port_number, help="TCP port (default: api.port)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("daemon", help="the whole node: HTTP API, governed campaign runs, anchoring")
    p.add_argument(
        "campaigns",
        nargs="*",
        help="campaign ids or names (default: every one created, running or paused)",
    )
    p.add_argument("--host", help="address to listen on (default: api.host)")
    p.add_argument("--port", type=port_number, help="TCP port (default: api.port)")
    p.set_defaults(func=cmd_daemon)
