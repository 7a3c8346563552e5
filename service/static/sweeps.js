// The sweeps list: polled every 2 s (GET /sweeps), filtered by status, a page of 100 at a time.
"use strict";
const PAGE = 100;
let offset = 0;
let atNewest = true; // follow the newest page as sweeps are added

async function refresh() {
  const status = document.getElementById("status-filter").value;
  const query = new URLSearchParams({ limit: PAGE, offset });
  if (status) query.set("status", status);
  const error = document.getElementById("error");
  let answer;
  try {
    answer = await wd.api(`/sweeps?${query}`);
  } catch (e) {
    error.textContent = `The server did not answer (${e.message}); retrying.`;
    error.hidden = false;
    return;
  }
  if (!answer.ok) {
    error.textContent = wd.problem(answer.body);
    error.hidden = false;
    return;
  }
  error.hidden = true;
  const { data, count } = answer.body;
  if (atNewest && offset + PAGE < count) {
    newest(count);
    return refresh();
  }
  const rows = [...data].reverse().map((s) => {
    const finished = (s.counts.completed || 0) + (s.counts.diverged || 0) + (s.counts.failed || 0);
    const bar = wd.el("div", { class: "progress", title: Object.entries(s.counts).map(([k, v]) => `${k} ${v}`).join(", ") },
      wd.el("div", { style: `width: ${(100 * s.progress).toFixed(1)}%` }));
    return wd.el("tr", { "data-id": s.id },
      wd.el("td", {}, String(s.id)),
      wd.el("td", {}, wd.el("a", { href: `/ui/sweeps/${s.id}` }, s.name)),
      wd.el("td", {}, wd.el("span", { class: `badge ${s.status}` }, s.status)),
      wd.el("td", { class: "progress-cell" }, bar, wd.el("span", { class: "muted" }, `${finished}/${s.n_cells}`)),
      wd.el("td", {}, String(s.n_cells)),
      wd.el("td", {}, s.status === "running" ? wd.duration(s.eta_s) : "–"),
      wd.el("td", {}, wd.when(s.created_at)),
      wd.el("td", {}, wd.duration(s.elapsed_s)));
  });
  document.querySelector("#sweeps tbody").replaceChildren(...rows);
  document.getElementById("empty").hidden = count > 0 || Boolean(status);
  document.getElementById("count").textContent = `${count} sweep${count === 1 ? "" : "s"}`;
  // the API pages by id ascending; the newest page is the last one
  document.getElementById("prev").disabled = offset + PAGE >= count;
  document.getElementById("next").disabled = offset === 0;
  document.getElementById("prev").hidden = document.getElementById("next").hidden = count <= PAGE;
}

function newest(count) {
  offset = Math.max(0, count - PAGE);
}

async function start() {
  document.getElementById("status-filter").addEventListener("change", () => {
    offset = 0;
    atNewest = true;
    refresh();
  });
  document.getElementById("prev").addEventListener("click", () => { offset += PAGE; atNewest = true; refresh(); });
  document.getElementById("next").addEventListener("click", () => {
    offset = Math.max(0, offset - PAGE);
    atNewest = false;
    refresh();
  });
  await refresh();
  setInterval(refresh, 2000);
}
start();
