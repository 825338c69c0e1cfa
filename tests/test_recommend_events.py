"""The events store: bad files and rows are each reported with their line and reason, nothing else is lost,
and importing again adds nothing."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pytest

from toolkit.recommend.errors import EventsError
from toolkit.recommend.events import EventStore
from toolkit.recommend.records import Event
from toolkit.recommend.sources import read_source


@pytest.fixture
def store(tmp_path):
    s = EventStore(tmp_path / "events.duckdb")
    yield s
    s.close()


def write(tmp_path, text: str, name: str = "events.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_zero_byte_file_is_refused_with_its_name(tmp_path, store):
    with pytest.raises(EventsError, match=r"empty\.csv is empty \(0 bytes\): nothing imported"):
        read_source(write(tmp_path, "", "empty.csv"))


def test_a_missing_column_names_the_columns_found_and_the_fix(tmp_path, store):
    source = read_source(write(tmp_path, "customer_id,t_dat\nu1,2020-01-01\n"))
    with pytest.raises(EventsError, match=r"no item_id column \(columns found: customer_id, t_dat\); "
                                          r"name it with --map, e.g. --map item_id=COLUMN"):
        store.import_events(source)
    assert store.count() == 0


def test_hm_columns_are_found_without_a_mapping_and_other_names_with_one(tmp_path, store):
    hm = write(tmp_path, "t_dat,customer_id,article_id,price,sales_channel_id\n"
                         "2020-09-01,c1,0108775015,0.02,2\n", "hm.csv")
    assert store.import_events(read_source(hm)).added == 1
    other = write(tmp_path, "who,what,when\nc2,p9,2020-09-02T10:00:00Z\n", "other.csv")
    report = store.import_events(read_source(other), {"user_id": "who", "item_id": "what", "ts": "when"})
    assert report.added == 1
    row = store.frame().iloc[-1]
    assert (row.user_id, row.item_id, row.ts) == ("c2", "p9", datetime(2020, 9, 2, 10))
    with pytest.raises(EventsError, match="the file has no column 'nope'"):
        store.import_events(read_source(other), {"user_id": "nope"})


def test_bad_rows_are_named_with_line_and_reason_and_good_ones_kept(tmp_path, store):
    path = write(tmp_path,
                 "user_id,item_id,timestamp,event_type,quantity,price\n"
                 "u1,p1,2024-01-01,purchase,1,10\n"          # line 2: good
                 "u1,p2,yesterday,purchase,1,10\n"           # 3: bad date
                 ",p3,2024-01-01,purchase,1,10\n"            # 4: empty user
                 "u2,p1,2024-01-02,purchase,-2,10\n"         # 5: negative quantity
                 "u2,p4,2024-01-02,click,1,10\n"             # 6: unknown type
                 "u2,p5,2024-01-02,,,\n"                     # 7: good: purchase, quantity 1
                 "u3,p6,1704153600,view,1,abc\n"             # 8: bad price
                 "u3,p6,1704153600000,view,1,\n")            # 9: good: epoch in ms
    report = store.import_events(read_source(path))
    assert [(p.line, p.reason) for p in report.bad] == [
        (3, "unknown date 'yesterday'"), (4, "empty user id"), (5, "negative quantity -2"),
        (6, "unknown event type 'click' (known: view, cart, purchase)"), (8, "price 'abc' is not a number")]
    assert report.added == 3 and report.rows == 8
    events = store.frame(types=("purchase", "view"))
    assert sorted(events["item_id"]) == ["p1", "p5", "p6"]
    assert events.set_index("item_id").loc["p6", "ts"] == datetime(2024, 1, 2)


def test_repeated_rows_become_one_event_with_their_quantity_and_are_listed(tmp_path, store):
    path = write(tmp_path, "customer_id,article_id,t_dat\nc1,a1,2020-01-01\nc1,a1,2020-01-01\nc1,a2,2020-01-01\n"
                           "c1,a1,2020-01-01\n")
    report = store.import_events(read_source(path))
    assert report.added == 2
    assert [(p.line, p.reason) for p in report.merged] == [
        (3, "repeats line 2: counted in that event's quantity"), (5, "repeats line 2: counted in that event's quantity")]
    assert store.frame().set_index("item_id").loc["a1", "quantity"] == 3


def test_importing_again_adds_nothing_and_an_overlapping_file_only_what_is_new(tmp_path, store):
    first = write(tmp_path, "customer_id,article_id,t_dat\nc1,a1,2020-01-01\nc1,a2,2020-01-01\n", "a.csv")
    assert store.import_events(read_source(first)).added == 2
    again = store.import_events(read_source(first))
    assert (again.added, again.already_stored) == (0, 2)
    more = write(tmp_path, "customer_id,article_id,t_dat\nc1,a2,2020-01-01\nc2,a1,2020-01-03\n", "b.csv")
    report = store.import_events(read_source(more))
    assert (report.added, report.already_stored, store.count()) == (1, 1, 3)


def test_unknown_products_are_kept_and_counted_with_examples(tmp_path, store):
    store.import_items(read_source(write(tmp_path, "article_id,prod_name\na1,Top\n", "items.csv")))
    report = store.import_events(read_source(write(tmp_path, "customer_id,article_id,t_dat\n"
                                                             "c1,a1,2020-01-01\nc1,zz,2020-01-01\nc2,zz,2020-01-02\n")))
    assert (report.added, report.unknown_items, report.unknown_examples) == (3, 2, ["zz"])


def test_parquet_files_are_read_with_row_numbers(tmp_path, store):
    path = tmp_path / "events.parquet"
    duckdb.connect().execute(
        f"COPY (SELECT * FROM (VALUES ('c1', 'a1', DATE '2020-01-01'), ('c2', 'a2', NULL)) t(customer_id, article_id, t_dat)) "
        f"TO '{path}' (FORMAT parquet)")
    report = store.import_events(read_source(path))
    assert report.added == 1 and [(p.line, p.reason) for p in report.bad] == [(2, "unknown date ''")]


def test_a_header_only_file_imports_nothing_and_says_so(tmp_path, store):
    report = store.import_events(read_source(write(tmp_path, "customer_id,article_id,t_dat\n")))
    assert report.added == 0 and report.notes == [f"{tmp_path / 'events.csv'} has a header but no rows"]


def test_users_and_items_import_update_in_place(tmp_path, store):
    users = write(tmp_path, "customer_id,age,FN\nc1,23,1\nc2,,\n,40,\n", "users.csv")
    report = store.import_users(read_source(users))
    assert report.added == 2 and [(p.line, p.reason) for p in report.bad] == [(4, "empty customer_id")]
    assert store.user("c1") == {"age": "23", "FN": "1"} and store.user("c2") == {}
    store.import_users(read_source(write(tmp_path, "customer_id,age\nc1,24\n", "users2.csv")))
    assert store.user("c1") == {"age": "24"} and store.user("nobody") is None
    items = write(tmp_path, "article_id,prod_name,price,product_code\na1,Strap top,9.99,0108775\n", "items.csv")
    store.import_items(read_source(items))
    item = store.items(["a1"])["a1"]
    assert (item.title, item.price, item.attributes["product_code"]) == ("Strap top", 9.99, "0108775")
    with pytest.raises(EventsError, match="has no nope column"):
        store.import_items(read_source(items), id_column="nope")


def test_events_posted_one_by_one_are_checked_like_rows(store):
    good = Event("u1", "p1", datetime(2024, 1, 1, 12))
    report = store.add_events([good, Event("u1", "p2", datetime(2024, 1, 1), quantity=-1), good])
    assert report.added == 1
    assert [(p.line, p.reason) for p in report.bad] == [(2, "negative quantity -1")]
    assert [p.line for p in report.merged] == [3]
    assert store.add_events([good]).already_stored == 1


def test_a_second_process_holding_the_database_is_a_clear_error(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "locked.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb,time; c=duckdb.connect({str(path)!r}); "
                               "print('ready', flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        from toolkit.recommend.errors import EventsLocked

        with pytest.raises(EventsLocked, match="another toolkit process"):
            EventStore(path)
    finally:
        holder.kill()
        holder.wait()
