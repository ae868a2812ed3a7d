"""The store's one writer: every write, from every call, in group-committed transactions.

A server holding hundreds of calls writes an item or a usage record for one of them every few
milliseconds. Each as its own transaction (BEGIN, the statement, COMMIT, and on SQLite a hop to the
driver's thread for each) made the database the ceiling on how many calls one process can record.
Here the writes queue up while a batch is being committed, and the next batch takes all of them in
one transaction. A caller awaits its own write's commit (`write`), or queues it and goes on
(`submit`: a call's writes are committed in the order they were queued); the batch only shares the
cost. When the queue is empty a write is committed at once: there is no timer and no added wait.

One failing write must not take the others down: when a batch fails, it is rolled back and each of
its writes is run again alone, in its own transaction, so each caller gets its own result or error.

A write is a plain function of a synchronous SQLAlchemy `Connection` (Core statements), or a `Row`
of an upsert, which the batch runs with the others of its statement as one executemany. A batch
runs off the server's event loop (`ThreadCommitter` for a SQLite file, `LoopCommitter` for
PostgreSQL): one hand-off there and back per batch, whatever the loop is busy with.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

T = TypeVar("T")
Write = Callable[[Connection], Any]
MAX_BATCH = 500  # writes in one transaction: bounds how long one commit holds the database


@dataclass(frozen=True)
class Row:
    """A write of one row (`key`) by a statement that takes many rows (an upsert). A batch runs its
    Rows of one statement as one executemany (on PostgreSQL one round trip, not one per row), in
    the place of the first; a Row whose row an earlier write of the batch touched starts a new one."""

    statement: Any
    params: dict[str, Any]
    key: Hashable

    def __call__(self, conn: Connection) -> None:
        conn.execute(self.statement, self.params)


@dataclass(frozen=True)
class Keyed:
    """A write that touches the row `key` (of the same table as some Rows): Rows of that row after
    it stay after it."""

    write: Write
    key: Hashable

    def __call__(self, conn: Connection) -> Any:
        return self.write(conn)


class _Group:
    def __init__(self, statement: Any) -> None:
        self.statement = statement
        self.at: list[int] = []  # the writes' places in the batch
        self.params: list[dict[str, Any]] = []
        self.keys: set[Hashable] = set()
        self.blocked: set[Hashable] = set()  # rows a later write touched: not to be moved before it

    def add(self, at: int, row: Row) -> None:
        self.at.append(at)
        self.params.append(row.params)
        self.keys.add(row.key)


def _plan(writes: list[Write]) -> list[tuple[list[int], Write]]:
    """The batch as steps, in order: (the places of the writes a step runs, the step)."""
    steps: list[tuple[list[int], Write]] = []
    open_groups: dict[int, _Group] = {}
    for at, write in enumerate(writes):
        if isinstance(write, Row):
            group = open_groups.get(id(write.statement))
            if group is None or write.key in group.keys or write.key in group.blocked:
                group = open_groups[id(write.statement)] = _Group(write.statement)
                steps.append((group.at, partial(_execute_many, group)))
            group.add(at, write)
            continue
        if isinstance(write, Keyed):
            for group in open_groups.values():
                group.blocked.add(write.key)
        steps.append(([at], write))
    return steps


def _execute_many(group: _Group, conn: Connection) -> None:
    conn.execute(group.statement, group.params if len(group.params) > 1 else group.params[0])


def run_batch(conn: Connection, writes: list[Write]) -> list[tuple[bool, Any]]:
    """The writes in one transaction, else (when one fails) each alone: (ok, result or exception)."""
    try:
        results: list[tuple[bool, Any]] = [(True, None)] * len(writes)
        with conn.begin():
            for places, step in _plan(writes):
                result = step(conn)
                if len(places) == 1:
                    results[places[0]] = (True, result)
        return results
    except Exception as exc:
        if len(writes) == 1 or getattr(exc, "connection_invalidated", False):
            raise  # (a lost connection fails them all alike: the committer may try again)
    results = []
    for write in writes:
        try:
            with conn.begin():
                results.append((True, write(conn)))
        except Exception as exc:
            results.append((False, exc))
    return results


class Committer(Protocol):
    """Where a batch runs: one transaction's worth of writes in, each write's outcome out."""

    async def commit(self, writes: list[Write]) -> list[tuple[bool, Any]]: ...

    async def close(self) -> None: ...


class ThreadCommitter:
    """A SQLite file: one thread of its own and one connection, so a batch is one hand-off from the
    event loop and back however many statements it holds (WAL: readers on other connections see
    each commit; this is the file's only writer)."""

    def __init__(self, url: str, configure: Callable[[Engine], None] | None = None) -> None:
        self.url, self.configure = url, configure
        self._thread: ThreadPoolExecutor | None = None
        self._engine: Engine | None = None
        self._conn: Connection | None = None

    async def commit(self, writes: list[Write]) -> list[tuple[bool, Any]]:
        if self._thread is None:  # (started on first use)
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-db-writer")
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._commit, writes)

    def _commit(self, writes: list[Write]) -> list[tuple[bool, Any]]:
        if self._conn is None:
            self._engine = create_engine(self.url, connect_args={"timeout": 30, "check_same_thread": False})
            if self.configure is not None:
                self.configure(self._engine)
            self._conn = self._engine.connect()
        try:
            return run_batch(self._conn, writes)
        except Exception:
            self._reset()  # a broken connection is not reused
            raise

    def _reset(self) -> None:
        with contextlib.suppress(Exception):
            if self._conn is not None:
                self._conn.close()
        self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    async def close(self) -> None:
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._reset)
            self._thread.shutdown(wait=True)
            self._thread = None


class LoopCommitter:
    """A database server (PostgreSQL over asyncpg): an event loop of its own, in a thread, with its
    own connections. A transaction is several round trips; on the server's loop each would wait
    behind every call's events (tens of ms at a thousand calls), here only behind other writes."""

    def __init__(self, url: str, connections: int) -> None:
        self.url, self.connections = url, connections
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._engine: AsyncEngine | None = None

    async def commit(self, writes: list[Write]) -> list[tuple[bool, Any]]:
        if self._loop is None:  # (started on first use)
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="parley-db-writer", daemon=True)
            self._thread.start()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._commit(writes), self._loop))

    async def _commit(self, writes: list[Write]) -> list[tuple[bool, Any]]:
        # No ping before each batch (a round trip more per transaction): a connection found broken
        # is dropped by the pool, and the batch runs once more on a fresh one.
        if self._engine is None:
            self._engine = create_async_engine(self.url, pool_size=self.connections)
        for attempt in (1, 2):
            try:
                async with self._engine.connect() as conn:
                    return await conn.run_sync(run_batch, writes)
            except DBAPIError as exc:
                if not exc.connection_invalidated or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _dispose(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()

    async def close(self) -> None:
        if self._loop is None or self._thread is None:
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._dispose(), self._loop))
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join)
        self._loop.close()
        self._loop = self._thread = self._engine = None


class EngineCommitter:
    """Anything else (a SQLite database in memory): on a connection of the store's own engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def commit(self, writes: list[Write]) -> list[tuple[bool, Any]]:
        async with self.engine.connect() as conn:
            return await conn.run_sync(run_batch, writes)

    async def close(self) -> None:
        return None


class _Lane:
    """One queue of writes and the task committing it, batch after batch."""

    def __init__(self) -> None:
        self.queue: list[tuple[Write, asyncio.Future[Any]]] = []
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class Writer:
    """Queues writes and commits them in batches (see the module). With `lanes` > 1 (a database
    server), as many batches are committed at once (the server's WAL flush groups them again);
    each call's writes keep to one lane (by `shard`), so they stay in order."""

    def __init__(self, committer: Committer, lanes: int = 1) -> None:
        self.committer = committer
        self.batches = 0
        self.on_batch: Callable[[int, float], None] | None = None  # (writes, seconds) after each commit
        self._lanes = [_Lane() for _ in range(max(1, lanes))]
        self._closing = False

    async def write(self, write: Callable[[Connection], T], shard: str = "") -> T:
        """Run `write` in its lane's next batch; its result once that batch is committed."""
        return await self.submit(write, shard)

    def submit(self, write: Callable[[Connection], T], shard: str = "") -> asyncio.Future[T]:
        """Queue `write` now; the future is done when its batch is committed. Writes of one `shard`
        (a call id) are committed in the order they were submitted, so a caller may submit several
        without waiting for each."""
        lane = self._lanes[hash(shard) % len(self._lanes)]
        loop = asyncio.get_running_loop()
        if lane.task is None or lane.task.done() or lane.task.get_loop() is not loop:
            lane.wake = asyncio.Event()  # (of this event loop)
            lane.task = loop.create_task(self._run(lane), name="db-writer")
        future: asyncio.Future[T] = loop.create_future()
        lane.queue.append((write, future))
        lane.wake.set()
        return future

    async def _run(self, lane: _Lane) -> None:
        while not (self._closing and not lane.queue):
            await lane.wake.wait()
            lane.wake.clear()
            while lane.queue:
                batch, lane.queue = lane.queue[:MAX_BATCH], lane.queue[MAX_BATCH:]
                began = time.perf_counter()
                try:
                    results = await self.committer.commit([write for write, _ in batch])
                except Exception as exc:  # the database itself failed (down, locked): every caller hears
                    results = [(False, exc)] * len(batch)
                self.batches += 1
                if self.on_batch is not None:
                    self.on_batch(len(batch), time.perf_counter() - began)
                for (_, future), (ok, value) in zip(batch, results, strict=True):
                    if future.done():  # its awaiter was cancelled; the write stands
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        self._closing = True
        for lane in self._lanes:
            if lane.task is not None:
                lane.wake.set()
                await lane.task
                lane.task = None
        self._closing = False
        await self.committer.close()
