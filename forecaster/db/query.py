"""Read-only SQL questions against the store (what `forecaster sql` runs).

A question may read and nothing else, guarded at four levels, each of which
would stop a write on its own:

1. One statement, and one that reads: the text is split into statements by
   a lexer that knows strings, quoted names, comments and PostgreSQL's
   dollar quotes, and the one statement must start with a reading keyword
   (SELECT, WITH, VALUES, EXPLAIN; TABLE and SHOW on PostgreSQL; SQLite's
   pragmas read as `select * from pragma_table_info('prices')`). COPY, DO,
   CALL, SET, PRAGMA and the rest are refused before anything reaches the
   database.
2. The database itself refuses writes: SQLite opened mode=ro with
   query_only and ATTACH denied; PostgreSQL in a READ ONLY transaction,
   checked to be still read-only after the statement, before any row is
   fetched, and rolled back.
3. PostgreSQL runs the statement through the extended protocol (a prepared
   statement), which cannot carry a second command: the server refuses
   `select 1; delete ...` even if the lexer were fooled.
4. A PostgreSQL role that can reach the server's files or programs (a
   superuser, or a member of pg_read_server_files, pg_write_server_files or
   pg_execute_server_program) is refused: from such a role a "read" such as
   pg_read_file() or lo_export() leaves the database. Analysts connect as a
   role that can only read (docs/operations.md, "A read-only role").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa

from ..errors import DatabaseError, ForecasterError, StoreError, first_line
from .config import SQL_ROW_LIMIT

READING_KEYWORDS = {
    "sqlite": ("select", "with", "values", "explain"),
    "postgresql": ("select", "with", "values", "table", "explain", "show"),
}
# Roles whose reads can reach beyond the database (server files, programs).
POWERFUL_ROLES = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program")


class QueryRefusedError(ForecasterError):
    """The text is not one statement that only reads."""


@dataclass(frozen=True)
class Statement:
    text: str  # its source text, comments kept, without the closing semicolon
    keyword: str  # its first word, lower-case ("" when it starts with something else)


_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")
_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9$]*")


def split_statements(sql: str, dialect: str = "postgresql") -> list[Statement]:
    """The statements of `sql`, split at the semicolons that are not inside a
    string, a quoted name, a comment or a dollar-quoted body; statements of
    nothing but comments and blanks are dropped."""
    statements: list[Statement] = []
    start, i, n = 0, 0, len(sql)
    keyword, meaningful = None, False

    def close(end: int) -> None:
        if meaningful:
            statements.append(Statement(sql[start:end].strip(), keyword or ""))

    while i < n:
        c = sql[i]
        if sql.startswith("--", i):
            newline = sql.find("\n", i)
            i = n if newline < 0 else newline + 1
            continue
        if sql.startswith("/*", i):
            i = _end_of_block_comment(sql, i, nested=dialect == "postgresql")
            continue
        if c == ";":
            close(i)
            start, i, keyword, meaningful = i + 1, i + 1, None, False
            continue
        if c.isspace():
            i += 1
            continue
        if keyword is None:
            word = _WORD.match(sql, i)
            keyword = word.group(0).lower() if word else ("" if c != "(" else None)
        meaningful = True
        if c in "'\"`" or (c == "[" and dialect == "sqlite"):
            escapes = c == "'" and dialect == "postgresql" and _is_escape_string(sql, i)
            i = _end_of_quoted(sql, i, "]" if c == "[" else c, backslash=escapes)
        elif c == "$" and dialect == "postgresql" and not (i and (sql[i - 1].isalnum() or sql[i - 1] in "_$")):
            tag = _DOLLAR_TAG.match(sql, i)
            if tag:
                end = sql.find(tag.group(0), tag.end())
                i = n if end < 0 else end + len(tag.group(0))
            else:
                i += 1
        else:
            word = _WORD.match(sql, i)
            i = word.end() if word else i + 1
    close(n)
    return statements


def _end_of_block_comment(sql: str, i: int, *, nested: bool) -> int:
    depth, i = 1, i + 2
    while i < len(sql) and depth:
        if nested and sql.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
        else:
            i += 1
    return i


def _is_escape_string(sql: str, quote: int) -> bool:
    """PostgreSQL's E'...' (backslash escapes), not a name ending in e."""
    return (
        quote > 0
        and sql[quote - 1] in "eE"
        and not (quote > 1 and (sql[quote - 2].isalnum() or sql[quote - 2] in "_$"))
    )


def _end_of_quoted(sql: str, i: int, closing: str, *, backslash: bool) -> int:
    """The index after the quote that closes the one at i (a doubled quote is part of the text)."""
    i += 1
    while i < len(sql):
        if backslash and sql[i] == "\\":
            i += 2
        elif sql[i] == closing:
            if closing != "]" and sql.startswith(closing * 2, i):
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return i


def reading_statement(sql: str, dialect: str) -> Statement:
    """The one reading statement of `sql`; QueryRefusedError says why it is not."""
    statements = split_statements(sql, dialect)
    if not statements:
        raise QueryRefusedError("the query is empty")
    if len(statements) > 1:
        raise QueryRefusedError(f"one statement at a time: the query holds {len(statements)} (split at ';')")
    statement = statements[0]
    allowed = READING_KEYWORDS.get(dialect, READING_KEYWORDS["sqlite"])
    if statement.keyword not in allowed:
        said = statement.keyword.upper() or statement.text[:20]
        raise QueryRefusedError(
            f"only a question that reads is allowed here ({', '.join(k.upper() for k in allowed)}), not {said}"
        )
    return statement


def run_query(engine: sa.Engine, query: str, *, limit: int = SQL_ROW_LIMIT) -> tuple[list[str], list[tuple], bool]:
    """(column names, up to `limit` rows, whether more rows exist) of one
    reading statement. The transaction is always rolled back."""
    dialect = engine.dialect.name
    statement = reading_statement(query, dialect)
    with engine.connect() as conn:
        try:
            cursor = conn.connection.dbapi_connection.cursor()
            try:
                if dialect == "postgresql":
                    cursor.execute("SET TRANSACTION READ ONLY")  # first: it must come before any query
                    _refuse_powerful_roles(cursor)
                    cursor.execute(statement.text, prepare=True)  # extended protocol: one command only
                    _check_still_read_only(conn)
                else:
                    cursor.execute(statement.text)
                if cursor.description is None:
                    raise StoreError("only queries that return rows are allowed here")
                columns = [d[0] for d in cursor.description]
                rows = [tuple(r) for r in cursor.fetchmany(limit + 1)]
            except conn.dialect.loaded_dbapi.Error as exc:
                raise StoreError(f"query failed: {first_line(exc)}") from exc
            finally:
                cursor.close()
        except DatabaseError as exc:
            raise StoreError(f"query failed: {exc.reason}") from exc
        finally:
            conn.rollback()
    return columns, rows[:limit], len(rows) > limit


def _refuse_powerful_roles(cursor) -> None:
    cursor.execute(
        "SELECT current_user, rolsuper, "
        + ", ".join(f"pg_has_role(current_user, '{role}', 'MEMBER')" for role in POWERFUL_ROLES)
        + " FROM pg_roles WHERE rolname = current_user"
    )
    found = cursor.fetchone()
    if found is None:
        return
    user, superuser, *memberships = found
    powers = (["a superuser"] if superuser else []) + [
        f"a member of {role}" for role, member in zip(POWERFUL_ROLES, memberships, strict=True) if member
    ]
    if powers:
        raise QueryRefusedError(
            f"refusing to run as {user}, {powers[0]}: a query from such a role can read and write the "
            "server's files and run its programs; connect as a role that can only read "
            '(docs/operations.md, "A read-only role for analysts")'
        )


def _check_still_read_only(conn: sa.Connection) -> None:
    """Before any row is fetched: the statement must not have left the read-only transaction."""
    check = conn.connection.dbapi_connection.cursor()
    try:
        check.execute("SELECT current_setting('transaction_read_only')")
        if check.fetchone()[0] != "on":
            raise QueryRefusedError("the statement left the read-only transaction: nothing fetched, rolled back")
    finally:
        check.close()
