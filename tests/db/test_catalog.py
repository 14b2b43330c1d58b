"""The database described for people: every user-facing column has words,
and Datasette opens the database read-only with the project's metadata,
its canned queries the README's questions."""

import asyncio
import json
import re
from pathlib import Path

import sqlalchemy as sa
from helpers import invoke

from forecaster.db import catalog, schema, store
from forecaster.db.query import run_query

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_table_view_and_user_facing_column_is_described(engine):
    inspector = sa.inspect(engine)
    present = set(inspector.get_table_names()) | set(inspector.get_view_names())
    assert present == set(catalog.USER_FACING) | set(catalog.INTERNAL)
    for name, (_, columns) in catalog.USER_FACING.items():
        actual = [c["name"] for c in inspector.get_columns(name)]
        assert sorted(columns) == sorted(actual), name
    assert set(schema.VIEWS) <= set(catalog.USER_FACING)


def test_the_readme_s_questions_are_the_canned_queries():
    block = re.search(r"```sql\n(.*?)```", README.read_text(), re.S).group(1)
    statements = [" ".join(s.split()) for s in re.sub(r"--[^\n]*", "", block).split(";") if s.strip()]
    canned = {" ".join(sql.replace(":since", "'2017-10-01'").split()) for _, sql in catalog.QUESTIONS.values()}
    assert statements and set(statements) <= canned


def test_datasette_serves_the_database_read_only_with_the_metadata(engine, db_url, tmp_path, shared_data, tiny_model):
    from datasette.app import Datasette

    from forecaster.data.ingest import ingest
    from forecaster.serving.nightly import predict

    ingest(engine, [shared_data])
    predict(engine, tiny_model, device="cpu", start="2017-11-06", end="2017-11-10")
    engine.dispose()  # its WAL checkpointed: -i (immutable) reads the file alone
    metadata = tmp_path / "datasette.json"
    done = invoke("datasette-metadata", metadata, "--db", db_url)
    assert done.exit_code == 0, done.output
    database = Path(db_url.removeprefix("sqlite:///"))

    async def ask():
        ds = Datasette(immutables=[str(database)], metadata=json.loads(metadata.read_text()))
        await ds.invoke_startup()
        name = database.stem
        tomorrow = (await ds.client.get(f"/{name}/tomorrow.json?_shape=array")).json()
        columns = (await ds.client.get(f"/{name}/predictions")).text
        write = await ds.client.get(f"/{name}.json", params={"sql": "delete from prices"})
        tables = (await ds.client.get(f"/{name}.json")).json()
        return tomorrow, columns, write, tables

    tomorrow, page, write, tables = asyncio.run(ask())
    columns, rows, _ = run_query(engine, catalog.QUESTIONS["tomorrow"][1])
    assert [tuple(r[c] for c in columns) for r in tomorrow] == [tuple(r) for r in rows] and rows
    assert catalog.USER_FACING["predictions"][1]["target_date"] in page  # the column's words on its page
    assert write.status_code == 400 and "Statement must be a SELECT" in write.text
    hidden = {t["name"] for t in tables["tables"] if t["hidden"]}
    assert set(catalog.INTERNAL) <= hidden and not hidden & set(catalog.USER_FACING)
    assert store.connect(db_url).connect().execute(sa.text("SELECT COUNT(*) FROM prices")).scalar() > 0


def test_datasette_metadata_needs_an_sqlite_file(tmp_path):
    done = invoke("datasette-metadata", tmp_path / "m.json", "--db", "postgresql://localhost/forecaster")
    assert done.exit_code == 2 and "Datasette opens SQLite files" in done.output
    gone = invoke("datasette-metadata", tmp_path / "m.json", "--db", f"sqlite:///{tmp_path}/none.db")
    assert gone.exit_code == 2 and "no such database file" in gone.output and not (tmp_path / "m.json").exists()
