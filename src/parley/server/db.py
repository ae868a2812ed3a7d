"""Storage: calls, transcript items, usage. SQLAlchemy 2 async; SQLite by default, PostgreSQL by URL.

A write's method returns once it is committed; the transcript writes (`save_item`, `update_item`,
`delete_item`) are queued at once and return a future, done when committed, so a recorder need not
wait for each (a call's writes are committed in order). What is committed survives a crash of the
process (SQLite runs in WAL mode). The writes of all calls share transactions (group commit,
`parley.server.writer`).
The schema is created and migrated on start by Alembic (`migrate()`, migrations in
`parley/server/migrations`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    bindparam,
    delete,
    event,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .writer import Committer, EngineCommitter, Keyed, LoopCommitter, Row, ThreadCommitter, Writer

MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes: they are UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    pass


class Call(Base):
    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # "server" (unified, sideband) | "direct" (browser reports)
    upstream_call_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    persona: Mapped[str] = mapped_column(String(128))  # the persona the call started with
    personas: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [{"id", "name", "at"}], in order
    model: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | ended | failed
    end_reason: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    events_received: Mapped[int] = mapped_column(Integer, default=0)
    # The process that holds the call (shared mode: its heartbeat in Redis says whether it lives).
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    channel: Mapped[str | None] = mapped_column(String(16), nullable=True)  # "phone"; None: the web app or Python
    caller: Mapped[str | None] = mapped_column(String(64), nullable=True)  # a phone call's number (masked in the API)

    __table_args__ = (Index("ix_calls_user_created", "user_id", "created_at"),
                      Index("ix_calls_status_owner", "status", "owner"))


class TranscriptItem(Base):
    __tablename__ = "transcript_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(64), ForeignKey("calls.id", ondelete="CASCADE"))
    item_id: Mapped[str] = mapped_column(String(128))
    seq: Mapped[float] = mapped_column(Float)  # position in the conversation (speech order)
    role: Mapped[str] = mapped_column(String(16))  # user | assistant | system | tool
    kind: Mapped[str] = mapped_column(String(32))  # message | function_call | function_call_output
    persona: Mapped[str | None] = mapped_column(String(128), nullable=True)
    text: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="completed")  # completed | incomplete | failed | truncated | deleted | pending
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    audio_end_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("call_id", "item_id", name="uq_transcript_call_item"),
                      Index("ix_transcript_call_seq", "call_id", "seq"))


class UsageRecord(Base):
    __tablename__ = "usage_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(64), ForeignKey("calls.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # response | transcription
    ref_id: Mapped[str] = mapped_column(String(128))  # response id or item id
    persona: Mapped[str | None] = mapped_column(String(128), nullable=True)
    model: Mapped[str] = mapped_column(String(128))
    status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("call_id", "kind", "ref_id", name="uq_usage_call_ref"),
                      Index("ix_usage_call", "call_id"))


# -- migrations -----------------------------------------------------------------------------------


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


def schema_head() -> str:
    """The newest migration's revision: what `migrate` brings a database to."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


# pg_advisory_xact_lock's key for migrations (any constant; "parley" in ASCII).
MIGRATION_LOCK = 0x7061726C6579


async def migrate(engine: AsyncEngine) -> None:
    """Create or upgrade the schema to the newest revision.

    On PostgreSQL the migration holds a transaction-scoped advisory lock, so processes that start
    at once migrate one after the other (the later ones find the schema current) instead of racing
    to create the same tables."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        await conn.run_sync(_upgrade)


def sqlite_pragmas(engine: Engine) -> None:
    """WAL (committed transactions survive a crash of the process; readers don't block the writer)."""

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()


def _sqlite_file(url: str) -> str | None:
    """A SQLite URL's file (None: not SQLite, or in memory)."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return parsed.database


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        path = _sqlite_file(url)
        if path:
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        sqlite_pragmas(engine.sync_engine)
        return engine
    return create_async_engine(url, pool_pre_ping=True)


# -- the store ------------------------------------------------------------------------------------


@dataclass
class ItemRecord:
    item_id: str
    seq: float
    role: str
    kind: str
    persona: str | None
    text: str
    status: str = "completed"
    data: dict[str, Any] | None = None
    audio_end_ms: int | None = None
    started_at: dt.datetime | None = None


def _day_start(now: dt.datetime | None = None) -> dt.datetime:
    now = now or utcnow()
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


WRITE_LANES = 4  # PostgreSQL: transactions committing at once (each on a connection of the pool)
ITEM_FIELDS = ("seq", "role", "kind", "persona", "text", "status", "data", "audio_end_ms", "completed_at")


def _rows(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _just(statement: Any) -> Callable[[Connection], None]:
    """A write of one statement whose result nobody needs."""
    def write(c: Connection) -> None:
        c.execute(statement)
    return write


class Store:
    """Reads on the async engine's pool; every write through the one `Writer` (group commit, see
    the module for which are awaited and which queued)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.writer = Writer(self._committer(url), lanes=1 if self.dialect == "sqlite" else WRITE_LANES)
        # The hot statements, built once (each write only binds its values).
        item = self._insert(TranscriptItem)
        # A placeholder (pending) never overwrites words already stored: a late or repeated write of
        # a placed item (a process that stalled and came back, a backfill) cannot erase a turn.
        self._upsert_item = item.on_conflict_do_update(
            index_elements=["call_id", "item_id"], set_={f: item.excluded[f] for f in ITEM_FIELDS},
            where=or_(TranscriptItem.status == "pending", item.excluded.status != "pending"))
        self._insert_usage = self._insert(UsageRecord).on_conflict_do_nothing(
            index_elements=["call_id", "kind", "ref_id"])
        self._add_totals = update(Call).where(Call.id == bindparam("b_call")).values(
            input_tokens=Call.input_tokens + bindparam("b_in", type_=Integer),
            output_tokens=Call.output_tokens + bindparam("b_out", type_=Integer),
            cost_usd=Call.cost_usd + bindparam("b_cost", type_=Float))

    def _committer(self, url: str) -> Committer:
        if _sqlite_file(url):  # (SQLite has one writer at a time: one lane, one thread)
            return ThreadCommitter(make_url(url).set(drivername="sqlite").render_as_string(hide_password=False),
                                   configure=sqlite_pragmas)
        if self.dialect == "sqlite":  # in memory: the engine's own
            return EngineCommitter(self.engine)
        return LoopCommitter(url, connections=WRITE_LANES)

    def _insert(self, table: Any) -> Any:
        """INSERT with ON CONFLICT, in the database's dialect (SQLite and PostgreSQL spell it alike)."""
        return pg_insert(table) if self.dialect == "postgresql" else sqlite_insert(table)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def start(self) -> None:
        await migrate(self.engine)

    async def close(self) -> None:
        await self.writer.close()
        await self.engine.dispose()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(select(1))

    async def _execute(self, shard: str, statement: Any, params: dict[str, Any] | None = None) -> int:
        """One statement as a write of its own (of the call `shard`); the rows it touched."""
        return await self.writer.write(lambda c: _rows(c.execute(statement, params)), shard)

    # calls ------------------------------------------------------------------------------------

    async def create_call(self, *, id: str, user_id: str, kind: str, persona: str, persona_name: str,
                          model: str, upstream_call_id: str | None = None, owner: str | None = None,
                          channel: str | None = None, caller: str | None = None) -> None:
        now = utcnow()
        await self._execute(id, insert(Call), dict(
            id=id, user_id=user_id, kind=kind, persona=persona, model=model, owner=owner,
            upstream_call_id=upstream_call_id, status="active", created_at=now,
            channel=channel, caller=caller[:64] if caller else None,
            personas=[{"id": persona, "name": persona_name, "at": now.isoformat()}],
            input_tokens=0, output_tokens=0, cost_usd=0.0, events_received=0))

    async def get_call(self, call_id: str) -> Call | None:
        async with self.sessions() as s:
            return await s.get(Call, call_id)

    async def end_call(self, call_id: str, *, status: str = "ended", reason: str) -> bool:
        """Mark an active call over; False when it was already over."""
        return bool(await self._execute(call_id, update(Call).where(Call.id == call_id, Call.status == "active")
                                        .values(status=status, end_reason=reason[:128], ended_at=utcnow())))

    async def set_upstream_call_id(self, call_id: str, upstream_call_id: str) -> None:
        await self._execute(call_id, update(Call).where(Call.id == call_id).values(upstream_call_id=upstream_call_id))

    async def add_persona(self, call_id: str, persona: str, name: str) -> None:
        entry = {"id": persona, "name": name, "at": utcnow().isoformat()}

        def add(c: Connection) -> None:
            row = c.execute(select(Call.personas).where(Call.id == call_id).with_for_update()).first()
            if row is not None:
                c.execute(update(Call).where(Call.id == call_id).values(personas=[*(row[0] or []), entry]))

        await self.writer.write(add, call_id)

    async def set_outcome(self, call_id: str, outcome: dict[str, Any]) -> None:
        await self._execute(call_id, update(Call).where(Call.id == call_id).values(outcome=outcome))

    async def count_events(self, call_id: str, n: int) -> None:
        await self._execute(call_id, update(Call).where(Call.id == call_id).values(events_received=Call.events_received + n))

    async def end_stale_calls(self, reason: str = "server_restart") -> int:
        """Calls left active by a previous run of the server (killed, crashed) are over."""
        return await self._execute("", update(Call).where(Call.status == "active")
                                   .values(status="ended", end_reason=reason, ended_at=utcnow()))

    async def active_owners(self) -> list[str | None]:
        """The owners of the calls in progress (None: a call from a run without owners)."""
        async with self.sessions() as s:
            return list(await s.scalars(select(Call.owner).where(Call.status == "active").distinct()))

    async def end_calls_of(self, owners: list[str | None], reason: str) -> int:
        """End the active calls of these owners (processes that died)."""
        named = [o for o in owners if o is not None]
        conds = [Call.owner.in_(named)] if named else []
        if None in owners:
            conds.append(Call.owner.is_(None))
        if not conds:
            return 0
        return await self._execute("", update(Call).where(Call.status == "active", or_(*conds))
                                   .values(status="ended", end_reason=reason, ended_at=utcnow()))

    async def active_calls_not_of(self, owner: str) -> list[Call]:
        """The calls in progress that another process (or none) holds."""
        async with self.sessions() as s:
            return list(await s.scalars(select(Call).where(Call.status == "active",
                                                           or_(Call.owner != owner, Call.owner.is_(None)))))

    async def claim_call(self, call_id: str, was: str | None, owner: str) -> bool:
        """Make `owner` the holder of an active call still held by `was`; False when another process
        claimed it first (or it ended). One conditional UPDATE: of processes racing, one wins."""
        held = Call.owner.is_(None) if was is None else Call.owner == was
        return bool(await self._execute(call_id, update(Call).where(Call.id == call_id, Call.status == "active", held)
                                        .values(owner=owner)))

    async def claimed_from(self, call_ids: list[str], owner: str) -> list[str]:
        """Which of these calls (held by `owner`) another process has claimed since."""
        if not call_ids:
            return []
        async with self.sessions() as s:
            return list(await s.scalars(select(Call.id).where(Call.id.in_(call_ids), Call.owner.is_not(None),
                                                               Call.owner != owner)))

    async def set_owner(self, call_id: str, owner: str | None) -> None:
        await self._execute(call_id, update(Call).where(Call.id == call_id).values(owner=owner))

    async def list_calls(self, user_id: str, *, limit: int = 50, offset: int = 0) -> list[Call]:
        async with self.sessions() as s:
            rows = await s.scalars(select(Call).where(Call.user_id == user_id)
                                   .order_by(Call.created_at.desc(), Call.id).limit(limit).offset(offset))
            return list(rows)

    async def day_costs_by_call(self, user_id: str) -> dict[str, float]:
        """Each of the user's calls since midnight UTC, with its cost."""
        async with self.sessions() as s:
            rows = await s.execute(select(Call.id, Call.cost_usd)
                                   .where(Call.user_id == user_id, Call.created_at >= _day_start()))
            return {call_id: float(cost or 0.0) for call_id, cost in rows}

    # transcript ---------------------------------------------------------------------------------

    def save_item(self, call_id: str, rec: ItemRecord) -> asyncio.Future[None]:
        """Insert or update one transcript item: one prepared upsert (it runs for every event that
        places or completes an item). Queued at once, in order with the call's other writes; the
        future is done when it is committed."""
        now = utcnow()
        return self.writer.submit(Row(self._upsert_item, {
            "call_id": call_id, "item_id": rec.item_id, "started_at": rec.started_at or now, "completed_at": now,
            "seq": rec.seq, "role": rec.role, "kind": rec.kind, "persona": rec.persona, "text": rec.text,
            "status": rec.status, "data": rec.data, "audio_end_ms": rec.audio_end_ms}, key=(call_id, rec.item_id)), call_id)

    def update_item(self, call_id: str, item_id: str, **values: Any) -> asyncio.Future[None]:
        statement = update(TranscriptItem).where(TranscriptItem.call_id == call_id,
                                                 TranscriptItem.item_id == item_id).values(**values)
        return self.writer.submit(Keyed(_just(statement), key=(call_id, item_id)), call_id)

    def delete_item(self, call_id: str, item_id: str) -> asyncio.Future[None]:
        statement = delete(TranscriptItem).where(TranscriptItem.call_id == call_id, TranscriptItem.item_id == item_id)
        return self.writer.submit(Keyed(_just(statement), key=(call_id, item_id)), call_id)

    async def items(self, call_id: str, *, pending: bool = False) -> list[TranscriptItem]:
        """The call's transcript in order; with `pending`, also the items placed whose words have not
        arrived (the recorder's bookmarks, see `parley.server.recorder`)."""
        query = select(TranscriptItem).where(TranscriptItem.call_id == call_id)
        if not pending:
            query = query.where(TranscriptItem.status != "pending")
        async with self.sessions() as s:
            rows = await s.scalars(query.order_by(TranscriptItem.seq, TranscriptItem.id))
            return list(rows)

    # usage ----------------------------------------------------------------------------------------

    async def add_usage(self, call_id: str, *, kind: str, ref_id: str, persona: str | None, model: str,
                        status: str | None, input_tokens: int, output_tokens: int,
                        usage: dict[str, Any] | None, cost_usd: float) -> bool:
        """Record one response's (or transcription's) usage and add it to the call's totals, atomically.

        False (and nothing changed) when that response was already recorded."""
        record = {"call_id": call_id, "kind": kind, "ref_id": ref_id, "persona": persona, "model": model,
                  "status": status, "input_tokens": input_tokens, "output_tokens": output_tokens, "usage": usage,
                  "cost_usd": cost_usd, "created_at": utcnow()}
        totals = {"b_call": call_id, "b_in": input_tokens, "b_out": output_tokens, "b_cost": cost_usd}

        def add(c: Connection) -> bool:
            if not _rows(c.execute(self._insert_usage, record)):
                return False
            c.execute(self._add_totals, totals)
            return True

        return await self.writer.write(add, call_id)

    async def usage(self, call_id: str) -> list[UsageRecord]:
        async with self.sessions() as s:
            rows = await s.scalars(select(UsageRecord).where(UsageRecord.call_id == call_id)
                                   .order_by(UsageRecord.id))
            return list(rows)
