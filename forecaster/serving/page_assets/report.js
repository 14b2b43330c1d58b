// The forecasts table: built from the JSON beside it, sorted by a click on a
// heading, filtered by what is typed. Plain DOM: no library, no network.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("forecast-data").textContent);
  const table = document.getElementById("forecast-table");
  const head = table.tHead, body = table.tBodies[0];
  const filter = document.getElementById("filter"), shown = document.getElementById("shown");
  const keys = data.columns.map((c) => c[0]);
  let sortKey = "ticker", ascending = true;

  const headRow = head.insertRow();
  data.columns.forEach(([key, label]) => {
    const th = document.createElement("th");
    th.textContent = label;
    th.dataset.key = key;
    th.addEventListener("click", () => {
      ascending = sortKey === key ? !ascending : true;
      sortKey = key;
      draw();
    });
    headRow.appendChild(th);
  });

  function compare(a, b) {
    const x = a[sortKey], y = b[sortKey];
    if (x === y) return 0;
    if (x === null || x === "") return 1;  // blanks last, either way
    if (y === null || y === "") return -1;
    const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return ascending ? order : -order;
  }

  function draw() {
    const needle = filter.value.trim().toLowerCase();
    const rows = data.rows
      .filter((r) => !needle || r.ticker.toLowerCase().includes(needle) || r.flags.toLowerCase().includes(needle))
      .sort(compare);
    const fragment = document.createDocumentFragment();
    for (const r of rows) {
      const tr = document.createElement("tr");
      for (const key of keys) {
        const td = document.createElement("td");
        td.textContent = r[key] === null ? "" : r[key];
        tr.appendChild(td);
      }
      fragment.appendChild(tr);
    }
    body.replaceChildren(fragment);
    for (const th of headRow.cells) {
      th.setAttribute("aria-sort", th.dataset.key === sortKey ? (ascending ? "ascending" : "descending") : "none");
    }
    shown.textContent = `${rows.length} of ${data.rows.length} tickers`;
  }

  filter.addEventListener("input", draw);
  draw();
})();
