"""What each table, view and column holds, in words, and the questions users
ask of them: for people browsing the database (Datasette's metadata file,
`forecaster datasette-metadata`), beside the schema they describe.

A test checks that every column of the user-facing tables and views is
described here, so a new column cannot go undescribed.
"""

from __future__ import annotations

PRICE = "in the file's currency units"

# table or view -> (what it holds, {column: what it holds})
USER_FACING: dict[str, tuple[str, dict[str, str]]] = {
    "prices": (
        "Daily OHLC prices as ingested, one row per ticker and date; never overwritten by a plain ingest.",
        {
            "ticker": "Lower-cased file name up to its first dot (aaxj for aaxj.us.txt).",
            "date": "Trading day, YYYY-MM-DD.",
            "open": f"Opening price, {PRICE}.",
            "high": f"High of the day, {PRICE}.",
            "low": f"Low of the day, {PRICE}.",
            "close": f"Closing price, {PRICE}: what is forecast.",
            "volume": "Shares traded (NULL when the file has no Volume column).",
        },
    ),
    "rejected_rows": (
        "Every input row set aside by an ingest, with why; the good rows of the same file went in.",
        {
            "rejection_id": "Row number of this table.",
            "source": "The file the row came from.",
            "line": "Its line in the file (NULL when the whole file could not be read).",
            "ticker": "The file's ticker.",
            "raw": "The line as it was read.",
            "reason": "Why it was set aside, in one sentence.",
            "rejected_at": "When (UTC, ISO 8601).",
        },
    ),
    "price_flags": (
        "Closes that moved too far to be true, stored all the same and left out of training by default.",
        {
            "ticker": "The ticker.",
            "date": "The day of the flagged close.",
            "kind": "split (ratio near 2, 3, 4, 5, 10 or an inverse, opened at the new level), bad_print "
            "(a far move reverted within two rows), revert (the day it came back) or jump (any other far move).",
            "ratio": "This close over the previous one.",
            "detected_at": "When it was judged (UTC).",
        },
    ),
    "models": (
        "Every model that scored or was registered; status is the registry's.",
        {
            "model_id": "sha256 of the ONNX file: the model's identity.",
            "path": "Where the file was when it was registered.",
            "created_at": "When it was first seen (UTC).",
            "metadata": "The ONNX file's metadata (JSON): settings, tickers, scaling, held-out figures.",
            "status": "champion, challenger, retired or rejected (NULL: only ever named by path).",
            "promoted_at": "When it became the champion (UTC).",
        },
    ),
    "promotions": (
        "Every gate decision: promoted or rejected, why, with the figures.",
        {
            "promotion_id": "Order of the decisions.",
            "decided_at": "When (UTC).",
            "model_id": "The model judged.",
            "previous_model_id": "The champion it was judged against.",
            "decision": "promoted or rejected.",
            "reason": "Why, in words.",
            "metrics": "JSON: each candidate's RMSE, naive's, n, on the gate days.",
            "after_run_id": "The newest run when decided: the runs after it serve the new champion.",
        },
    ),
    "runs": (
        "One row per night scored (and per challenger scored beside it).",
        {
            "run_id": "Order of the runs.",
            "started_at": "When it started (UTC).",
            "finished_at": "When it committed or failed (UTC).",
            "status": "running, succeeded or failed.",
            "as_of": "The date scored: the last close the model saw.",
            "model_id": "The model that scored.",
            "device": "cpu or cuda: where ONNX Runtime ran.",
            "n_predictions": "Predictions this run added (a rerun adds none).",
            "message": "What happened: stale, skipped, late and flagged tickers by name, or the error.",
            "host": "The machine.",
            "pid": "Its process id.",
            "shard": "K/N when only shard K of N tickers was scored.",
            "shadow_of": "For a challenger's shadow run: the champion's run it was scored beside.",
        },
    ),
    "predictions": (
        "Every next-day prediction written, served or in the shadows.",
        {
            "prediction_id": "Row number.",
            "run_id": "The run that wrote it.",
            "model_id": "The model that made it.",
            "ticker": "The ticker.",
            "as_of": "The date of the last close the model saw.",
            "target_date": "The next session on the exchange calendar: the close predicted.",
            "predicted_close": f"The predicted close, {PRICE}.",
            "last_close": "The close on as_of: the naive forecast.",
            "flags": "out_of_range (the window moved further than anything in training), flagged_prices "
            "(the window holds a flagged price).",
            "lo80": "Lower end of the 80% interval.",
            "hi80": "Upper end of the 80% interval.",
            "lo95": "Lower end of the 95% interval.",
            "hi95": "Upper end of the 95% interval.",
        },
    ),
    "latest_predictions": (
        "The newest served prediction per ticker: what is predicted for the next session.",
        {
            "ticker": "The ticker.",
            "as_of": "The date of the last close the model saw.",
            "target_date": "The session predicted.",
            "predicted_close": "The predicted close.",
            "lo80": "Lower end of the 80% interval.",
            "hi80": "Upper end of the 80% interval.",
            "lo95": "Lower end of the 95% interval.",
            "hi95": "Upper end of the 95% interval.",
            "last_close": "The close on as_of: the naive forecast.",
            "model_id": "The model that served it.",
            "run_id": "The run that wrote it.",
            "flags": "out_of_range, flagged_prices (see predictions).",
            "sessions_behind": "Sessions stored after its as_of (0: current); tickers more than 5 behind drop out.",
        },
    ),
    "prediction_outcomes": (
        "Each prediction with the next close stored after its as_of (NULL until that day arrives).",
        {
            "prediction_id": "The prediction.",
            "ticker": "The ticker.",
            "as_of": "The date of the last close the model saw.",
            "target_date": "The session predicted.",
            "predicted_close": "The predicted close.",
            "last_close": "The close on as_of: the naive forecast.",
            "actual_date": "The date of the next close stored.",
            "actual_close": "That close.",
            "error": "predicted_close - actual_close.",
            "naive_error": "last_close - actual_close: the naive forecast's error.",
            "lo80": "Lower end of the 80% interval.",
            "hi80": "Upper end of the 80% interval.",
            "lo95": "Lower end of the 95% interval.",
            "hi95": "Upper end of the 95% interval.",
            "in80": "1 when the actual close fell inside the 80% interval, 0 outside, NULL before it is known.",
            "in95": "The same for the 95% interval.",
            "model_id": "The model that made it.",
            "run_id": "The run that wrote it.",
            "flags": "out_of_range, flagged_prices (see predictions).",
            "served": "1 for the prediction that was served, 0 for a challenger's shadow or a model scored aside.",
        },
    ),
    "model_scoreboard": (
        "Per model, on its own outcomes: accuracy against naive and interval coverage.",
        {
            "model_id": "The model.",
            "status": "Its registry status.",
            "n": "Outcomes.",
            "rmse": "Root mean squared error, in price units.",
            "mae": "Mean absolute error.",
            "naive_rmse": "The naive forecast's RMSE on the same outcomes.",
            "ratio": "rmse / naive_rmse (below 1 beats naive).",
            "coverage80": "Share of outcomes inside the 80% interval.",
            "coverage95": "Share inside the 95% interval.",
            "first_as_of": "Its first as_of with an outcome.",
            "last_as_of": "Its last.",
        },
    ),
}

# Bookkeeping: described, hidden from the table list.
INTERNAL: dict[str, str] = {
    "schema_info": "The schema's version (upgraded in place).",
    "price_dates": "Dates with prices and how many rows each: a cheap index of the calendar as stored.",
    "tickers": "Per ticker: first and last date, rows, and how far its prices were judged for flags.",
    "price_revisions": "The values a vendor revision (ingest --revise) replaced or removed.",
    "source_files": "The ingest's ledger: each file's size, lines and tail hash, so unchanged files are skipped.",
    "calendar_sessions": "Exchange sessions copied from exchange_calendars.",
    "calendar_coverage": "Which ranges of which calendar are copied.",
}

# The questions of the README, as Datasette's canned queries (name -> title, SQL;
# :since is a form field: the README's query has a date there). Served
# predictions only: a challenger's shadow predictions are not what was served.
QUESTIONS: dict[str, tuple[str, str]] = {
    "tomorrow": (
        "What is predicted for the next trading day",
        "select ticker, target_date, predicted_close, last_close from latest_predictions where sessions_behind = 0",
    ),
    "last_month": (
        "How good were the predictions since a date (YYYY-MM-DD), against naive",
        "select ticker, count(*) n, avg(abs(error)) mae, avg(abs(naive_error)) naive_mae\n"
        "from prediction_outcomes where actual_close is not null and served = 1 and as_of >= :since group by ticker",
    ),
    "coverage": (
        "How often the intervals held",
        "select avg(in80) coverage80, avg(in95) coverage95 from prediction_outcomes\n"
        "where in80 is not null and served = 1",
    ),
    "which_model": (
        "Which model made the predictions, and how it did",
        "select model_id, status, n, ratio, coverage80, coverage95, first_as_of, last_as_of from model_scoreboard",
    ),
}


def datasette_metadata(database: str) -> dict:
    """Datasette's metadata for the database called `database` (Datasette
    names it after the file: forecaster for forecaster.db)."""
    tables = {name: {"description": what, "columns": columns} for name, (what, columns) in USER_FACING.items()}
    tables.update({name: {"description": what, "hidden": True} for name, what in INTERNAL.items()})
    return {
        "title": "forecaster",
        "description": "Next-day close forecasts with their 80% and 95% intervals, and how they held.",
        "databases": {
            database: {
                "tables": tables,
                "queries": {name: {"title": title, "sql": sql} for name, (title, sql) in QUESTIONS.items()},
            }
        },
    }
