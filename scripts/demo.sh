#!/usr/bin/env bash
# The whole story on synthetic data the project makes itself (no downloads):
# sample data -> ingest -> train -> export -> verify -> nightly predictions -> SQL and report
# -> a champion and one gated retrain.
set -euo pipefail
out=${1:-demo}
fc=".venv/bin/forecaster"
export FORECASTER_DB="sqlite:///$out/forecaster.db"
rm -rf "$out"; mkdir -p "$out"

echo "== 1. sample data (8 tickers, 1000 business days, AR(1) returns: there is something to learn)"
$fc sample-data "$out/data" --n-tickers 8 --days 1000 --seed 0 --ar 0.3
echo "== 2. ingest";  $fc ingest "$out/data" --quiet
echo "== 3. train one model on all tickers (30 epochs for a quick demo; the default is 100)"
$fc train --all --epochs 30 --out "$out/exports/demo.pt" --quiet
echo "== 4. export to ONNX (checked against torch) and verify against the NumPy LSTM equations"
$fc export "$out/exports/demo.pt"
$fc verify "$out/exports/demo.onnx"
echo "== 5. nightly predictions: a backfill of the last weeks, then tonight's run"
$fc predict --model "$out/exports/demo.onnx" --from 2017-10-16 --to 2017-11-09 --quiet | tail -n 2
# The sample's last day is "tonight" (exit codes judge --as-of's session, not today's).
last_day=$($fc sql "select max(date) as d from prices" --format csv | tail -1)
$fc predict --model "$out/exports/demo.onnx" --as-of "$last_day"
echo "== 6. what is predicted for the next trading day"
$fc sql "select ticker, as_of, target_date, round(predicted_close, 4) as predicted, last_close from latest_predictions"
echo "== 7. how good were the stored predictions"
$fc report --plot "$out/report.png"
echo "== 8. keeping the model fresh: the demo model becomes the champion; a challenger trained"
echo "      without the last 60 sessions is judged on them against champion and naive"
$fc promote "$out/exports/demo.onnx" --reason "first model"
$fc retrain --gate-days 60 --models-dir "$out/exports" --quiet
$fc predict --model champion --as-of "$last_day" --quiet
$fc models
$fc sql "select decided_at, decision, reason from promotions"
echo "== 9. is it healthy? (judged on the evening of the sample's last day; exit 0 healthy, 3 degraded)"
$fc status --at "${last_day}T23:00" --metrics-file "$out/forecaster.prom" || echo "(status exit $?)"
echo "== 10. the night as a page for a browser, and a screenshot of it"
$fc report --html "$out/report.html" --at "${last_day}T23:00"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2000 \
  --screenshot="$out/report-screenshot.png" "file://$(realpath "$out/report.html")" 2>/dev/null
echo "open $out/report.html in a browser (screenshot: $out/report-screenshot.png)"
