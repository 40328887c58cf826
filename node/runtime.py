"""A node opened on its home: settings, store and engineer, wired once and passed down."""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from attestation.keys import NodeKey
from loop.devices import DevicePool, visible_gpus
from loop.engineer import Engineer
from loop.repair import Runs
from loop.sandbox import Limits, check_isolation
from node.campaign.config import CampaignConfig
from node.campaign.leases import new_lease
from node.campaign.ray_engineer import RayEngineer, RayPlan
from node.campaign.scheduler import CampaignRunner, EventSink, RunSummary
from node.campaign.tasks import check_data
from node.errors import ConfigError
from node.evidence import log_worker_evidence
from node.settings import Settings, init_home, load_settings
from node.store import Store
from node.tlog.log import LogView, NodeLog
from node.tlog.records import Recorder

if TYPE_CHECKING:
    from node.anchoring.chain_home import Anchoring
    from node.anchoring.followers import AnchorSummary
    from node.campaign.llm_setup import LLMSetup

HELDOUT_KEY = "heldout.key"
NODE_KEY = "node.key"


@dataclass
class Node:
    """What the CLI and the daemon work with."""

    settings: Settings
    store: Store
    _log: NodeLog | None = field(default=None, repr=False)
    _log_store: Store | None = field(default=None, repr=False)
    _anchoring: Anchoring | None = field(default=None, repr=False)
    anchor_summaries: list[AnchorSummary] = field(default_factory=list, repr=False)
    created: bool = False  # this open made the home (a first start)
    _gpus: tuple[int, ...] | None = field(default=None, repr=False)

    @property
    def anchor_summary(self) -> AnchorSummary | None:
        """The chain's summary of the last anchored run (the first target's)."""
        return self.anchor_summaries[0] if self.anchor_summaries else None

    @property
    def key_path(self) -> Path:
        return Path(self.settings.home) / NODE_KEY

    def _passphrase(self) -> bytes | None:
        secret = self.settings.tlog.key_passphrase
        return secret.get_secret_value().encode() if secret is not None else None

    def node_key(self) -> NodeKey:
        """The node's signing key; created (0600) on first use for homes made before it."""
        if not self.key_path.exists():
            NodeKey.generate().save(self.key_path, self._passphrase())
        return NodeKey.load(self.key_path, self._passphrase())

    def log_db(self) -> Store:
        """The database of this node's own log and anchor outbox: the campaign store,
        unless `log_database_url` names another (nodes sharing one campaign database
        each keep their log apart, signed by their own key)."""
        if self._log_store is None:
            url = self.settings.log_url
            self._log_store = self.store if url == self.settings.database_url else Store.open(url)
        return self._log_store

    def log(self) -> NodeLog:
        """The node's transparency log (opened once)."""
        if self._log is None:
            tl = self.settings.tlog
            self._log = NodeLog(
                self.log_db(),
                self.node_key(),
                checkpoint_every=tl.checkpoint_every,
                checkpoint_interval_s=tl.checkpoint_interval_s,
            )
        return self._log

    def heldout_secret(self) -> bytes:
        """The secret that seeds held-out test sets; candidates never see it.

        Created on first use (0600) so homes made before it existed keep working.
        """
        path = Path(self.settings.home) / HELDOUT_KEY
        if not path.exists():
            path.touch(mode=0o600)
            path.write_bytes(secrets.token_bytes(32))
        return path.read_bytes()

    def compile_cache(self) -> Path:
        """The Triton/Inductor cache every sandboxed GPU run shares (created on first use).

        The sandbox user must own it (loop.sandbox.Limits.shared_cache), so a root node
        hands it to that user; compiled kernels then survive from one experiment to the
        next and only the first run pays for compiling and autotuning.
        """
        path = Path(self.settings.home) / self.settings.gpu.compile_cache
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.geteuid() == 0:
            limits = Limits()
            os.chown(path, limits.uid, limits.gid)
        return path

    def gpus(self) -> tuple[int, ...]:
        """The GPUs experiments train on: `[gpu] devices`, or with "auto" every GPU
        torch sees (none on a CPU machine)."""
        if self._gpus is None:
            devices = self.settings.gpu.devices
            self._gpus = tuple(range(visible_gpus())) if devices == "auto" else devices
        return self._gpus

    def device_line(self) -> str:
        """Where experiments train, for the operator; says so when GPUs sit unused."""
        gpus = self.gpus()
        how = '[gpu] devices = "auto"' if self.settings.gpu.devices == "auto" else "[gpu] devices"
        if gpus:
            return f"training on GPU(s) {', '.join(map(str, gpus))} ({how})"
        visible = visible_gpus() if self.settings.gpu.devices == () else 0
        if visible:
            return (
                f"WARNING: training on the CPU although {visible} GPU(s) are visible: "
                'set [gpu] devices = "auto" (or their indices) in config.toml'
            )
        return "training on the CPU (no GPU visible)"

    def engineer(self) -> Runs:
        """What runs experiments: an Engineer on this machine, or with `[ray] address`
        a RayEngineer sending each one to a Ray worker."""
        if self.settings.ray.address:
            return self.ray_engineer()
        gpus = self.gpus()
        limits = self._limits(bool(gpus), self.compile_cache() if gpus else None)
        check_isolation(limits)  # refuse before any candidate runs, naming what is missing
        home = Path(self.settings.home)
        return Engineer(
            home / "workspaces",
            limits,
            devices=DevicePool(gpus) if gpus else None,
            standby=self.settings.loop.standby,
        )

    def ray_engineer(self) -> RayEngineer:
        """The RayEngineer of `[ray]`: experiments on the cluster's workers, under this
        node's sandbox limits (each worker machine needs the same isolation)."""
        section = self.settings.ray
        plan = RayPlan(
            address=section.address,
            gpus_per_experiment=section.gpus_per_experiment,
            cpus_per_experiment=section.cpus_per_experiment,
            workspaces=section.workspaces,
        )
        # The compile cache lives in this node's home, which a worker need not have.
        return RayEngineer.connect(plan, self._limits(bool(section.gpus_per_experiment), None))

    def _limits(self, gpus: bool, shared_cache: Path | None) -> Limits:
        sb = self.settings.sandbox
        home = Path(self.settings.home)
        return Limits(
            wall_s=sb.wall_seconds,
            cpu_s=sb.cpu_seconds,
            # The CUDA driver reserves huge virtual ranges: no address-space cap with GPUs.
            address_space_bytes=None if gpus else sb.memory_bytes or None,
            max_processes=sb.max_processes,
            max_file_bytes=sb.max_file_bytes,
            allow_unisolated=sb.allow_unisolated,
            threads=self.settings.loop.threads_per_worker,
            hidden_paths=(home,),  # config, database and keys stay out of the jail
            shared_cache=shared_cache,
            # Autotuning results go into the same cache, so later runs skip the benchmarks.
            extra_env={"TRITON_CACHE_AUTOTUNING": "1"} if gpus else {},
        )

    def anchoring(self) -> Anchoring:
        """The chain the log's checkpoints go to: `chain.rpc_url`, or the embedded EVM;
        and the ICP anchor canister too when [icp] url and anchor_canister are set.

        Connecting checks everything first (chain id, contract code, an approved and
        funded node account); the embedded chain is journaled in the home.
        """
        if self._anchoring is None:
            from node.anchoring.chain_home import embedded_anchoring, open_publisher
            from node.anchoring.evm import Backoff

            chain = self.settings.chain
            home = Path(self.settings.home)
            if chain.rpc_url:
                anchoring = open_publisher(chain, home, self.log_db())
            else:
                anchoring = embedded_anchoring(chain, home, self.log_db())
            if self.icp_anchoring:
                from node.anchoring.icp import open_icp_publisher

                backoff = Backoff(chain.retry_base_seconds, chain.retry_max_seconds)
                anchoring.icp = open_icp_publisher(
                    self.settings.icp, home, self.log_db(), backoff=backoff
                )
            self._anchoring = anchoring
        return self._anchoring

    @property
    def icp_anchoring(self) -> bool:
        """Whether [icp] names a replica and an anchor canister to anchor in."""
        return bool(self.settings.icp.url and self.settings.icp.anchor_canister)

    @property
    def anchors_by_default(self) -> bool:
        """Whether a run anchors unless told: when `chain.rpc_url` or the [icp] anchor
        canister is configured."""
        return bool(self.settings.chain.rpc_url) or self.icp_anchoring

    @contextlib.contextmanager
    def anchoring_followers(self, enabled: bool = True) -> Iterator[None]:
        """The log's anchor followers, for as long as the block runs: the chain
        (`chain.rpc_url`, or the embedded EVM) and the ICP canister when configured follow
        the log's checkpoints; at the end the last checkpoint is fed and every target
        drained (`anchor_summary` for the chain, `anchor_summaries` for every target).
        Nothing happens when not `enabled`."""
        if not enabled:
            yield
            return
        from node.anchoring.followers import AnchorFollowers

        anchoring = self.anchoring()
        view = LogView(self.log_db())
        followers = AnchorFollowers(
            [anchoring.publisher, *([anchoring.icp] if anchoring.icp is not None else [])],
            lambda: [(c.log_id, c.tree_size, c.root_hash) for c in view.checkpoints()],
            poll_s=self.settings.chain.poll_seconds,
        )
        followers.start()
        try:
            yield
        finally:
            self.log().checkpoint()
            self.anchor_summaries = followers.drain()

    def run_campaign(
        self,
        campaign_ref: str,
        on_event: EventSink | None = None,
        stop: threading.Event | None = None,
        llm: LLMSetup | None = None,
    ) -> RunSummary:
        """Run a campaign; an llm campaign uses `llm`, or the [llm] settings. Its records
        are appended to the node's log; anchoring them is the process's anchor
        followers' job (`anchoring_followers`), never the run's."""
        campaign = self.store.get_campaign(campaign_ref)
        config = CampaignConfig.model_validate(campaign.config)
        section = self.settings.ray
        # On Ray the workers' GPUs count, not this machine's.
        gpus = (0,) * section.gpus_per_experiment if section.address else self.gpus()
        check_data(config, Path(self.settings.home), gpus=gpus)
        engineer = self.engineer()
        workers = self.settings.loop.workers
        if isinstance(engineer, RayEngineer):
            log_worker_evidence(self, engineer)
            threads = self.settings.loop.threads_per_worker
            workers = section.workers or engineer.capacity(threads)
        if llm is None and config.researcher == "llm":
            from node.campaign.llm_setup import LLMSetup

            llm = LLMSetup.from_settings(self.settings)
        recorder = Recorder(self.log(), self.store)
        recorder.campaign_start(campaign)
        loop = self.settings.loop
        runner = CampaignRunner(
            self.store,
            campaign,
            engineer,
            workers=workers,
            threads_per_worker=self.settings.loop.threads_per_worker,
            node_secret=self.heldout_secret(),
            on_event=on_event,
            stop=stop,
            llm=llm,
            recorder=recorder,
            lease=new_lease(self.log().node_id, loop.lease_seconds),
            lease_renew_s=loop.lease_renew_seconds,
        )
        reason = "crashed"
        try:
            summary = runner.run()
            reason = summary.reason
        finally:
            recorder.campaign_stop(campaign, reason)
        return summary


def open_node(home: Path | None = None, create: bool = False) -> Node:
    """Open the node at `home`; with `create`, initialise it first if it is new."""
    settings = load_settings(home)
    config = Path(settings.home) / "config.toml"
    if not config.exists():
        if not create:
            raise ConfigError(f"{settings.home} is not a node home yet: run `asi-node init` first")
        init_home(Path(settings.home))
        settings = load_settings(home)
        return Node(settings, Store.open(settings.database_url), created=True)
    return Node(settings, Store.open(settings.database_url))
