#!/usr/bin/env bash
# The whole story on synthetic data the project makes itself (no downloads):
# sample data -> ingest -> what is in the database.
set -euo pipefail
out=${1:-demo}
fc=".venv/bin/forecaster"
export FORECASTER_DB="sqlite:///$out/forecaster.db"
rm -rf "$out"; mkdir -p "$out"

echo "== 1. sample data"; $fc sample-data "$out/data" --tickers 8 --days 1000 --seed 0
echo "== 2. ingest";      $fc ingest "$out/data"
echo "== 3. the database"
$fc sql "select * from tickers"
$fc sql "select count(*) as price_rows, (select count(*) from rejected_rows) as rejected from prices"
