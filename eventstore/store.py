"""EventStore: the facade an application holds.

    async with EventStore.open("sqlite:///audit.db", redact=[hook]) as store:
        rec = await store.append(Event(type="message_sent", ...))

Each method checks its arguments, builds one `Query`, and hands the work to the part that
owns it: the `WritePipeline` (validate, redact, encrypt, encode; reveal on the way out),
the `GroupCommitWriter`, the `LogReader`, the `CostLedger`, the projection runner and the
subscriptions. The store owns one anyio task group (hosted by a runner task, so the store
can be opened and closed from different tasks): the writer, the async-signal pump, the
guardian and every subscription run in it, and closing the store stops them all.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import anyio
from anyio.abc import TaskGroup

from . import prompts, signals
from .backends import backend_for_url
from .backends.base import Backend
from .backends.protocols import CommitListener
from .budgets import Budget, BudgetStatus, BudgetWatcher, check_budgets
from .calls import CallRecorder, LLMCall, Metrics, compute_metrics, read_calls
from .clock import utcnow
from .codec import PreparedEvent
from .cursor import CursorCodec
from .errors import (
    DuplicateEventError,
    EventStoreError,
    InvalidCallError,
    InvalidEventError,
    InvalidOptionError,
    RetentionError,
    StoreClosedError,
    SubscriptionError,
)
from .events import Event, RecordedEvent
from .feedback import feedback_event, find_last_call
from .integrity.auditor import Auditor, CheckpointSink
from .integrity.keys import SigningKeyInput
from .integrity.types import ConsistencyProof, InclusionProof, TreeHead, VerifyReport
from .operations import instrumented, send_span, send_start
from .pipeline import WritePipeline
from .pricing.ledger import CostLedger
from .privacy.hooks import RedactHook
from .projections import runner
from .prompts import Prompt
from .query import build_query, check_seq, check_time
from .reads import READ_BATCH, LogReader, Page
from .rollup import CostFilters
from .scope import (
    ConversationScope,
    TraceScope,
    check_store_metadata,
    merge_metadata,
    note_call,
    scoped,
)
from .subscription_host import StoreHost
from .subscriptions import Guardian, Handler, Registry, Subscription
from .subscriptions.subscription import DEFAULT_HANDLER_TIMEOUT, DEFAULT_STOP_TIMEOUT
from .writer import GroupCommitWriter

if TYPE_CHECKING:
    from pathlib import Path

    from .pricing import PricingProvider
    from .privacy.encryption import Encryption
    from .privacy.retention import Retention, RetentionReport
    from .projections.base import Projection

    P = TypeVar("P", bound=Projection)

__all__ = ["EventStore", "Page"]

log = logging.getLogger("eventstore")

DEFAULT_PAGE = 100

# Set in the store's own tasks (writer, pump, guardian, subscriptions and what they start):
# close() called from there must not wait for those tasks to end.
_INSIDE: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "eventstore_inside", default=None)


class EventStore:
    """An append-only log of AI-application events, with its readers, subscriptions,
    projections and cost questions.

    Open one with `EventStore.open(url, ...)` and use it as an async context manager
    (or `await store.start()` / `await store.close()`). Every method is safe to call from
    many tasks at once: concurrent appends share transactions (group commit), each caller
    getting its own result or its own error.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        redact: Sequence[RedactHook] = (),
        cursor_secret: bytes | None = None,
        max_group: int = 5_000,
        guardian_interval: float = 30.0,
        pricing: PricingProvider | None = None,
        encryption: Encryption | None = None,
        retention: Retention | None = None,
        url: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        receiver_timeout: float | None = signals.DEFAULT_RECEIVER_TIMEOUT,
        signing_key: SigningKeyInput | None = None,
        origin: str | None = None,
        checkpoint_dir: CheckpointSink | None = None,
        checkpoint_every: int | None = None,
        checkpoint_interval: float | None = None,
        budgets: Sequence[Budget] = (),
    ) -> None:
        self.backend = backend
        self.url = url
        self.dispatcher = signals.Dispatcher(timeout=receiver_timeout)
        self.encryption = encryption
        if retention is not None and encryption is None:
            raise RetentionError(
                "retention= needs encryption=Encryption(...): content is expired by "
                "destroying the keys it is encrypted with"
            )
        self.retention = retention
        self.metadata = check_store_metadata(metadata)
        self.pipeline = WritePipeline(backend, redact, encryption, self.metadata)
        self._cursor_secret = cursor_secret
        self._reader = LogReader(backend, self.pipeline)
        self._ledger = CostLedger(self._reader, self.append, pricing, backend=backend)
        self._calls = CallRecorder(self._reader, self.append_many, lambda: self._ledger.pricing,
                                   self.pipeline)
        self._writer = GroupCommitWriter(backend, self._after_commit, max_group=max_group)
        self._runner: asyncio.Task[None] | None = None
        self._task_group: TaskGroup | None = None
        self._subscription_tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._writer_done = asyncio.Event()
        self._open = False
        self._closing: asyncio.Task[None] | None = None
        self._host = StoreHost(self, dispatcher=self.dispatcher, backend=backend,
                               writer=self._writer, reader=self._reader,
                               pipeline=self.pipeline, spawn=self._spawn_subscription)
        self.dispatcher.reveal_live = self.pipeline.reveal_live
        self._budgets = BudgetWatcher(self, budgets)
        self._registry = Registry(self._host)
        self.guardian = Guardian(self._host, self._registry, interval=guardian_interval,
                                 check_listener=backend.check_listener
                                 if isinstance(backend, CommitListener) else None)
        self._auditor = Auditor(url=url, origin=origin, signing_key=signing_key,
                                checkpoint_dir=checkpoint_dir,
                                checkpoint_every=checkpoint_every,
                                checkpoint_interval=checkpoint_interval)
        self._auditor.on_written = self._checkpoint_written

    @classmethod
    def open(cls, url: str, *, redact: Sequence[RedactHook] = (), **options: Any) -> EventStore:
        """A store for `url`; use it as `async with EventStore.open(url) as store:`.

        URLs: `memory://` (private) or `memory://name` (shared in this process),
        `sqlite:///relative.db`, `sqlite:////absolute.db`, `jsonl:///relative/dir`,
        `jsonl:////absolute/dir`, `postgresql://user@host:port/db`.

        Store options:
        - `redact`: redact hooks, run in order on every event before anything is written;
          a hook that raises fails the append (RedactionError) and writes nothing.
        - `cursor_secret`: bytes keying cursors, so cursors made by one store are accepted
          by another on the same log (default: a secret kept in the database).
        - `max_group`: the most events committed in one transaction (group commit).
        - `guardian_interval`: seconds between the guardian's checks of subscriptions.
        - `pricing`: a PricingProvider for record_cost (default: the genai-prices dataset).
        - `encryption`: an Encryption, so personal fields are encrypted per user and
          `forget_user` can erase them. A store once opened with it refuses appends
          without it (reads then show `[ENCRYPTED]`).
        - `retention`: a Retention, so personal fields are keyed per user and period and
          `apply_retention` erases the periods older than `content_after`.
        - `metadata`: a dict added to the metadata of every event of this store (the
          event's own keys win; `tags` add up), e.g. `{"service": "api", "env": "prod"}`.
        - `signing_key`: an Ed25519 private key (raw 32 bytes, PEM, or an
          Ed25519PrivateKey; default: the EVENTSTORE_SIGNING_KEY environment variable)
          that signs checkpoints as C2SP signed notes.
        - `origin`: the log's name in its checkpoints, kept in the log by the first store
          that opens it (default: derived from the URL); later stores use it, and one
          giving another origin= is refused with IntegrityError.
        - `checkpoint_dir`: a directory (or a callable taking the checkpoint text) that
          gets a checkpoint every `checkpoint_every` events (1000) or
          `checkpoint_interval` seconds (60), and at close; keep it where the database's
          owner cannot rewrite it (see eventstore.integrity.auditor).
        - `receiver_timeout`: seconds an async signal receiver may take per delivery
          before it is abandoned (default 30; None: no limit).
        - `budgets`: a list of `Budget`s; each alerts once per scope, window and threshold
          (see eventstore.budgets), and `check_budget` / `budget_status` answer for them.

        Backend options (also accepted in the URL's query string):
        - SQLite: `synchronous` ("normal" or "full"), `busy_timeout` (ms), `create`
          (False: refuse to create a missing file), `watch_interval` (seconds between checks
          for other processes' commits, which wake subscriptions).
        - jsonl: `synchronous`, `lock_timeout` (seconds), `create`, `watch_interval`, and
          `clock` (a function returning the UTC time, which picks the day file).
        - PostgreSQL: `schema`, `pool_size`, `min_pool_size`, `command_timeout`,
          `connect_timeout`, `create` (False: refuse a schema that holds no store); other
          query options go to asyncpg.
        """
        store_options = {k: options.pop(k) for k in
                         ("cursor_secret", "max_group", "guardian_interval", "pricing",
                          "encryption", "metadata", "receiver_timeout", "retention",
                          "signing_key", "origin", "checkpoint_dir", "checkpoint_every",
                          "checkpoint_interval", "budgets")
                         if k in options}
        backend = backend_for_url(url, **options)
        return cls(backend, redact=redact, url=url, **store_options)

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> Self:
        """Open the backend (creating or migrating its schema) and start the store's tasks;
        `async with store:` calls it. Starting an open store does nothing."""
        if self._open:
            return self
        await self.backend.open()
        try:
            if self.encryption is not None:
                period = self.retention.period if self.retention is not None else None
                await self.encryption.bind(self.backend, period=period)
            else:
                await self.pipeline.check_sealed()
            self._reader.use_cursors(
                CursorCodec(self._cursor_secret or await self.backend.secret()))
            await self._auditor.start(self.backend)
            started = asyncio.Event()
            self._runner = asyncio.create_task(self._run(started), name="eventstore-runner")
            waiter = asyncio.ensure_future(started.wait())
            await asyncio.wait({waiter, self._runner}, return_when=asyncio.FIRST_COMPLETED)
            if not started.is_set():
                waiter.cancel()
                await self._runner  # re-raises what stopped it
            self._registry.start()
        except BaseException:
            await self.backend.close()
            raise
        self._open = True
        if isinstance(self.backend, CommitListener):  # others' commits wake subscriptions
            try:
                await self.backend.listen(self._registry.note_head)
            except BaseException:
                await self.close()
                raise
        try:
            await self._budgets.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def _run(self, started: asyncio.Event) -> None:
        _INSIDE.set(id(self))
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            tg.start_soon(self._run_writer)
            tg.start_soon(self.dispatcher.pump)
            tg.start_soon(self.guardian.run)
            tg.start_soon(self._registry.run)
            if self._auditor.sink is not None:
                tg.start_soon(self._auditor.run)
            started.set()
            await self._stop.wait()
            tg.cancel_scope.cancel()

    async def _run_writer(self) -> None:
        try:
            await self._writer.run()
        finally:
            self._writer_done.set()

    def spawn(self, func: Any, *args: Any, name: str | None = None) -> None:
        """Run a background task in the store's task group (stopped when the store closes)."""
        if self._task_group is None:
            raise StoreClosedError("the store is not open")
        self._task_group.start_soon(self._inside, func, args, name=name)

    def _spawn_subscription(self, func: Any, *, name: str | None = None) -> None:
        # Outside the task group: close() must be able to abandon a subscription whose
        # handler ignores its cancellation (Subscription.stop), and a task group would
        # wait for it forever. Subscriptions are stopped before the store closes.
        if self._runner is None or self._runner.done():
            raise StoreClosedError("the store is not open")
        task = asyncio.get_running_loop().create_task(self._inside(func, ()), name=name)
        self._subscription_tasks.add(task)  # the loop holds tasks only weakly
        task.add_done_callback(self._subscription_tasks.discard)

    async def _inside(self, func: Any, args: tuple[Any, ...]) -> None:
        # A task started here copies the context of whoever called spawn(), not the
        # runner's: mark it as one of ours.
        _INSIDE.set(id(self))
        await func(*args)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the store runs on (its writer and connections live there)."""
        if self._runner is None:
            raise StoreClosedError("the store was never opened")
        return self._runner.get_loop()

    async def close(self) -> None:
        """Stop subscriptions and the guardian, commit what is queued, release the backend.

        Called from inside a subscription handler or a signal receiver of this store, it
        starts the close and returns at once: the close waits for those very tasks.
        """
        if self._closing is None:
            if not self._open:
                return
            self._closing = asyncio.create_task(self._close(), name="eventstore-close")
        if _INSIDE.get() == id(self):
            return
        # Shielded: a caller cancelled meanwhile leaves the close to finish on its own.
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        try:
            await self._shut_down()
        finally:
            self._closing = None

    async def _shut_down(self) -> None:
        await self._registry.stop_all()
        self._open = False
        await self._registry.stop_all()  # any subscribed while the first ones stopped
        self._writer.close()
        await self._writer_done.wait()
        try:  # the events committed since the last checkpoint get one too
            await self._auditor.write()
        except Exception:
            log.exception("writing the closing checkpoint failed")
        await self.dispatcher.drain()
        self._stop.set()
        if self._runner is not None:
            await self._runner
        self.dispatcher.discard()
        self._registry.disconnect()
        if isinstance(self.backend, CommitListener):  # a shared log outlives this store
            self.backend.unlisten(self._registry.note_head)
        await self.backend.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_open(self) -> LogReader:
        if not self._open:
            raise StoreClosedError(
                "the store is not open; use `async with EventStore.open(url) as store:`"
            )
        return self._reader

    @property
    def _costs(self) -> CostLedger:
        self._check_open()
        return self._ledger

    # --- appends -----------------------------------------------------------------------

    @instrumented("append")
    async def append(self, event: Event) -> RecordedEvent:
        """Append one event; an id already stored with the same content returns that event."""
        self._check_open()
        prepared = [await self.pipeline.prepare(event)]
        (recorded,) = self.pipeline.returned(prepared, await self._commit(prepared))
        return recorded

    @instrumented("append_many")
    async def append_many(self, events: Iterable[Event]) -> list[RecordedEvent]:
        """Append several events atomically: all are written, or none is."""
        self._check_open()
        if isinstance(events, Event) or not isinstance(events, Iterable):
            raise InvalidEventError("append_many() takes a list of Events")
        prepared = await self.pipeline.prepare_many(list(events))
        if not prepared:
            return []
        return self.pipeline.returned(prepared, await self._commit(prepared))

    async def _commit(self, prepared: list[PreparedEvent]) -> list[RecordedEvent]:
        try:
            return await self._writer.submit(prepared)
        except DuplicateEventError as exc:
            raise await self.pipeline.explain_duplicate(exc, prepared) from None

    async def append_audit(self, event: Event) -> RecordedEvent:
        """Append an event the store writes about itself (user_forgotten,
        retention_applied): validated, but never redacted nor encrypted, so no hook can
        refuse the record and no key destruction can erase it."""
        self._check_open()
        prepared = [await self.pipeline.prepare(event, audit=True)]
        (recorded,) = await self._commit(prepared)
        return recorded

    @instrumented("forget_user")
    async def forget_user(self, user_id: str) -> RecordedEvent:
        """Erase a user's personal fields from every read by destroying their data keys
        (crypto-shredding, see eventstore.encryption), rebuild the live projections and
        drop stored snapshots (which may hold decrypted fields), scrub the backend, and log
        it as a `user_forgotten` event naming the user id (as its user_id column does).
        Seq, types, times, token counts and costs of their events stay. Needs a store
        opened with encryption=. When another process's reader keeps the old bytes on
        disk, the event's data says so under "pending" and an ErasurePendingWarning is
        raised; the store finishes the scrub by itself."""
        self._check_open()
        if self.encryption is None:
            raise EventStoreError(
                "forget_user() needs a store opened with encryption=Encryption(...): without "
                "it personal fields are stored in plaintext and cannot be erased"
            )
        from .privacy.erasure import forget_user

        return await forget_user(self, user_id)

    @instrumented("apply_retention")
    async def apply_retention(self, *, dry_run: bool = False,
                              now: datetime | None = None) -> RetentionReport:
        """Erase the personal fields of every key period that ended more than
        `retention.content_after` ago (see eventstore.privacy.retention); with dry_run,
        only say what would be erased. Needs a store opened with retention=."""
        self._check_open()
        if self.retention is None:
            raise RetentionError(
                "apply_retention() needs a store opened with retention=Retention("
                "content_after=timedelta(days=...)) and encryption="
            )
        from .privacy.retention import apply_retention

        return await apply_retention(self, self.retention, dry_run=dry_run, now=now)

    async def track(
        self,
        type: str,
        data: dict[str, Any] | None = None,
        *,
        conversation_id: str | None = None,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        occurred_at: datetime | None = None,
    ) -> RecordedEvent:
        """Append a custom (or built-in) event from its parts."""
        fields: dict[str, Any] = {}
        if occurred_at is not None:
            fields["occurred_at"] = occurred_at
        return await self.append(
            Event(type=type, data=data if data is not None else {},
                  conversation_id=conversation_id, user_id=user_id,
                  metadata=metadata if metadata is not None else {}, **fields)
        )

    def conversation(
        self, conversation_id: str, user_id: str | None = None, *,
        tags: Iterable[str] = (), **metadata: Any
    ) -> ConversationScope:
        """Attribute the LLM calls made inside `with` / `async with` to a conversation.

        Instrumented clients (eventstore.integrations), record_cost and feedback use these
        ids when they were given none of their own; `metadata` and `tags` are added to the
        events they record. The scope is a ContextVar: it follows tasks and
        `asyncio.to_thread`, never leaks across requests. `await scope.thumbs_up()`,
        `thumbs_down()` and `feedback(text)` rate the conversation's last call.
        """
        return ConversationScope(conversation_id, user_id, store=self, tags=tags, **metadata)

    def set_metadata(self, **metadata: Any) -> None:
        """Add metadata to every event this store appends from now on (AITracer's global
        set_metadata; `EventStore.open(url, metadata=...)` sets it from the start)."""
        self.pipeline.add_metadata(check_store_metadata(metadata))
        self.metadata = merge_metadata(self.metadata, metadata)

    def trace(self, trace_id: str, *, tags: Iterable[str] = (), **metadata: Any) -> TraceScope:
        """A run: every call recorded inside `with` / `async with` carries `trace_id` and
        its parent step (`scope.step(name)` opens one); `RunSummaries` sums runs up."""
        return TraceScope(trace_id, tags=tags, **metadata)

    @instrumented("feedback")
    async def feedback(
        self,
        rating: float | None = None,
        comment: str | None = None,
        *,
        call_id: str | None = None,
        conversation_id: str | None = None,
        user_id: str | None = None,
    ) -> RecordedEvent:
        """Append a `user_feedback` event rating a call (`call_id`: the id of its
        `llm_call` event) with a number, a comment or both. Ids default to the scope's."""
        self._check_open()
        conversation_id, user_id, metadata = scoped(conversation_id, user_id, None)
        return await self.append(feedback_event(
            rating, comment, call_id=call_id, conversation_id=conversation_id,
            user_id=user_id, metadata=metadata))

    async def last_call_id(self, conversation_id: str) -> str | None:
        """The call id of the conversation's last recorded call (None if it has none)."""
        self._check_open()
        return await find_last_call(self, conversation_id)

    # --- prompts -----------------------------------------------------------------------

    @instrumented("register_prompt")
    async def register_prompt(
        self, name: str, version: str, *, user: str, system: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Prompt:
        """Register a prompt version (once: versions never change; the same content again
        is a no-op, other content a PromptConflictError)."""
        self._check_open()
        return await prompts.register_prompt(self, name, version, user=user, system=system,
                                             metadata=metadata)

    @instrumented("activate_prompt")
    async def activate_prompt(self, name: str, version: str) -> Prompt:
        """Make a registered version the one `prompt(name)` returns."""
        self._check_open()
        return await prompts.activate_prompt(self, name, version)

    @instrumented("prompt")
    async def prompt(self, name: str, version: str | None = None) -> Prompt:
        """A registered prompt version (default: the active one); PromptNotFoundError if
        there is none. `with prompt.scope():` attributes the calls inside to it."""
        self._check_open()
        return await prompts.get_prompt(self, name, version)

    async def _after_commit(self, committed: list[RecordedEvent]) -> None:
        self._auditor.committed(len(committed))
        self.dispatcher.send_each(signals.event_appended, self, "event",
                                  await self.pipeline.reveal_live(committed))

    # --- reads -------------------------------------------------------------------------

    @instrumented("list_events")
    async def list_events(
        self,
        *,
        conversation_id: str | None = None,
        user_id: str | None = None,
        type: str | Iterable[str] | None = None,
        after: datetime | None = None,
        before: datetime | None = None,
        limit: int = DEFAULT_PAGE,
        cursor: str | None = None,
    ) -> Page:
        """One page of matching events in seq order; pass `page.next_cursor` for the next."""
        reader = self._check_open()
        query = build_query(conversation_id=conversation_id, user_id=user_id, type=type,
                            after=after, before=before)
        return await reader.page(query, limit, cursor)

    @instrumented("count_events")
    async def count_events(
        self,
        *,
        conversation_id: str | None = None,
        user_id: str | None = None,
        type: str | Iterable[str] | None = None,
        after: datetime | None = None,
        before: datetime | None = None,
    ) -> int:
        """How many events match the filters (those of `list_events`)."""
        reader = self._check_open()
        query = build_query(conversation_id=conversation_id, user_id=user_id, type=type,
                            after=after, before=before)
        return await reader.count(query)

    async def head(self) -> int:
        """The seq of the last committed event (0 for an empty log)."""
        return await self._check_open().head()

    async def read(
        self,
        from_seq: int = 0,
        *,
        type: str | Iterable[str] | None = None,
        conversation_id: str | None = None,
        user_id: str | None = None,
        after: datetime | None = None,
        before: datetime | None = None,
        batch_size: int = READ_BATCH,
    ) -> AsyncIterator[RecordedEvent]:
        """Every event with seq >= from_seq (optionally filtered as in list_events), in
        order, paged inside. The next page is fetched while the current one is consumed.
        """
        reader = self._check_open()
        check_seq("from_seq", from_seq)
        query = build_query(conversation_id=conversation_id, user_id=user_id, type=type,
                            after=after, before=before)
        started = send_start(self, "read")
        error: BaseException | None = None
        try:
            async for event in reader.read(query, from_seq, batch_size):
                yield event
        except BaseException as exc:
            error = exc
            raise
        finally:
            send_span(self, "read", started, error)

    # --- subscriptions -----------------------------------------------------------------

    @property
    def subscriptions(self) -> list[Subscription]:
        """The subscriptions running in this store (failed ones too, until stopped)."""
        return self._registry.subscriptions

    @instrumented("subscribe")
    async def subscribe(
        self,
        handler: Handler,
        *,
        name: str | None = None,
        types: str | Iterable[str] | None = None,
        conversation_id: str | None = None,
        user_id: str | None = None,
        from_seq: int = 0,
        max_attempts: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        queue_size: int = 10_000,
        checkpoint_every: int = 100,
        checkpoint_interval: float = 1.0,
        handler_timeout: float | None = DEFAULT_HANDLER_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        threaded: bool = False,
    ) -> Subscription:
        """Call `handler(event)` for every matching event, in seq order, at least once.

        With a `name` the subscription is durable: it resumes after its stored checkpoint
        (ignoring `from_seq`), in this process or another. Without one it starts at
        `from_seq` (default: the beginning of the log) and keeps no checkpoint.
        A handler call that takes longer than `handler_timeout` seconds (None: no limit)
        is cancelled and counts as a failed attempt, as does anything it raises; after
        `max_attempts` the subscription is marked failed. A sync handler runs on the event
        loop (cheap; it must not block), or with `threaded=True` in a worker thread (it may
        block; appends go on meanwhile, and past `handler_timeout` it shows as stalled).
        `stop()` and `close()` wait at most `stop_timeout` seconds for the handler call in
        progress, then abandon it (see Subscription.stop). Use it as
        `async with await store.subscribe(...) as sub:` to stop it on the way out, and
        `await sub.caught_up()` to wait until it has handled everything committed so far.
        """
        self._check_open()
        if not callable(handler):
            raise SubscriptionError("subscribe() needs a callable handler(event)")
        if name is not None and not (isinstance(name, str) and name):
            raise SubscriptionError("a subscription name must be a non-empty string")
        if max_attempts < 1 or queue_size < 1 or checkpoint_every < 1:
            raise SubscriptionError("max_attempts, queue_size and checkpoint_every must be >= 1")
        if handler_timeout is not None and (isinstance(handler_timeout, bool) or not (
                isinstance(handler_timeout, int | float) and handler_timeout > 0)):
            raise InvalidOptionError(
                f"handler_timeout must be a positive number of seconds or None, not "
                f"{handler_timeout!r}")
        if isinstance(stop_timeout, bool) or not (
                isinstance(stop_timeout, int | float) and 0 < stop_timeout < math.inf):
            raise InvalidOptionError(
                f"stop_timeout must be a positive, finite number of seconds, not "
                f"{stop_timeout!r}")
        check_seq("from_seq", from_seq)
        query = build_query(type=types, conversation_id=conversation_id, user_id=user_id)
        self._registry.check_name_free(name)
        position = max(from_seq - 1, 0)
        if name is not None:
            checkpoint = await self.backend.load_checkpoint(name)
            if checkpoint is not None:
                position = checkpoint.position
        return self._registry.launch(Subscription(
            self._host, self._registry, handler, name=name, query=query, position=position,
            max_attempts=max_attempts, backoff=backoff, max_backoff=max_backoff,
            queue_size=queue_size, checkpoint_every=checkpoint_every,
            checkpoint_interval=checkpoint_interval, handler_timeout=handler_timeout,
            stop_timeout=stop_timeout, threaded=bool(threaded),
        ))

    # --- projections -------------------------------------------------------------------

    @instrumented("rebuild")
    async def rebuild(self, projection: P, *more: Projection) -> P:
        """Reset the projections and replay the log into them from seq 0, in one pass.

        Sends `rebuild_progress` every PROGRESS_EVERY events (and once at the end).
        Returns the first projection.
        """
        reader = self._check_open()

        def progress(position: int, head: int) -> None:
            self.dispatcher.send(signals.rebuild_progress, self, projection=projection,
                                 position=position, head=head)

        await runner.rebuild(reader, (projection, *more), progress)
        return projection

    @instrumented("project")
    async def project(
        self,
        projection: Projection,
        *,
        name: str | None = None,
        snapshot_every: int = 10_000,
        snapshot_interval: float = 5.0,
        max_attempts: int = 5,
    ) -> Subscription:
        """Keep `projection` live through a durable subscription.

        Its checkpoint carries a snapshot of the projection's state, saved every
        `snapshot_every` events, after `snapshot_interval` idle seconds and on stop, so a
        restart resumes from the snapshot instead of replaying the log. A snapshot of
        another projection version (or a corrupt one) is discarded: the projection is
        rebuilt from seq 0.
        """
        self._check_open()
        key = name or f"projection:{projection.name}"
        self._registry.check_name_free(key)
        encryption = self.encryption
        snapshot = projection.snapshot
        if encryption is not None:  # snapshots hold decrypted fields: store them sealed
            await encryption.load_snapshot_key()

            def snapshot() -> bytes:
                return encryption.seal_snapshot(projection.snapshot())

        position = await runner.resume(projection, self.backend, key,
                                       encryption.open_snapshot if encryption else None)
        types = runner.types_of(projection)
        return self._registry.launch(Subscription(
            self._host, self._registry, projection.apply_event, name=key, query=types,
            position=position,
            max_attempts=max_attempts, checkpoint_every=snapshot_every,
            checkpoint_interval=snapshot_interval, snapshot=snapshot,
            reset=projection.reset,
        ))

    # --- costs -------------------------------------------------------------------------

    @property
    def pricing(self) -> PricingProvider:
        """The PricingProvider record_cost uses (default: the genai-prices dataset)."""
        return self._ledger.pricing

    @instrumented("record_cost")
    async def record_cost(
        self,
        *,
        provider: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        conversation_id: str | None = None,
        user_id: str | None = None,
        latency_ms: float | None = None,
        metadata: dict[str, Any] | None = None,
        pricing: PricingProvider | None = None,
        occurred_at: datetime | None = None,
        cost: Decimal | None = None,
    ) -> RecordedEvent:
        """Price an LLM call and append it as a `cost_recorded` event.

        `input_tokens` is the whole input, cached tokens included (OpenTelemetry's
        convention; for Anthropic add cache_read and cache_creation input tokens). An
        unknown model raises UnknownModelError and records nothing: never a $0 row.
        `cost=Decimal(...)` records a cost the provider reported instead of pricing the
        tokens (`price_source` "provider"). For whole calls use `record_llm_call`.
        Inside a conversation(), trace() or prompt scope the call takes the scope's ids
        (unless given) and metadata.
        """
        conversation_id, user_id, scoped_metadata = scoped(conversation_id, user_id, metadata)
        recorded = await self._costs.record_cost(
            pricing=pricing, occurred_at=occurred_at, cost=cost, conversation_id=conversation_id,
            user_id=user_id, provider=provider, model=model, input_tokens=input_tokens,
            output_tokens=output_tokens, cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens, latency_ms=latency_ms,
            metadata=scoped_metadata,
        )
        note_call(recorded)
        return recorded

    @instrumented("sum_cost")
    async def sum_cost(
        self,
        *,
        conversation_id: str | None = None,
        user_id: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        tag: str | None = None,
        after: datetime | None = None,
        before: datetime | None = None,
    ) -> Decimal:
        """The exact total cost of the matching priced model calls (filters combine with
        AND; `after` / `before` bound the calls' occurred_at; `tag` one of their
        metadata["tags"]). Unpriced calls are left out, never counted as $0."""
        filters = CostFilters(conversation_id=conversation_id, user_id=user_id,
                              provider=provider, model=model, tag=tag,
                              after=check_time("after", after),
                              before=check_time("before", before))
        return await self._costs.sum_cost(filters)

    @instrumented("get_cost_records")
    async def get_cost_records(
        self,
        conversation_id: str | None = None,
        *,
        user_id: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        after: datetime | None = None,
        before: datetime | None = None,
        tag: str | None = None,
    ) -> list[RecordedEvent]:
        """The cost_recorded events of a conversation (or matching the filters), in order."""
        query = build_query(conversation_id=conversation_id, user_id=user_id,
                            after=after, before=before)
        return await self._costs.cost_records(query, provider, model, tag)

    # --- model calls -------------------------------------------------------------------

    @instrumented("record_llm_call")
    async def record_llm_call(
        self,
        *,
        provider: str,
        model: str | None,
        request: Mapping[str, Any],
        response: Mapping[str, Any] | None,
        latency_ms: float | None,
        error: BaseException | Mapping[str, Any] | None = None,
        conversation_id: str | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        occurred_at: datetime | None = None,
        api: str | None = None,
        stream: bool = False,
        time_to_first_token_ms: float | None = None,
        attempts: int | None = None,
        price_context: Mapping[str, str] | None = None,
        incomplete: bool = False,
        record_messages: bool = True,
    ) -> RecordedEvent:
        """Record one model call whole and priced; returns its `llm_call` event, whose id
        is the call id (what `feedback(call_id=...)` takes).

        `request` / `response` are the provider's request and response bodies as dicts
        (SDK objects are dumped as the API writes them); `error` is None, an exception or
        a dict with `type`, `message` and optionally `status_code`, `request_id`. Each
        message is stored once per conversation and referenced by later calls; the cost
        is genai-prices' for the whole usage and price context on the call's date, and a
        call with no known price is recorded *unpriced* with all its usage.

        `api` names the flavour (chat, responses, messages, gemini; detected from the
        bodies when None); `stream`, `time_to_first_token_ms`, `attempts` (HTTP tries,
        retries included) and `incomplete` (a stream cut short) describe the call;
        `price_context` adds genai-prices price-variant keys (e.g. {"processing":
        "batch"}) to those read from the bodies (the service tier served);
        `record_messages=False` keeps messages and reply content out of the log. A
        malformed call raises InvalidCallError and writes nothing.
        """
        self._check_open()
        recorded = await self._calls.record(
            provider=provider, model=model, request=request, response=response,
            latency_ms=latency_ms, error=error, conversation_id=conversation_id,
            user_id=user_id, metadata=metadata, occurred_at=occurred_at, api=api,
            stream=stream, time_to_first_token_ms=time_to_first_token_ms, attempts=attempts,
            price_context=price_context, incomplete=incomplete,
            record_messages=record_messages)
        note_call(recorded)  # what the conversation scope's thumbs_up() rates
        return recorded

    @instrumented("record_llm_calls")
    async def record_llm_calls(self, calls: Sequence[Mapping[str, Any]]) -> list[RecordedEvent]:
        """Record several model calls in one append, all or nothing: each item holds the
        keyword arguments of `record_llm_call` (provider, model, request, response,
        latency_ms, ...). Returns their `llm_call` events in order. Calls of one
        conversation are recorded in the order given (each references the messages the
        earlier ones stored). A malformed call raises InvalidCallError and nothing is
        written; so does any failure of the append, for every call of the batch."""
        self._check_open()
        items = None if isinstance(calls, Mapping | str) else list(calls)
        if items is None or not all(isinstance(c, Mapping) for c in items):
            raise InvalidCallError("record_llm_calls() takes a list of dicts, each holding "
                                   "the keyword arguments of record_llm_call")
        recorded = await self._calls.record_many(items)
        if recorded:
            note_call(recorded[-1])
        return recorded

    @instrumented("calls")
    async def calls(
        self,
        *,
        conversation_id: str | None = None,
        user_id: str | None = None,
        after: datetime | None = None,
        before: datetime | None = None,
    ) -> list[LLMCall]:
        """The recorded model calls, in order, each with the exact request that was sent
        (rebuilt from the messages it references) and what came back."""
        reader = self._check_open()
        query = build_query(conversation_id=conversation_id, user_id=user_id,
                            after=after, before=before)
        return await read_calls(reader, query)

    @instrumented("metrics")
    async def metrics(
        self,
        *,
        conversation_id: str | None = None,
        user_id: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        tag: str | None = None,
        after: datetime | None = None,
        before: datetime | None = None,
    ) -> Metrics:
        """Calls, errors, exact total cost, unpriced calls, tokens by kind and latency
        (average, nearest-rank p50 / p95) of the matching model calls; `after` / `before`
        bound the calls' time (occurred_at), `tag` matches `metadata["tags"]`."""
        reader = self._check_open()
        query = build_query(conversation_id=conversation_id, user_id=user_id,
                            after=after, before=before)
        return await compute_metrics(reader, query, provider=provider, model=model, tag=tag)

    # --- integrity (see eventstore.integrity) ------------------------------------------

    @property
    def origin(self) -> str:
        """The log's name: the first line of its checkpoints, and its signing key's name."""
        self._check_open()
        return self._auditor.service.origin

    @property
    def verifier_key(self) -> str | None:
        """The verifier key of the store's signing key (None without one): give it to
        whoever checks the checkpoints (`eventstore.integrity.open_checkpoint`)."""
        self._check_open()
        return self._auditor.service.verifier_key

    @instrumented("tree_head")
    async def tree_head(self) -> TreeHead:
        """The size and RFC 9162 Merkle root of the whole log."""
        self._check_open()
        return await self._auditor.service.tree_head()

    @instrumented("prove")
    async def prove(self, seq: int, size: int | None = None) -> InclusionProof:
        """Proof that event `seq` is in the log's tree of `size` events (default: all);
        it verifies against the root of `tree_head()` of that size."""
        self._check_open()
        return await self._auditor.service.prove(seq, size)

    @instrumented("prove_consistency")
    async def prove_consistency(
        self, old_size: int, new_size: int | None = None
    ) -> ConsistencyProof:
        """Proof that the log of `new_size` events (default: all) extends the log of
        `old_size` events: none of those was changed or removed."""
        self._check_open()
        return await self._auditor.service.prove_consistency(old_size, new_size)

    @instrumented("checkpoint")
    async def checkpoint(self) -> str:
        """The log's current tree head as a C2SP checkpoint, signed with the store's
        signing key when it has one."""
        self._check_open()
        return await self._auditor.service.checkpoint()

    @instrumented("verify")
    async def verify(self, checkpoint: str | None = None) -> VerifyReport:
        """Recompute every leaf and the whole tree from what is stored, and with
        `checkpoint` (an earlier checkpoint's text) prove the log still extends it;
        the report names the first bad seq."""
        self._check_open()
        return await self._auditor.service.verify(checkpoint)

    def _checkpoint_written(self, text: str, size: int, path: Path | None) -> None:
        self.dispatcher.send(signals.checkpoint_written, self, checkpoint=text, size=size,
                             path=path)
    # --- budgets -----------------------------------------------------------------------

    @property
    def budgets(self) -> tuple[Budget, ...]:
        """The budgets this store was opened with."""
        return self._budgets.budgets

    @instrumented("budget_status")
    async def budget_status(
        self,
        *,
        user_id: str | None = None,
        conversation_id: str | None = None,
        tags: Sequence[str] = (),
        at: datetime | None = None,
    ) -> list[BudgetStatus]:
        """Spent, limit and remaining of each budget a call with these ids and tags falls
        under, in the window holding `at` (default: now), from the cost rollup. Unpriced
        calls are counted beside spent (`unpriced_calls`), never as $0."""
        self._check_open()
        return await self._budgets.status(user_id=user_id, conversation_id=conversation_id,
                                          tags=tags, at=check_time("at", at) or utcnow())

    async def check_budget(
        self,
        *,
        user_id: str | None = None,
        conversation_id: str | None = None,
        tags: Sequence[str] = (),
        at: datetime | None = None,
    ) -> list[BudgetStatus]:
        """Raise BudgetExceededError if a budget a call with these ids and tags falls
        under is exhausted (spent >= limit) in the window holding `at` (default: now);
        otherwise return the statuses, as budget_status does."""
        statuses = await self.budget_status(user_id=user_id, conversation_id=conversation_id,
                                            tags=tags, at=at)
        check_budgets(statuses)
        return statuses
