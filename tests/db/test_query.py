"""`forecaster sql`: one statement that reads, and nothing else, on every backend."""

import pytest
from conftest import pg_role_url, reader_url
from helpers import invoke

from forecaster.data.ingest import ingest
from forecaster.db import store
from forecaster.db.query import QueryRefusedError, reading_statement, run_query, split_statements


@pytest.mark.parametrize(
    ("sql", "keywords"),
    [
        ("select 1", ["select"]),
        ("select 1;", ["select"]),
        ("  -- a comment; still a comment\n select ';' ; ", ["select"]),
        ("select 1; delete from prices", ["select", "delete"]),
        ("select 1 /* ; /* nested ; */ ; */ ; vacuum", ["select", "vacuum"]),
        ("select 'it''s; fine'; drop table x", ["select", "drop"]),
        ('select ";" from "a;b"; drop table x', ["select", "drop"]),
        ("select $$;$$, $tag$ ; $$ ; $tag$; delete from prices", ["select", "delete"]),
        ("select E'\\''; delete from prices; --'", ["select", "delete"]),
        ("(select 1) union (select 2)", ["select"]),
        ("select a$b$c from t; delete from t", ["select", "delete"]),
        (";;  ; -- nothing\n", []),
    ],
)
def test_statements_are_split_where_postgresql_splits_them(sql, keywords):
    assert [s.keyword for s in split_statements(sql, "postgresql")] == keywords


def test_sqlite_brackets_are_names_and_its_comments_do_not_nest():
    assert [s.keyword for s in split_statements("select [a;b] from t; attach 'x' as x", "sqlite")] == [
        "select",
        "attach",
    ]
    assert [s.keyword for s in split_statements("select 1 /* /* */ ; delete from t", "sqlite")] == [
        "select",
        "delete",
    ]


@pytest.mark.parametrize(
    ("sql", "said"),
    [
        ("", "the query is empty"),
        ("select 1; select 2", "one statement at a time: the query holds 2"),
        ("delete from prices", "only a question that reads is allowed here (SELECT, WITH, VALUES, TABLE, EXPLAIN"),
        ("'select'", "not 'select'"),
    ],
)
def test_anything_but_one_reading_statement_is_refused_before_it_runs(sql, said):
    with pytest.raises(QueryRefusedError, match=said.replace("(", r"\(").replace(")", r"\)")):
        reading_statement(sql, "postgresql")


ATTACKS = [
    # The reported one: psycopg's simple protocol ran every statement.
    "select count(*) as n from prices; commit; start transaction read write; delete from prices; "
    "drop view latest_predictions; commit",
    "copy (select 1) to program 'touch {marker}'",
    "copy prices to '{marker}'",
    "set session characteristics as transaction read write",
    "set transaction read write",
    "do $$ begin delete from prices; end $$",
    "call wipe()",
    "select pg_read_file('/etc/hostname')",
    "select lo_import('/etc/hostname')",
    "with gone as (delete from prices returning 1) select count(*) from gone",
    "select 1 /* ; */ ; delete from prices",
    "select $$;$$; delete from prices",
    "select E'\\''; delete from prices; --'",
    "explain analyze delete from prices",
    "select nextval('predictions_prediction_id_seq')",
    "select * from prices for update",
    "begin; delete from prices; commit",
    "prepare p as delete from prices",
    "vacuum prices",
    "truncate prices",
    "drop view latest_predictions",
    "select set_config('default_transaction_read_only', 'off', false), count(*) from prices",
]


def _state(pg_url, marker):
    import psycopg
    import sqlalchemy as sa

    url = sa.engine.make_url(pg_url)
    with psycopg.connect(host=url.query["host"], user="postgres", dbname=url.database) as conn:
        return (
            conn.execute("select count(*) from prices").fetchone()[0],
            conn.execute("select count(*) from pg_views where viewname = 'latest_predictions'").fetchone()[0],
            conn.execute("select count(*) from pg_largeobject_metadata").fetchone()[0],
            conn.execute("select count(*) from pg_proc where proname = 'wipe'").fetchone()[0],
            marker.exists(),
        )


def test_no_attack_changes_anything_on_postgresql(pg_url, sample_dir, tmp_path):
    marker = tmp_path / "pwned"
    # The usual setup: the application's own role owns the tables; it is no superuser.
    owner = pg_role_url(pg_url, "app", "ALTER DATABASE {db} OWNER TO {role}", "GRANT ALL ON SCHEMA public TO {role}")
    engine = store.connect(owner)
    ingest(engine, [sample_dir])
    with engine.begin() as conn:
        conn.exec_driver_sql("create procedure wipe() language sql as $$ delete from prices $$")
    before = _state(pg_url, marker)
    assert before == (360, 1, 0, 1, False)
    analyst = reader_url(pg_url)
    for url in (owner, analyst):
        read_only = store.connect(url, read_only=True)
        for attack in ATTACKS:
            try:
                run_query(read_only, attack.format(marker=marker))
            except Exception as exc:  # each must be refused with one of our errors
                assert type(exc).__name__ in ("QueryRefusedError", "StoreError"), (attack, exc)
            assert _state(pg_url, marker) == before, (url, attack)
        read_only.dispose()
    # The database still answers questions.
    assert run_query(store.connect(analyst, read_only=True), "table prices", limit=1)[2] is True


def test_a_postgresql_superuser_is_refused_and_an_analyst_is_not(pg_url, sample_dir):
    ingest(store.connect(pg_url), [sample_dir])
    result = invoke("sql", "select 1", "--db", pg_url)
    assert result.exit_code == 1
    assert result.output.startswith("Error: refusing to run as postgres, a superuser: a query from such a role")
    analyst = invoke("sql", "select count(*) as n from prices", "--db", reader_url(pg_url))
    assert analyst.exit_code == 0 and analyst.output.splitlines()[2].strip() == "360"


def test_sqlite_refuses_the_same_attacks_and_keeps_its_authorizer(db_url, sample_dir, tmp_path, monkeypatch):
    import sqlalchemy as sa

    monkeypatch.chdir(tmp_path)
    ingest(store.connect(db_url), [sample_dir])
    read_only = store.connect(db_url, read_only=True)
    for attack in [
        "select 1; delete from prices",
        "attach database 'x.db' as x",
        "with gone as (delete from prices returning 1) select count(*) from gone",
        "pragma query_only = off",
        "select [x;y] from prices; drop table prices",
        "vacuum into 'x.db'",
    ]:
        with pytest.raises((QueryRefusedError, store.StoreError)):
            run_query(read_only, attack)
    assert run_query(read_only, "select count(*) from prices")[1] == [(360,)]
    assert not (tmp_path / "x.db").exists()
    # Below the statement check, the connection itself still refuses ATTACH.
    with read_only.connect() as conn, pytest.raises(store.DatabaseError, match="not authorized"):
        conn.execute(sa.text("attach database 'x.db' as x"))
