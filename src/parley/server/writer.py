"""The store's one writer: every write, from every call, in group-committed transactions.

A server holding hundreds of calls writes an item or a usage record for one of them every few
milliseconds. Each as its own transaction (BEGIN, the statement, COMMIT, and on SQLite a hop to the
driver's thread for each) made the database the ceiling on how many calls one process can record.
Here the writes queue up while a batch is being committed, and the next batch takes all of them in
one transaction. Each caller still awaits its own write's commit, so "committed before the method
returns" holds; the batch only shares the cost. When the queue is empty a write is committed at
once: there is no timer and no added wait.

One failing write must not take the others down: when a batch fails, it is rolled back and each of
its writes is run again alone, in its own transaction, so each caller gets its own result or error.

A write is a plain function of a synchronous SQLAlchemy `Connection` (Core statements). Where it
runs:
* SQLite file: in one thread of its own, on its own connection, so a batch is one hand-off from the
  event loop and back, however many statements it holds (WAL: the readers' connections see each
  commit; this is the database's only writer);
* otherwise (PostgreSQL over asyncpg): on a connection of the async engine, with `run_sync`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

T = TypeVar("T")
Write = Callable[[Connection], Any]
MAX_BATCH = 500  # writes in one transaction: bounds how long one commit holds the database


def run_batch(conn: Connection, writes: list[Write]) -> list[tuple[bool, Any]]:
    """The writes in one transaction, else (when one fails) each alone: (ok, result or exception)."""
    try:
        with conn.begin():
            return [(True, write(conn)) for write in writes]
    except Exception:
        if len(writes) == 1:
            raise
    results: list[tuple[bool, Any]] = []
    for write in writes:
        try:
            with conn.begin():
                results.append((True, write(conn)))
        except Exception as exc:
            results.append((False, exc))
    return results


class Writer:
    """Queues writes and commits them in batches (see the module)."""

    def __init__(self, engine: AsyncEngine, sync_url: str | None = None,
                 configure: Callable[[Engine], None] | None = None) -> None:
        self.engine = engine
        self.sync_url = sync_url  # a SQLite file: written from a thread of its own
        self.configure = configure
        self.batches = 0
        self.writes = 0
        self._queue: list[tuple[Write, asyncio.Future[Any]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._sync: Engine | None = None
        self._conn: Connection | None = None
        self._closing = False

    async def write(self, write: Callable[[Connection], T]) -> T:
        """Run `write` in the next batch; its result once that batch is committed."""
        if self._task is None or self._task.done():
            self._start()
        assert self._wake is not None
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((write, future))
        self._wake.set()
        return await future

    def _start(self) -> None:
        self._wake = asyncio.Event()
        if self.sync_url is not None and self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-db-writer")
        self._task = asyncio.create_task(self._run(), name="db-writer")

    async def _run(self) -> None:
        assert self._wake is not None
        while not (self._closing and not self._queue):
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    results = await self._commit([write for write, _ in batch])
                except Exception as exc:  # the database itself failed (down, locked): every caller hears
                    results = [(False, exc)] * len(batch)
                self.batches += 1
                self.writes += len(batch)
                for (_, future), (ok, value) in zip(batch, results, strict=True):
                    if future.done():  # its caller was cancelled; the write stands
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)

    async def _commit(self, writes: list[Write]) -> list[tuple[bool, Any]]:
        if self._thread is not None:
            return await asyncio.get_running_loop().run_in_executor(self._thread, self._commit_sync, writes)
        async with self.engine.connect() as conn:
            return await conn.run_sync(run_batch, writes)

    def _commit_sync(self, writes: list[Write]) -> list[tuple[bool, Any]]:
        """In the writer's thread: its one connection, opened on first use."""
        if self._conn is None:
            assert self.sync_url is not None
            self._sync = create_engine(self.sync_url, connect_args={"timeout": 30, "check_same_thread": False})
            if self.configure is not None:
                self.configure(self._sync)
            self._conn = self._sync.connect()
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
        if self._sync is not None:
            self._sync.dispose()
            self._sync = None

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is not None and self._wake is not None:
            self._closing = True
            self._wake.set()
            await self._task
            self._task, self._closing = None, False
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._reset)
            self._thread.shutdown(wait=True)
            self._thread = None
