"""Which charting library for the HTML report: the same page (5,000 tickers'
forecasts in the sortable table, 9 ticker charts, the coverage chart) made
three ways, each opened in headless Chromium, offline:

  svg     the shipped page: matplotlib SVGs and a small table script (serving/page.py)
  plotly  the charts as Plotly figures, plotly.js inlined once
  vega    the charts as Vega-Lite specs (Altair), vega + vega-lite + vega-embed inlined (vl-convert's bundle)

Per variant: page weight, seconds to write it in Python, seconds until the
page is loaded with every chart drawn and every table row made, and
seconds to sort the table by a click; timings also as ratios to the
shipped page's, measured in the same run (absolute seconds do not carry
between machines). Needs `pip install -e '.[report-comparison]'` and
Debian's chromium (`make report-comparison` does both).

    python benchmarks/report_page.py [--tickers 5000] [--out benchmarks/report_page.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import machine  # noqa: E402  (benchmarks/machine.py)

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from helpers import offline_chromium  # noqa: E402  (tests/helpers.py: the browser the tests use)

from forecaster import plots  # noqa: E402
from forecaster.serving import page  # noqa: E402
from forecaster.serving.status import Health  # noqa: E402

CHARTS, SESSIONS, REPEATS = 9, 60, 3


def synthetic_night(n_tickers: int, seed: int = 0) -> tuple[page.Night, dict]:
    """A night of `n_tickers` forecasts and the series the charts draw (random walks)."""
    rng = np.random.default_rng(seed)
    dates = _business_days("2017-08-14", SESSIONS)
    forecasts = []
    for i in range(n_tickers):
        last = float(np.exp(rng.normal(3.5, 1.0)))
        sigma = float(np.exp(rng.normal(-4.2, 0.4)))
        forecasts.append(
            {
                "ticker": f"t{i:05d}",
                "as_of": dates[-1],
                "target_date": "2017-11-13",
                "last_close": round(last, 4),
                "predicted_close": last * (1 + rng.normal(0, sigma / 5)),
                "lo80": last * np.exp(-1.28 * sigma),
                "hi80": last * np.exp(1.28 * sigma),
                "lo95": last * np.exp(-1.96 * sigma),
                "hi95": last * np.exp(1.96 * sigma),
                "sessions_behind": 0,
                "model_id": "0" * 64,
                "flags": "out_of_range" if rng.random() < 0.01 else None,
            }
        )
    series = {}
    for i in range(CHARTS):
        closes = 50 * np.exp(np.cumsum(rng.normal(0, 0.015, SESSIONS)))
        predicted = closes * (1 + rng.normal(0, 0.002, SESSIONS))
        width = closes * 0.02
        series[f"t{i:05d}"] = {
            "dates": dates,
            "close": closes.tolist(),
            "predicted_close": predicted.tolist(),
            "lo80": (predicted - width).tolist(),
            "hi80": (predicted + width).tolist(),
            "lo95": (predicted - 1.5 * width).tolist(),
            "hi95": (predicted + 1.5 * width).tolist(),
        }
    coverage = {
        "dates": dates,
        "80%": (0.8 + rng.normal(0, 0.02, SESSIONS)).tolist(),
        "95%": (0.95 + rng.normal(0, 0.01, SESSIONS)).tolist(),
        "ratio": (0.98 + rng.normal(0, 0.01, SESSIONS)).tolist(),
    }
    health = Health(
        at="2017-11-10T23:00:00+00:00",
        owed_session=dates[-1],
        newest_price_date=dates[-1],
        data_lag_sessions=0,
        model_id="0" * 64,
    )
    night = page.Night(
        made_at="2017-11-10T23:00:00+00:00", health=health, failure=None, forecasts=forecasts, report=None, since=None
    )
    return night, {"series": series, "coverage": coverage}


def _business_days(start: str, n: int) -> list[str]:
    day, out = dt.date.fromisoformat(start), []
    while len(out) < n:
        if day.weekday() < 5:
            out.append(day.isoformat())
        day += dt.timedelta(days=1)
    return out


def svg_charts(data: dict) -> tuple[dict[str, str], str]:
    charts = {
        t: plots.ticker_night(t, (s["dates"], s["close"]), {"target_date": s["dates"], **s}, ([], []))
        for t, s in data["series"].items()
    }
    c = data["coverage"]
    return charts, plots.coverage_over_time(c["dates"], {"80%": c["80%"], "95%": c["95%"]}, c["ratio"])


def plotly_charts(data: dict) -> list[str]:
    import plotly.graph_objects as go

    out = []
    for t, s in data["series"].items():
        fig = go.Figure()
        x = s["dates"]
        for lo, hi, alpha in (("lo95", "hi95", 0.12), ("lo80", "hi80", 0.25)):
            fig.add_scatter(x=x, y=s[hi], line={"width": 0}, showlegend=False)
            fig.add_scatter(x=x, y=s[lo], fill="tonexty", fillcolor=f"rgba(31,119,180,{alpha})", line={"width": 0})
        fig.add_scatter(x=x, y=s["predicted_close"], name="predicted")
        fig.add_scatter(x=x, y=s["close"], name="close", line={"color": "black"})
        fig.update_layout(title=t, width=700, height=320)
        out.append(fig)
    c = data["coverage"]
    fig = go.Figure()
    for name in ("80%", "95%"):
        fig.add_scatter(x=c["dates"], y=c[name], name=name)
    out.append(fig)
    return [f.to_html(full_html=False, include_plotlyjs=i == 0) for i, f in enumerate(out)]


def vega_charts(data: dict) -> list[str]:
    import altair as alt
    import pandas as pd
    import vl_convert

    specs = []
    for t, s in data["series"].items():
        frame = pd.DataFrame(
            {"date": s["dates"], **{k: s[k] for k in ("close", "predicted_close", "lo80", "hi80", "lo95", "hi95")}}
        )
        base = alt.Chart(frame).encode(x="date:T")
        chart = (
            base.mark_area(opacity=0.12).encode(y="lo95:Q", y2="hi95:Q")
            + base.mark_area(opacity=0.25).encode(y="lo80:Q", y2="hi80:Q")
            + base.mark_line().encode(y="predicted_close:Q")
            + base.mark_line(color="black").encode(y="close:Q")
        ).properties(title=t, width=600, height=250)
        specs.append(chart.to_dict())
    c = data["coverage"]
    frame = pd.DataFrame({"date": c["dates"], "80%": c["80%"], "95%": c["95%"]}).melt("date")
    specs.append(alt.Chart(frame).mark_line().encode(x="date:T", y="value:Q", color="variable:N").to_dict())
    bundle = vl_convert.javascript_bundle()
    parts = [f"<script>{bundle}</script>"]
    for i, spec in enumerate(specs):
        parts.append(f'<div class="vega" id="vega{i}"></div>')
        parts.append(
            f"<script>vegaEmbed('#vega{i}', {json.dumps(spec)}, {{renderer: 'svg', actions: false}});</script>"
        )
    return parts


def write_variant(kind: str, night: page.Night, data: dict, folder: Path) -> tuple[Path, float]:
    started = time.perf_counter()
    if kind == "svg":
        night.charts, coverage = svg_charts(data)
        night.charts["coverage"] = coverage  # the page draws it under the accuracy, which needs outcomes
        night.chosen_why = {t: "benchmark" for t in night.charts}
        text = page.render(night)
    else:
        night.charts, night.chosen_why = {}, {}
        charts = "".join(plotly_charts(data) if kind == "plotly" else vega_charts(data))
        text = page.render(night).replace("</body>", f'<section id="charts-other">{charts}</section></body>')
    path = folder / f"{kind}.html"
    path.write_text(text)
    return path, time.perf_counter() - started


DRAWN = {  # a script that is true once the page's charts are drawn and its table made
    "svg": "document.querySelectorAll('figure.chart svg').length",
    "plotly": "document.querySelectorAll('.js-plotly-plot .main-svg').length / 2",
    "vega": "document.querySelectorAll('.vega svg').length",
}


def open_in_browser(driver, path: Path, kind: str, n_tickers: int) -> dict:
    loads, sorts = [], []
    for _ in range(REPEATS):
        started = time.perf_counter()
        driver.get(path.as_uri())
        while not (
            driver.execute_script(f"return {DRAWN[kind]}") >= CHARTS + 1
            and driver.execute_script("return document.querySelectorAll('#forecast-table tbody tr').length")
            == n_tickers
        ):
            if time.perf_counter() - started > 120:
                drawn = driver.execute_script(f"return {DRAWN[kind]}")
                raise SystemExit(f"{kind}: not drawn after 120 s ({drawn} charts)")
            time.sleep(0.01)
        loads.append(time.perf_counter() - started)
        heading = driver.find_elements("css selector", "#forecast-table th")[4]
        started = time.perf_counter()
        heading.click()
        driver.execute_script("return document.querySelector('#forecast-table tbody tr').textContent")
        sorts.append(time.perf_counter() - started)
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return {"load_s": statistics.median(loads), "sort_s": statistics.median(sorts), "console_errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickers", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("report_page.json"))
    args = parser.parse_args()
    driver = offline_chromium()
    results = {
        "machine": machine.describe(),
        "calibration": machine.calibrate(),
        "tickers": args.tickers,
        "variants": {},
    }
    try:
        with tempfile.TemporaryDirectory() as folder:
            for kind in ("svg", "plotly", "vega"):
                night, data = synthetic_night(args.tickers)
                path, write_s = write_variant(kind, night, data, Path(folder))
                figures = {
                    "bytes": path.stat().st_size,
                    "write_s": write_s,
                    **open_in_browser(driver, path, kind, args.tickers),
                }
                results["variants"][kind] = figures
                print(
                    f"{kind:7s} {figures['bytes'] / 1e6:6.2f} MB  write {write_s:5.2f} s  "
                    f"load {figures['load_s']:5.2f} s  sort {figures['sort_s']:5.3f} s  "
                    f"console errors {len(figures['console_errors'])}",
                    flush=True,
                )
    finally:
        driver.quit()
    base = results["variants"]["svg"]
    for kind, figures in results["variants"].items():
        figures["vs_svg"] = {k: figures[k] / base[k] for k in ("bytes", "write_s", "load_s", "sort_s")}
        print(f"{kind:7s} vs svg: " + ", ".join(f"{k} {v:.2f}x" for k, v in figures["vs_svg"].items()))
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
