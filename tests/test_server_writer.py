"""The store's one writer (group commit) on a real SQLite file and a real PostgreSQL database:
writes that arrive together share a transaction, each caller gets its own result once its write is
committed, and one failing write costs the others nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from parley.server.db import ItemRecord, Store
from parley.server.settings import normalize_database_url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'writer.db'}"
    return normalize_database_url(request.getfixturevalue("database"))  # (skips, saying why, with none)


@pytest.fixture
async def store(url: str) -> AsyncIterator[Store]:
    s = Store(url)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


async def _call(store: Store, call_id: str) -> None:
    await store.create_call(id=call_id, user_id="u", kind="server", persona="negotiator/sarah",
                            persona_name="Sarah", model="gpt-realtime")


def _item(n: int) -> ItemRecord:
    return ItemRecord(item_id=f"item_{n}", seq=float(n), role="user", kind="message", persona=None, text=f"turn {n}")


async def test_writes_that_arrive_together_share_one_commit_and_each_is_stored(store: Store) -> None:
    calls = [f"call_{i}" for i in range(10)]
    await asyncio.gather(*(_call(store, c) for c in calls))
    before = store.writer.batches
    await asyncio.gather(*(store.save_item(c, _item(n)) for c in calls for n in range(5)))
    assert store.writer.batches - before < 50 / 2  # 50 writes, far fewer transactions
    for c in calls:  # committed: a reader on another connection sees every one, in order
        assert [i.text for i in await store.items(c)] == [f"turn {n}" for n in range(5)]


async def test_a_failing_write_fails_alone_and_its_batch_is_committed(store: Store) -> None:
    await _call(store, "call_ok")
    results = await asyncio.gather(store.save_item("call_ok", _item(1)),
                                   store.save_item("call_missing", _item(2)),  # no such call: a foreign key
                                   store.add_usage("call_ok", kind="response", ref_id="resp_1", persona=None,
                                                   model="gpt-realtime", status="completed", input_tokens=10,
                                                   output_tokens=5, usage={}, cost_usd=0.25),
                                   return_exceptions=True)
    assert results[0] is None and results[2] is True
    assert isinstance(results[1], IntegrityError)
    assert [i.item_id for i in await store.items("call_ok")] == ["item_1"]
    row = await store.get_call("call_ok")
    assert row is not None and (row.input_tokens, row.output_tokens, row.cost_usd) == (10, 5, 0.25)
    # the same usage again: not counted twice, and the caller is told
    assert not await store.add_usage("call_ok", kind="response", ref_id="resp_1", persona=None, model="gpt-realtime",
                                     status="completed", input_tokens=10, output_tokens=5, usage={}, cost_usd=0.25)


async def test_close_commits_what_is_queued(store: Store) -> None:
    await _call(store, "call_q")
    writes = [asyncio.ensure_future(store.save_item("call_q", _item(n))) for n in range(20)]
    await asyncio.sleep(0)  # queued, not yet committed
    await store.writer.close()
    assert all(w.done() and w.exception() is None for w in writes)
    assert len(await store.items("call_q")) == 20


async def test_writes_of_one_row_in_one_batch_keep_their_order(store: Store) -> None:
    """Upserts of one statement share an executemany, but never jump a write of the same row."""
    await _call(store, "call_o")

    def rec(item: str, text: str) -> ItemRecord:
        return ItemRecord(item_id=item, seq=1.0 if item == "a" else 2.0, role="user", kind="message",
                          persona=None, text=text)

    writes = [store.save_item("call_o", rec("a", "one")), store.save_item("call_o", rec("b", "b1")),
              store.update_item("call_o", "a", text="two"), store.save_item("call_o", rec("a", "three")),
              store.delete_item("call_o", "b"), store.save_item("call_o", rec("b", "b2")),
              store.save_item("call_o", rec("a", "four"))]
    before = store.writer.batches
    await asyncio.gather(*writes)  # queued together: one batch
    assert store.writer.batches - before == 1
    assert [(i.item_id, i.text) for i in await store.items("call_o")] == [("a", "four"), ("b", "b2")]


@pytest.mark.postgres
async def test_a_connection_the_server_dropped_costs_no_write(database: str) -> None:
    import asyncpg

    store = Store(normalize_database_url(database))
    await store.start()
    try:
        await _call(store, "call_d")
        await store.save_item("call_d", _item(1))  # the writer's connections are open now
        admin = await asyncpg.connect(database)
        try:
            dropped = await admin.fetchval("select count(pg_terminate_backend(pid)) from pg_stat_activity "
                                           "where datname = current_database() and pid <> pg_backend_pid()")
        finally:
            await admin.close()
        assert dropped >= 1
        await store.save_item("call_d", _item(2))  # on a fresh connection
        assert [i.item_id for i in await store.items("call_d")] == ["item_1", "item_2"]
    finally:
        await store.close()


async def test_a_late_placeholder_never_erases_stored_words(store: Store) -> None:
    await _call(store, "call_p")
    placed = ItemRecord(item_id="item_1", seq=1.0, role="user", kind="message", persona=None, text="", status="pending")
    await store.save_item("call_p", placed)
    await store.save_item("call_p", _item(1))  # its words
    await store.save_item("call_p", placed)  # a late write of the placeholder
    assert [(i.text, i.status) for i in await store.items("call_p", pending=True)] == [("turn 1", "completed")]
