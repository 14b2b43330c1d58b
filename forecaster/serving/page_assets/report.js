// The forecasts table: built from the JSON beside it, sorted by a click on a
// heading, filtered by what is typed. Plain DOM: no library, no network.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("forecast-data").textContent);
  const table = document.getElementById("forecast-table");
  const head = table.tHead, body = table.tBodies[0];
  const filter = document.getElementById("filter"), shown = document.getElementById("shown");
  const more = document.getElementById("show-all");
  const keys = data.columns.map((c) => c[0]);
  const PAGE = 250;  // rows laid out at once: laying out thousands takes seconds
  let sortKey = "ticker", ascending = true, limit = PAGE;

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

  // Each row's element is made once; sorting reorders them, filtering hides
  // them, and only the first PAGE matches are shown until "show all".
  const rows = data.rows.map((r) => {
    const tr = document.createElement("tr");
    for (const key of keys) {
      const td = document.createElement("td");
      td.textContent = r[key] === null ? "" : r[key];
      tr.appendChild(td);
    }
    return { data: r, element: tr, text: (r.ticker + " " + r.flags).toLowerCase() };
  });

  function draw() {
    const needle = filter.value.trim().toLowerCase();
    rows.sort((a, b) => compare(a.data, b.data));
    const fragment = document.createDocumentFragment();
    let matching = 0;
    for (const row of rows) {
      const keep = !needle || row.text.includes(needle);
      matching += keep;
      row.element.hidden = !keep || matching > limit;
      fragment.appendChild(row.element);
    }
    body.replaceChildren(fragment);
    for (const th of headRow.cells) {
      th.setAttribute("aria-sort", th.dataset.key === sortKey ? (ascending ? "ascending" : "descending") : "none");
    }
    shown.textContent =
      `${matching} of ${data.rows.length} tickers` + (matching > limit ? ` (the first ${limit} shown)` : "");
    more.hidden = matching <= limit;
  }

  filter.addEventListener("input", draw);
  more.addEventListener("click", () => {
    limit = Infinity;
    draw();
  });
  draw();
})();
