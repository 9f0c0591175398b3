"""The composition root: the gateway's parts, built once per app, in order,
each given what it needs; routes and sockets share them.

Nothing else builds services. The order has no cycle: the dispatcher's
doorbell exists before the services that ring it and the dispatcher that
waits on it, and the kubernetes executor's records are made from the same
services (so an imported CmbTask is stored, published and dispatched like
any other task).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .auth import Authenticator, RunnerTokens
from .catalog import EngineCatalog, parse_engines_json
from .connections import Connections
from .crypto import KeyBox
from .db.engine import make_engine, make_sessionmaker
from .db.transactions import make_transactions
from .dispatcher import Dispatcher
from .doorbell import Doorbell
from .executors import Executor, build_executor
from .executors.base import without_provider_keys
from .executors.k8s_records import Records
from .hub import Hub
from .limits import UserLimits
from .logs import get_logger
from .loop_errors import LoopErrors
from .metrics import Metrics
from .replica_relay import PgRelay
from .runner_sockets import RunnerRegistry
from .services.approvals import ApprovalService
from .services.ingest import RunnerIngest
from .services.keys import KeyService
from .services.sessions import SessionService
from .services.tasks import TaskService
from .services.user_settings import UserSettingsService
from .settings import Settings
from .store import EventStore

__all__ = ["Gateway"]

log = get_logger(__name__)


@dataclass
class Gateway:
    settings: Settings
    engine: AsyncEngine
    sessions_factory: async_sessionmaker[AsyncSession]
    metrics: Metrics
    hub: Hub
    registry: RunnerRegistry
    store: EventStore
    auth: Authenticator
    runner_tokens: RunnerTokens
    sessions: SessionService
    tasks: TaskService
    approvals: ApprovalService
    ingest: RunnerIngest
    executor: Executor
    dispatcher: Dispatcher
    doorbell: Doorbell
    engines: EngineCatalog
    connections: Connections
    records: Records
    keys: KeyService
    user_settings: UserSettingsService
    relay: PgRelay | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, executor: Executor | None = None) -> Gateway:
        engine = make_engine(settings.resolved_database_url)
        factory = make_sessionmaker(engine)
        metrics = Metrics()
        hub = Hub(settings.client_queue_size, metrics)
        relay = None if settings.is_sqlite else PgRelay(settings.resolved_database_url, hub)
        transactions = make_transactions(settings.resolved_database_url, engine)
        store = EventStore(factory, hub, metrics, transactions, single_writer=settings.is_sqlite, relay=relay)
        registry = RunnerRegistry()
        doorbell = Doorbell()
        catalog = EngineCatalog(parse_engines_json(settings.engines_json) if settings.engines_json else None)
        limits = UserLimits(settings, factory)
        sessions = SessionService(factory, limits)
        tasks = TaskService(factory, store, registry, doorbell.ring, catalog=catalog, limits=limits)
        approvals = ApprovalService(factory, store, registry)
        records = Records(factory, sessions, tasks, approvals)
        tokens = RunnerTokens(settings.runner_secret(), settings.runner_token_ttl_s)
        chosen = executor or build_executor(settings, records)
        keys = KeyService(factory, KeyBox(settings.runner_secret()), fallback=settings.provider_keys_fallback)
        dispatcher = Dispatcher(settings, chosen, tasks, tokens, registry, doorbell, keys)
        tasks.stop_runners_with(dispatcher.stop_soon)
        auth = Authenticator(settings, factory)
        return cls(
            settings=settings,
            engine=engine,
            sessions_factory=factory,
            metrics=metrics,
            hub=hub,
            registry=registry,
            store=store,
            auth=auth,
            runner_tokens=tokens,
            sessions=sessions,
            tasks=tasks,
            approvals=approvals,
            ingest=RunnerIngest(factory, store, settings.approval_timeout_s, doorbell.ring),
            executor=chosen,
            dispatcher=dispatcher,
            doorbell=doorbell,
            engines=catalog,
            connections=Connections(settings, factory, auth),
            records=records,
            relay=relay,
            keys=keys,
            user_settings=UserSettingsService(factory),
        )

    async def start(self) -> None:
        if self.relay is not None:
            await self.relay.start()
        self._describe_engines()
        await self.executor.start()
        await self.dispatcher.adopt()
        self.background = [
            asyncio.create_task(self.dispatcher.run(), name="dispatcher"),
            asyncio.create_task(self._sweep(), name="sweeper"),
            asyncio.create_task(self.connections.run(), name="token-checker"),
        ]

    def _describe_engines(self) -> None:
        """Ask the local runner command what it can run (in the background)."""
        settings = self.settings
        if settings.engines_json or self.executor.name != "local":
            return
        # The environment a runner gets: the gateway's own settings are not its
        # business, nor its provider keys unless the admin lets them fall back.
        env = {key: value for key, value in os.environ.items() if not key.startswith("CMBTASK_")}
        if not settings.provider_keys_fallback:
            env = without_provider_keys(env)
        self.engines.start_probe(
            settings.runner_command,
            env,
            settings.describe_engines_timeout_s,
            refresh_s=settings.describe_engines_refresh_s,
        )

    async def _sweep(self) -> None:
        errors = LoopErrors("sweeper.error")
        while True:
            await asyncio.sleep(self.settings.approval_sweep_interval_s)
            try:
                if expired := await self.approvals.expire_due():
                    log.info("approvals.expired", count=expired)
                await self.sessions.expire_due()
                errors.succeeded()
            except Exception as error:
                errors.failed(error)

    async def stop(self) -> None:
        for task in self.background:
            task.cancel()
        for task in self.background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.engines.close()
        await self.connections.close()
        await self.ingest.close()
        if self.relay is not None:
            await self.relay.close()
        await self.executor.close()
        await self.store.close()
        await self.engine.dispose()
