"""The events store: purchases, carts and views in an embedded DuckDB file, with the users and items they name.

DuckDB because the jobs here are analytics over millions of rows (baskets, windows, counts per
week), which a columnar engine answers in one SQL statement each without a server; it reads
CSV and Parquet itself and hands results to pandas without copies. Everything that touches
the database is in this class, so a server database (Postgres, ...) fits behind the same methods.

An event's key is a hash of (user, item, type, timestamp, basket): importing a file again, or
one that overlaps it, adds nothing twice. Rows repeated within one file are one event with
their quantities added (H&M writes two of one article as two rows).
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable, Sequence

import duckdb
import pandas as pd

from toolkit.recommend.errors import EventsError, EventsLocked
from toolkit.recommend.records import EVENT_TYPES, Event, ImportReport, Item, RowProblem

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_key VARCHAR PRIMARY KEY, user_id VARCHAR NOT NULL, item_id VARCHAR NOT NULL,
    event_type VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, basket_id VARCHAR,
    quantity DOUBLE NOT NULL, price DOUBLE, source VARCHAR);
CREATE TABLE IF NOT EXISTS users (user_id VARCHAR PRIMARY KEY, attributes VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS items (product_id VARCHAR PRIMARY KEY, title VARCHAR, price DOUBLE, currency VARCHAR,
    url VARCHAR, image VARCHAR, attributes VARCHAR NOT NULL);
"""

#: Column names each field is found under, first match wins (case-insensitive); `--map` overrides.
EVENT_COLUMNS: dict[str, tuple[str, ...]] = {
    "user_id": ("user_id", "user", "customer_id", "visitorid", "visitor_id", "session_id"),
    "item_id": ("item_id", "product_id", "article_id", "itemid", "sku"),
    "ts": ("timestamp", "ts", "t_dat", "time", "date", "event_time", "datetime"),
    "event_type": ("event_type", "event", "type"),
    "basket_id": ("basket_id", "order_id", "transaction_id", "transactionid", "basket"),
    "quantity": ("quantity", "qty"),
    "price": ("price",),
}
REQUIRED = ("user_id", "item_id", "ts")
KEY = ["user_id", "item_id", "event_type", "ts", "basket_id"]


@dataclass
class Source:
    """A file's rows as text, and how to name a row in a message (CSV line, or Parquet row)."""

    name: str
    frame: pd.DataFrame
    first_line: int  # the line (CSV) or row (Parquet) number of frame's first row
    unit: str  # "line" or "row"


class EventStore:
    """The DuckDB file at `path`. One connection, used under a lock: DuckDB serialises writers anyway."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            raise EventsLocked(f"cannot open the events database {path}: {exc}; another toolkit process "
                              "(e.g. `toolkit serve`) may hold it: stop it, or import through POST /api/events") from None
        self._lock = threading.RLock()
        self._db.execute(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "EventStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------

    def import_events(self, source: Source, mapping: dict[str, str] | None = None) -> ImportReport:
        """Check every row, keep the good ones, and name each bad one with its line and reason."""
        report = ImportReport(source=source.name, rows=len(source.frame))
        frame = source.frame
        columns = resolve_columns(list(frame.columns), mapping or {})
        rows = pd.DataFrame({f: frame[c] if c else None for f, c in columns.items()})
        rows["line"] = range(source.first_line, source.first_line + len(rows))
        good, bad = validate(rows, source.unit)
        report.bad = bad
        good, report.merged = merge_repeats(good, source.unit)
        report.unknown_items, report.unknown_examples = self._unknown_items(good["item_id"])
        report.added = self._insert(good, source.name)
        report.already_stored = len(good) - report.added
        if len(frame) == 0:
            report.notes.append(f"{source.name} has a header but no rows")
        return report

    def add_events(self, events: Sequence[Event], source: str = "api") -> ImportReport:
        """Events as they happen (POST /api/events), checked as a file's rows are."""
        frame = pd.DataFrame([{"user_id": e.user_id, "item_id": e.item_id, "event_type": e.event_type,
                               "ts": e.ts.isoformat(), "basket_id": e.basket_id, "quantity": str(e.quantity),
                               "price": None if e.price is None else str(e.price)} for e in events],
                             columns=list(EVENT_COLUMNS))
        return self.import_events(Source(source, frame.astype(object), 1, "event"))

    def _insert(self, good: pd.DataFrame, source: str) -> int:
        if good.empty:
            return 0
        good = good.assign(source=source)
        with self._lock:
            before = self.count()
            self._db.register("incoming", good)
            try:
                self._db.execute("""
                    INSERT INTO events
                    SELECT md5(concat_ws(chr(31), user_id, item_id, event_type, strftime(ts, '%Y-%m-%dT%H:%M:%S.%f'),
                                         coalesce(basket_id, ''))),
                           user_id, item_id, event_type, ts, basket_id, quantity, price, source
                    FROM incoming
                    ON CONFLICT DO NOTHING""")
            finally:
                self._db.unregister("incoming")
            return self.count() - before

    def import_users(self, source: Source, id_column: str | None = None) -> ImportReport:
        """User attributes (age, gender, membership, ...) for cold start; importing again updates them."""
        return self._import_attributes(source, "users", id_column, ("user_id", "customer_id", "visitorid", "id"))

    def import_items(self, source: Source, id_column: str | None = None) -> ImportReport:
        """Product fields and attributes: titles and prices for results, facets for trending, product codes
        for leaving out the same garment in another colour. Importing again updates them."""
        return self._import_attributes(source, "items", id_column, ("product_id", "article_id", "item_id", "sku", "id"))

    def _import_attributes(self, source: Source, table: str, id_column: str | None,
                           aliases: tuple[str, ...]) -> ImportReport:
        frame = source.frame
        report = ImportReport(source=source.name, rows=len(frame))
        id_col = id_column or _find(list(frame.columns), aliases)
        if id_col is None or id_col not in frame.columns:
            wanted = id_column or " or ".join(aliases)
            raise EventsError(f"{source.name} has no {wanted} column (columns found: {', '.join(frame.columns)}); "
                              "name the id column with --id")
        rows: dict[str, tuple] = {}
        for offset, record in enumerate(frame.to_dict("records")):
            line = source.first_line + offset
            key = _text(record.get(id_col))
            if not key:
                report.bad.append(RowProblem(line, f"empty {id_col}"))
                continue
            if key in rows:
                report.merged.append(RowProblem(line, f"{id_col} {key} again (line {rows[key][0]}): this row wins"))
            attrs = {str(k): _text(v) for k, v in record.items() if k != id_col and _text(v)}
            rows[key] = (line, attrs)
        values = [_attribute_row(table, key, attrs) for key, (_, attrs) in rows.items()]
        with self._lock:
            before = self._scalar(f"SELECT count(*) FROM {table}")
            if values:
                columns = [c[0] for c in self._db.execute(f"DESCRIBE {table}").fetchall()]
                self._db.register("incoming", pd.DataFrame(values, columns=columns, dtype=object))
                try:
                    self._db.execute(f"INSERT OR REPLACE INTO {table} SELECT * FROM incoming")
                finally:
                    self._db.unregister("incoming")
            report.added = self._scalar(f"SELECT count(*) FROM {table}") - before
        report.already_stored = len(values) - report.added  # updated in place
        return report

    # -- reading ---------------------------------------------------------------------------------

    def count(self) -> int:
        return self._scalar("SELECT count(*) FROM events")

    def stamp(self) -> str:
        """Changes whenever events change: models remember the stamp they were built at."""
        with self._lock:
            n, last = self._db.execute("SELECT count(*), max(ts) FROM events").fetchall()[0]
        return f"{n}:{last}"

    def frame(self, *, before: datetime | None = None, since: datetime | None = None,
              types: Iterable[str] = ("purchase",)) -> pd.DataFrame:
        """Events as a DataFrame (user_id, item_id, event_type, ts, basket_id, quantity, price), oldest first."""
        clauses, params = [f"event_type IN ({', '.join('?' for _ in types)})"], list(types)
        if before is not None:
            clauses.append("ts < ?")
            params.append(before)
        if since is not None:
            clauses.append("ts >= ?")
            params.append(since)
        with self._lock:
            return self._db.execute(
                "SELECT user_id, item_id, event_type, ts, basket_id, quantity, price FROM events "
                f"WHERE {' AND '.join(clauses)} ORDER BY ts, user_id, item_id", params).df()

    def user_events(self, user_id: str) -> pd.DataFrame:
        with self._lock:
            return self._db.execute("SELECT item_id, event_type, ts, quantity FROM events WHERE user_id = ? "
                                    "ORDER BY ts", [user_id]).df()

    def latest(self) -> datetime | None:
        return self._scalar("SELECT max(ts) FROM events")

    def items(self, ids: Iterable[str] | None = None) -> dict[str, Item]:
        query, params = "SELECT * FROM items", []
        if ids is not None:
            ids = list(ids)
            if not ids:
                return {}
            query += " WHERE product_id IN (SELECT unnest(?))"
            params = [ids]
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return {r[0]: Item(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows}

    def item_count(self) -> int:
        return self._scalar("SELECT count(*) FROM items")

    def users(self) -> dict[str, dict[str, str]]:
        with self._lock:
            return {u: json.loads(a) for u, a in self._db.execute("SELECT user_id, attributes FROM users").fetchall()}

    def user(self, user_id: str) -> dict[str, str] | None:
        with self._lock:
            rows = self._db.execute("SELECT attributes FROM users WHERE user_id = ?", [user_id]).fetchall()
        return json.loads(rows[0][0]) if rows else None

    def _unknown_items(self, item_ids: pd.Series) -> tuple[int, list[str]]:
        if item_ids.empty or self.item_count() == 0:
            return 0, []
        with self._lock:
            self._db.register("ids", pd.DataFrame({"item_id": item_ids}))
            try:
                n, examples = self._db.execute(
                    "SELECT count(*), list(DISTINCT item_id)[1:5] FROM ids "
                    "WHERE item_id NOT IN (SELECT product_id FROM items)").fetchall()[0]
            finally:
                self._db.unregister("ids")
        return n, sorted(examples or [])

    def _scalar(self, sql: str):
        with self._lock:
            return self._db.execute(sql).fetchall()[0][0]


# -- checking rows ---------------------------------------------------------------------------------

def resolve_columns(header: list[str], mapping: dict[str, str]) -> dict[str, str | None]:
    """Our field -> the file's column, from `mapping` (field=column) or the known names."""
    unknown = set(mapping) - set(EVENT_COLUMNS)
    if unknown:
        raise EventsError(f"--map names no field {', '.join(sorted(unknown))}; fields: {', '.join(EVENT_COLUMNS)}")
    found: dict[str, str | None] = {}
    for field, aliases in EVENT_COLUMNS.items():
        if field in mapping:
            if mapping[field] not in header:
                raise EventsError(f"--map {field}={mapping[field]}: the file has no column {mapping[field]!r} "
                                  f"(columns found: {', '.join(header)})")
            found[field] = mapping[field]
        else:
            found[field] = _find(header, aliases)
    missing = [f for f in REQUIRED if found[f] is None]
    if missing:
        raise EventsError(f"no {' or '.join(missing)} column (columns found: {', '.join(header) or 'none'}); "
                          f"name it with --map, e.g. --map {missing[0]}=COLUMN")
    return found


def validate(rows: pd.DataFrame, unit: str) -> tuple[pd.DataFrame, list[RowProblem]]:
    """Typed good rows, and one problem per bad row (its first problem)."""
    reason = pd.Series("", index=rows.index, dtype=object)

    def flag(mask: pd.Series, why: pd.Series | str) -> None:
        nonlocal reason
        mask = mask & (reason == "")
        reason = reason.mask(mask, why)

    user = rows["user_id"].map(_text)
    item = rows["item_id"].map(_text)
    flag(user == "", "empty user id")
    flag(item == "", "empty item id")
    ts = parse_times(rows["ts"])
    flag(ts.isna(), "unknown date " + rows["ts"].map(lambda v: repr(_text(v))))
    etype = rows["event_type"].map(_text).str.lower().replace("", "purchase")
    flag(~etype.isin(EVENT_TYPES), "unknown event type " + etype.map(repr) + f" (known: {', '.join(EVENT_TYPES)})")
    quantity = pd.to_numeric(rows["quantity"].map(_text).replace("", "1"), errors="coerce")
    flag(quantity.isna(), "quantity " + rows["quantity"].map(lambda v: repr(_text(v))) + " is not a number")
    flag(quantity < 0, "negative quantity " + rows["quantity"].map(_text))
    price_text = rows["price"].map(_text)
    price = pd.to_numeric(price_text.replace("", None), errors="coerce")
    flag(price.isna() & (price_text != ""), "price " + price_text.map(repr) + " is not a number")
    flag(price < 0, "negative price " + price_text)
    basket = rows["basket_id"].map(_text).replace("", None)
    good = reason == ""
    problems = [RowProblem(int(line), why) for line, why in zip(rows["line"][~good], reason[~good])]
    typed = pd.DataFrame({"user_id": user, "item_id": item, "event_type": etype, "ts": ts, "basket_id": basket,
                          "quantity": quantity, "price": price, "line": rows["line"]})[good]
    return typed.reset_index(drop=True), problems


def merge_repeats(good: pd.DataFrame, unit: str) -> tuple[pd.DataFrame, list[RowProblem]]:
    """Rows equal on (user, item, type, time, basket) become one event with their quantities added."""
    if good.empty:
        return good, []
    keyed = good.assign(basket_id=good["basket_id"].fillna(""))
    repeat = keyed.duplicated(KEY, keep="first")
    merged: list[RowProblem] = []
    if repeat.any():
        first_line = keyed.groupby(KEY, sort=False)["line"].transform("first")
        merged = [RowProblem(int(line), f"repeats {unit} {int(first)}: counted in that event's quantity")
                  for line, first in zip(keyed["line"][repeat], first_line[repeat])]
        keyed = keyed.groupby(KEY, sort=False, as_index=False).agg(
            quantity=("quantity", "sum"), price=("price", "first"), line=("line", "first"))
    keyed["basket_id"] = keyed["basket_id"].replace("", None)
    return keyed[["user_id", "item_id", "event_type", "ts", "basket_id", "quantity", "price"]], merged


def parse_times(values: pd.Series) -> pd.Series:
    """ISO dates and times (with or without a zone, kept as UTC) and Unix epochs in s or ms; NaT if neither."""
    text = values.map(_text)
    epoch = text.str.fullmatch(r"\d{9,13}")
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us]")
    if epoch.any():
        n = pd.to_numeric(text[epoch])
        out[epoch] = pd.to_datetime(n.where(n < 1e11, n / 1000), unit="s").astype("datetime64[us]")
    rest = ~epoch & (text != "")
    if rest.any():
        parsed = pd.to_datetime(text[rest], errors="coerce", utc=True, format="mixed")
        out[rest] = parsed.dt.tz_convert(None).astype("datetime64[us]")
    return out


def _find(header: list[str], aliases: Iterable[str]) -> str | None:
    lowered = {h.strip().lower(): h for h in header}
    return next((lowered[a] for a in aliases if a in lowered), None)


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def _attribute_row(table: str, key: str, attrs: dict[str, str]) -> tuple:
    if table == "users":
        return (key, json.dumps(attrs, ensure_ascii=False))
    title = attrs.pop("title", None) or attrs.get("prod_name") or attrs.get("name")
    price = attrs.pop("price", None)
    try:
        price_value = float(price) if price else None
    except ValueError:
        price_value = None
    return (key, title, price_value, attrs.pop("currency", None), attrs.pop("url", None), attrs.pop("image", None),
            json.dumps(attrs, ensure_ascii=False))

