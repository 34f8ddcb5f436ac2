"""EventStore: the facade an application holds.

    async with EventStore.open("sqlite:///audit.db", redact=[hook]) as store:
        rec = await store.append(Event(type="message_sent", ...))

The store owns one anyio task group (hosted by a runner task, so the store can be opened
and closed from different tasks): the group-commit writer, the async-signal pump, the
guardian and every subscription run in it, and closing the store stops them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import anyio
import msgspec
from anyio.abc import TaskGroup

from . import signals
from .backends import backend_for_url
from .backends.base import Backend
from .backends.protocols import KeyStore
from .codec import PreparedEvent, decode_event, digest_of, encode_event, validate
from .cursor import CursorCodec
from .errors import (
    DuplicateEventError,
    EventStoreError,
    InvalidEventError,
    InvalidQueryError,
    RedactionError,
    StoreClosedError,
    SubscriptionError,
)
from .events import USER_FORGOTTEN, Event, RecordedEvent
from .operations import instrumented, send_span, send_start
from .privacy.hooks import RedactHook, copies_on_write, run_hooks
from .query import build_query, check_limit, check_seq
from .subscriptions import Guardian, Handler, Subscription
from .writer import GroupCommitWriter

if TYPE_CHECKING:
    from decimal import Decimal

    import polars as pl

    from .integrations.context import ConversationScope
    from .pricing import PricingProvider
    from .privacy.encryption import Encryption
    from .projections.base import Projection

    P = TypeVar("P", bound=Projection)

log = logging.getLogger("eventstore")

DEFAULT_PAGE = 100
READ_BATCH = 1_000
PROGRESS_EVERY = 10_000


class Page(msgspec.Struct, frozen=True):
    """One page of events; `next_cursor` is None on the last page."""

    events: list[RecordedEvent]
    next_cursor: str | None


class EventStore:
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
        url: str | None = None,
    ) -> None:
        self.backend = backend
        self.url = url
        self.dispatcher = signals.Dispatcher()
        self._hooks = tuple(redact)
        self._hooks_copy = copies_on_write(self._hooks)
        self._pricing = pricing
        self.encryption = encryption
        self._cursor_secret = cursor_secret
        self._cursors: CursorCodec | None = None
        self._writer = GroupCommitWriter(backend, self._after_commit, max_group=max_group)
        self._runner: asyncio.Task[None] | None = None
        self._task_group: TaskGroup | None = None
        self._stop = asyncio.Event()
        self._writer_done = asyncio.Event()
        self._open = False
        self._subscriptions: list[Subscription] = []
        self.guardian = Guardian(self, interval=guardian_interval)

    @classmethod
    def open(cls, url: str, *, redact: Sequence[RedactHook] = (), **options: Any) -> EventStore:
        """A store for `url`; use it as `async with EventStore.open(url) as store:`.

        URLs: memory://, sqlite:///relative.db, sqlite:////absolute.db (query options
        synchronous=normal|full, busy_timeout=ms), postgresql://user@host:port/db.
        Options: redact (hooks), cursor_secret (bytes, to share cursors across stores),
        max_group (events per commit), guardian_interval (seconds between guardian ticks),
        pricing (a PricingProvider for record_cost; default: the genai-prices dataset),
        encryption (an Encryption: personal fields encrypted per user, see forget_user).
        """
        store_options = {k: options.pop(k) for k in
                         ("cursor_secret", "max_group", "guardian_interval", "pricing",
                          "encryption") if k in options}
        backend = backend_for_url(url, **options)
        return cls(backend, redact=redact, url=url, **store_options)

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> Self:
        if self._open:
            return self
        await self.backend.open()
        try:
            if self.encryption is not None:
                await self.encryption.bind(self.backend)
            self._cursors = CursorCodec(self._cursor_secret or await self.backend.secret())
            started = asyncio.Event()
            self._runner = asyncio.create_task(self._run(started), name="eventstore-runner")
            waiter = asyncio.ensure_future(started.wait())
            await asyncio.wait({waiter, self._runner}, return_when=asyncio.FIRST_COMPLETED)
            if not started.is_set():
                waiter.cancel()
                await self._runner  # re-raises what stopped it
        except BaseException:
            await self.backend.close()
            raise
        self._open = True
        listen = getattr(self.backend, "listen", None)
        if listen is not None:  # other processes' commits wake our subscriptions
            try:
                await listen(self._on_remote_head)
            except BaseException:
                await self.close()
                raise
        return self

    async def _run(self, started: asyncio.Event) -> None:
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            tg.start_soon(self._run_writer)
            tg.start_soon(self.dispatcher.pump)
            tg.start_soon(self.guardian.run)
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
        self._task_group.start_soon(func, *args, name=name)

    async def close(self) -> None:
        """Stop subscriptions and the guardian, commit what is queued, release the backend."""
        if not self._open:
            return
        for subscription in list(self._subscriptions):
            await subscription.stop()
        self._open = False
        self._writer.close()
        await self._writer_done.wait()
        await self.dispatcher.drain()
        self._stop.set()
        if self._runner is not None:
            await self._runner
        self.dispatcher.discard()
        unlisten = getattr(self.backend, "unlisten", None)
        if unlisten is not None:  # a shared in-process log outlives this store
            unlisten(self._on_remote_head)
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

    def _check_open(self) -> CursorCodec:
        if not self._open or self._cursors is None:
            raise StoreClosedError(
                "the store is not open; use `async with EventStore.open(url) as store:`"
            )
        return self._cursors

    # --- appends -----------------------------------------------------------------------

    async def _prepare(self, event: Any) -> PreparedEvent:
        event = validate(event)
        if type(event) is not Event:  # a RecordedEvent or subclass: keep the Event fields
            event = Event(**{f: getattr(event, f) for f in Event.__struct_fields__})
        if event.occurred_at.utcoffset():
            event = msgspec.structs.replace(event, occurred_at=event.occurred_at.astimezone(UTC))
        if self._hooks:
            original = event
            event = await run_hooks(self._hooks, event)
            try:
                # hooks that copy on write and found nothing hand back the very event,
                # validated above
                unchanged = event is original and self._hooks_copy
                event = event if unchanged else validate(event)
            except InvalidEventError as exc:
                raise RedactionError(
                    f"a redact hook produced an invalid event ({exc}); nothing was written"
                ) from exc
        body = encode_event(event)
        visible = decode_event(body)
        digest = digest_of(visible)
        if self.encryption is not None:  # what is stored differs from what callers see
            sealed, digest = await self.encryption.seal_with_digest(visible, digest)
            body = encode_event(sealed)
        return PreparedEvent(visible=visible, body=body, digest=digest)

    @instrumented("append")
    async def append(self, event: Event) -> RecordedEvent:
        """Append one event; an id already stored with the same content returns that event."""
        self._check_open()
        prepared = [await self._prepare(event)]
        (recorded,) = await self._reveal_appended(prepared, await self._commit(prepared))
        return recorded

    @instrumented("append_many")
    async def append_many(self, events: Iterable[Event]) -> list[RecordedEvent]:
        """Append several events atomically: all are written, or none is."""
        self._check_open()
        if isinstance(events, Event) or not isinstance(events, Iterable):
            raise InvalidEventError("append_many() takes a list of Events")
        prepared = [await self._prepare(event) for event in events]
        if not prepared:
            return []
        return await self._reveal_appended(prepared, await self._commit(prepared))

    async def _commit(self, prepared: list[PreparedEvent]) -> list[RecordedEvent]:
        try:
            return await self._writer.submit(prepared)
        except DuplicateEventError as exc:
            raise await self._explain_duplicate(exc, prepared) from None

    async def _explain_duplicate(self, exc: DuplicateEventError,
                                 prepared: list[PreparedEvent]) -> DuplicateEventError:
        """With encryption, a retry of a forgotten user's event cannot match what is stored:
        its fingerprint was keyed with the destroyed key. Say so rather than "different
        content"; the stored copy stays erased either way."""
        if self.encryption is None or not isinstance(self.backend, KeyStore):
            return exc
        user_id = next((p.visible.user_id for p in prepared
                        if p.visible.id == exc.event_id), None)
        if user_id is None:
            return exc
        newest = (await self.backend.load_keys([user_id])).get(user_id)
        # generations after the first only exist because an earlier one was forgotten
        if newest is None or (newest.wrapped is not None and newest.generation == 1):
            return exc
        return DuplicateEventError(
            exc.event_id,
            f"event id {exc.event_id!r} is already stored, for user {user_id!r}, whose "
            "personal data forget_user() erased: a retry cannot be matched against the "
            "erased copy, which stays as it is (or this is other content under a used id). "
            "To store the event again, give it a new id (omit id= for a fresh UUIDv7).",
        )

    @instrumented("forget_user")
    async def forget_user(self, user_id: str) -> RecordedEvent:
        """Erase a user's personal fields from every read by destroying their data key
        (crypto-shredding, see eventstore.encryption), and log it as a `user_forgotten`
        event, which names the user id and nothing else. Seq, types, times, token counts
        and costs of their events stay. Needs a store opened with encryption=."""
        self._check_open()
        if self.encryption is None:
            raise EventStoreError(
                "forget_user() needs a store opened with encryption=Encryption(...): without "
                "it personal fields are stored in plaintext and cannot be erased"
            )
        await self.encryption.forget(user_id)
        erase = self.encryption.erase
        for subscription in self._subscriptions:  # live events queued before the forget
            queued = list(subscription._queue)
            subscription._queue.clear()
            subscription._queue.extend(erase(e) if e.user_id == user_id else e for e in queued)
        return await self.append(
            Event(type=USER_FORGOTTEN, user_id=user_id, data={"user_id": user_id})
        )

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
        self, conversation_id: str, user_id: str | None = None, **metadata: Any
    ) -> ConversationScope:
        """Attribute the LLM calls made inside `with` / `async with` to a conversation.

        Instrumented clients (eventstore.integrations) use these ids when they were given
        none of their own; `metadata` is added to the events they record. The scope is a
        ContextVar: it follows tasks and `asyncio.to_thread`, never leaks across requests.
        """
        from .integrations.context import ConversationScope

        return ConversationScope(conversation_id, user_id, **metadata)

    async def to_polars(
        self,
        *,
        conversation_id: str | None = None,
        user_id: str | None = None,
        type: str | Iterable[str] | None = None,
        after: datetime | None = None,
        before: datetime | None = None,
    ) -> pl.DataFrame:
        """The matching events as a polars DataFrame, one row per event (needs the
        `polars` extra); columns in eventstore.integrations.polars."""
        from .integrations.polars import to_polars

        return await to_polars(self, conversation_id=conversation_id, user_id=user_id,
                               type=type, after=after, before=before)

    def _after_commit(self, committed: list[RecordedEvent]) -> None:
        send = self.dispatcher.send
        for event in committed:
            send(signals.event_appended, self, event=event)

    # --- reads -------------------------------------------------------------------------

    async def _reveal(self, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """The events as callers see them: personal fields decrypted, or erased once their
        user was forgotten. Without encryption, the stored events as they are."""
        if self.encryption is None or not events:
            return events
        return await self.encryption.open_events(events)

    async def _reveal_appended(
        self, prepared: Sequence[PreparedEvent], recorded: list[RecordedEvent]
    ) -> list[RecordedEvent]:
        """What an append returns. A new event comes back as its visible event (plaintext,
        which could even look like an envelope), sharing its dicts (see `record`); only an
        idempotent retry comes back from storage, sealed."""
        if self.encryption is None:
            return recorded
        stored = [i for i, (p, r) in enumerate(zip(prepared, recorded, strict=True))
                  if r.data is not p.visible.data]
        if not stored:
            return recorded
        opened = await self.encryption.open_events([recorded[i] for i in stored])
        out = list(recorded)
        for i, event in zip(stored, opened, strict=True):
            out[i] = event
        return out

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
        cursors = self._check_open()
        query = build_query(conversation_id=conversation_id, user_id=user_id, type=type,
                            after=after, before=before)
        limit = check_limit(limit)
        after_seq = cursors.decode(cursor, query) if cursor is not None else 0
        events = await self.backend.query(query, after_seq=after_seq, limit=limit + 1)
        if len(events) > limit:
            events = events[:limit]
            next_cursor: str | None = cursors.encode(events[-1].seq, query)
        else:
            next_cursor = None
        return Page(events=await self._reveal(events), next_cursor=next_cursor)

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
        self._check_open()
        query = build_query(conversation_id=conversation_id, user_id=user_id, type=type,
                            after=after, before=before)
        return await self.backend.count(query)

    async def head(self) -> int:
        """The seq of the last committed event (0 for an empty log)."""
        self._check_open()
        return await self.backend.head()

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
        self._check_open()
        check_seq("from_seq", from_seq)
        batch_size = check_limit(batch_size)
        query = build_query(conversation_id=conversation_id, user_id=user_id, type=type,
                            after=after, before=before)
        started = send_start(self, "read")
        pending: asyncio.Future[list[RecordedEvent]] | None = asyncio.ensure_future(
            self.backend.query(query, after_seq=max(from_seq - 1, 0), limit=batch_size)
        )
        error: BaseException | None = None
        try:
            while pending is not None:
                page = await pending
                pending = None
                if len(page) == batch_size:
                    pending = asyncio.ensure_future(
                        self.backend.query(query, after_seq=page[-1].seq, limit=batch_size)
                    )
                for event in await self._reveal(page):
                    yield event
        except BaseException as exc:
            error = exc
            raise
        finally:
            if pending is not None:
                pending.cancel()
            send_span(self, "read", started, error)

    # --- subscriptions -----------------------------------------------------------------

    @property
    def subscriptions(self) -> list[Subscription]:
        """The subscriptions running in this store."""
        return list(self._subscriptions)

    def _forget(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def _on_remote_head(self, head: int) -> None:
        for subscription in self._subscriptions:
            subscription.note_head(head)

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
    ) -> Subscription:
        """Call `handler(event)` for every matching event, in seq order, at least once.

        With a `name` the subscription is durable: it resumes after its stored checkpoint
        (ignoring `from_seq`), in this process or another. Without one it starts at
        `from_seq` (default: the beginning of the log) and keeps no checkpoint.
        """
        self._check_open()
        if not callable(handler):
            raise SubscriptionError("subscribe() needs a callable handler(event)")
        if name is not None and not (isinstance(name, str) and name):
            raise SubscriptionError("a subscription name must be a non-empty string")
        if max_attempts < 1 or queue_size < 1 or checkpoint_every < 1:
            raise SubscriptionError("max_attempts, queue_size and checkpoint_every must be >= 1")
        check_seq("from_seq", from_seq)
        query = build_query(type=types, conversation_id=conversation_id, user_id=user_id)
        self._check_name_free(name)
        position = max(from_seq - 1, 0)
        if name is not None:
            checkpoint = await self.backend.load_checkpoint(name)
            if checkpoint is not None:
                position = checkpoint.position
        return self._launch(Subscription(
            self, handler, name=name, query=query, position=position,
            max_attempts=max_attempts, backoff=backoff, max_backoff=max_backoff,
            queue_size=queue_size, checkpoint_every=checkpoint_every,
            checkpoint_interval=checkpoint_interval,
        ))

    def _check_name_free(self, name: str | None) -> None:
        if name is not None and any(s.name == name for s in self._subscriptions):
            raise SubscriptionError(
                f"a subscription named {name!r} is already running in this store; stop it "
                "first or pick another name"
            )

    def _launch(self, subscription: Subscription) -> Subscription:
        self._subscriptions.append(subscription)
        subscription.connect()
        subscription.start()
        return subscription

    # --- projections -------------------------------------------------------------------

    @instrumented("rebuild")
    async def rebuild(self, projection: P, *more: Projection) -> P:
        """Reset the projections and replay the log into them from seq 0, in one pass.

        Sends `rebuild_progress` every PROGRESS_EVERY events (and once at the end).
        Returns the first projection.
        """
        self._check_open()
        projections: tuple[Projection, ...] = (projection, *more)
        wanted: set[str] | None = set()
        for p in projections:
            p.reset()
            if p.types is None or wanted is None:
                wanted = None
            else:
                wanted |= p.types
        head = await self.backend.head()
        # A fresh replay is in order and never repeats, so each event goes straight to the
        # apply() of the projections that take its type: no per-event position check.
        routes: dict[str, list[Any]] = {}
        everything = [p.apply for p in projections if p.types is None]
        done = last = 0
        async for event in self.read(0, type=wanted):
            applies = routes.get(event.type)
            if applies is None:
                applies = routes[event.type] = everything + [
                    p.apply for p in projections if p.types and event.type in p.types
                ]
            for apply in applies:
                apply(event)
            last = event.seq
            done += 1
            if done % PROGRESS_EVERY == 0:
                self.dispatcher.send(signals.rebuild_progress, self, projection=projection,
                                     position=last, head=max(head, last))
        for p in projections:
            p.position = max(head, last)
        self.dispatcher.send(signals.rebuild_progress, self, projection=projection,
                             position=max(head, last), head=max(head, last))
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
        from .projections.base import SnapshotError

        self._check_open()
        key = name or f"projection:{projection.name}"
        self._check_name_free(key)
        projection.reset()
        position = 0
        checkpoint = await self.backend.load_checkpoint(key)
        if checkpoint is not None and checkpoint.state is not None:
            try:
                projection.restore(checkpoint.state)
                position = checkpoint.position
            except SnapshotError as exc:
                log.warning("projection %s: %s; rebuilding from seq 0", key, exc)
                projection.reset()
        types = build_query(type=projection.types)
        return self._launch(Subscription(
            self, projection.apply_event, name=key, query=types, position=position,
            max_attempts=max_attempts, checkpoint_every=snapshot_every,
            checkpoint_interval=snapshot_interval, snapshot=projection.snapshot,
        ))

    # --- costs -------------------------------------------------------------------------

    @property
    def pricing(self) -> PricingProvider:
        if self._pricing is None:
            from .pricing import default_pricing

            self._pricing = default_pricing()
        return self._pricing

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
    ) -> RecordedEvent:
        """Price an LLM call and append it as a `cost_recorded` event.

        `input_tokens` is the whole input, cached tokens included (OpenTelemetry's
        convention; for Anthropic add cache_read and cache_creation input tokens). An
        unknown model raises UnknownModelError and records nothing: never a $0 row.
        """
        from .pricing.records import cost_event

        self._check_open()
        event = cost_event(
            pricing or self.pricing, conversation_id=conversation_id, user_id=user_id,
            provider=provider, model=model, input_tokens=input_tokens,
            output_tokens=output_tokens, cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens, latency_ms=latency_ms, metadata=metadata,
            occurred_at=occurred_at or datetime.now(UTC),
        )
        return await self.append(event)

    async def _cost_events(
        self,
        *,
        conversation_id: str | None,
        user_id: str | None,
        provider: str | None,
        model: str | None,
        after: datetime | None,
        before: datetime | None,
    ) -> list[RecordedEvent]:
        from .pricing.records import matches

        for name, value in (("provider", provider), ("model", model)):
            if value is not None and not isinstance(value, str):
                raise InvalidQueryError(f"{name}= must be a string or None")
        return [e async for e in self.read(type="cost_recorded", conversation_id=conversation_id,
                                           user_id=user_id, after=after, before=before)
                if matches(e, provider, model)]

    @instrumented("sum_cost")
    async def sum_cost(
        self,
        *,
        conversation_id: str | None = None,
        user_id: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        after: datetime | None = None,
        before: datetime | None = None,
    ) -> Decimal:
        """The exact total cost of the matching cost records (filters combine with AND)."""
        from .pricing.records import total

        self._check_open()
        return total(await self._cost_events(
            conversation_id=conversation_id, user_id=user_id, provider=provider, model=model,
            after=after, before=before))

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
    ) -> list[RecordedEvent]:
        """The cost_recorded events of a conversation (or matching the filters), in order."""
        self._check_open()
        return await self._cost_events(
            conversation_id=conversation_id, user_id=user_id, provider=provider, model=model,
            after=after, before=before)
