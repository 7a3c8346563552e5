// One sweep: heatmaps that fill in cell by cell, the verdict, learning curves, the trials, downloads, cancel/resume.
// The first state is embedded in the page; then GET /sweeps/{id} and GET /sweeps/{id}/cells?since=<cursor> every 2 s
// while it runs (only the cells that changed come back), and the whole of it once more when it ends.
"use strict";

const initial = JSON.parse(document.getElementById("initial").textContent);
const ID = initial.sweep.id;
const ACTIVE = new Set(["pending", "running"]);
const TWINS = { sgd: "sgdw", adam: "adamw" };
const PERCENT = new Set(["test_error", "train_error"]);
const COLOURS = { sgd: "#d55e00", sgdw: "#0072b2", adam: "#cc79a7", adamw: "#009e73" };
const state = { sweep: initial.sweep, metric: "", mode: "min", scale: [0, 1], cursor: null, maps: new Map() };
const live = { polls: 0, cells: 0, bytes: 0 }; // what the live updates cost (tests and curious people read it)
window.wdgridLive = live;
const key = (lr, wd) => `${lr}|${wd}`;

// --- heatmaps -------------------------------------------------------------------------------------------------------
function order(names) {
  // each L2 optimizer beside its decoupled twin, as in the paper's figures
  const groups = [];
  for (const n of names) {
    if (Object.values(TWINS).includes(n) && names.includes(Object.keys(TWINS).find((k) => TWINS[k] === n))) continue;
    groups.push(TWINS[n] && names.includes(TWINS[n]) ? [n, TWINS[n]] : [n]);
  }
  return groups;
}

function valueText(x) {
  return x === null || x === undefined ? "–" : PERCENT.has(state.metric) ? `${x.toFixed(2)} %` : x.toPrecision(4);
}

function buildHeatmaps(cells) {
  const root = document.getElementById("heatmaps");
  root.replaceChildren();
  state.maps.clear();
  for (const group of order(cells.heatmaps.map((h) => h.optimizer))) {
    const row = wd.el("div", { class: "twins" });
    for (const name of group) {
      const h = cells.heatmaps.find((m) => m.optimizer === name);
      const small = h.weight_decays.length <= 12;
      const table = wd.el("table", { class: `heatmap${small ? " small" : ""}`, "data-optimizer": name });
      table.append(wd.el("caption", {}, name, wd.el("span", { class: "muted best-caption" })));
      table.append(wd.el("tr", {}, wd.el("th", { class: "corner" }, "α \\ λ"),
        ...h.weight_decays.map((w) => wd.el("th", { class: "col" }, wd.pow2(w)))));
      const tds = new Map();
      for (const lr of [...h.lrs].reverse()) {
        const tr = wd.el("tr", {}, wd.el("th", { class: "row" }, wd.pow2(lr)));
        for (const w of h.weight_decays) {
          const td = wd.el("td", { class: "cell unfinished", "data-lr": lr, "data-wd": w });
          tds.set(key(lr, w), td);
          tr.append(td);
        }
        table.append(tr);
      }
      row.append(wd.el("figure", {}, table));
      state.maps.set(name, { tds, cells: new Map(), best: [], table, small });
    }
    root.append(row);
  }
}

function paint(name, cell) {
  const map = state.maps.get(name);
  const td = map.tds.get(key(cell.lr, cell.weight_decay));
  if (!td) return;
  map.cells.set(key(cell.lr, cell.weight_decay), cell);
  const [lo, hi] = state.scale;
  const t = cell.mean === null ? null : state.mode === "min" ? (cell.mean - lo) / (hi - lo || 1) : (hi - cell.mean) / (hi - lo || 1);
  td.className = `cell ${cell.state.replace(" ", "-")}`;
  td.style.background = t !== null && cell.state !== "diverged" ? wd.colour(t) : "";
  td.style.color = t !== null && t > 0.55 ? "#000" : "#fff";
  td.textContent = map.small && cell.mean !== null ? cell.mean.toFixed(PERCENT.has(state.metric) ? 1 : 2) : "";
}

function markBest(name, best) {
  const map = state.maps.get(name);
  for (const td of map.table.querySelectorAll("td.best")) td.classList.remove("best");
  map.best = best.map(([lr, w]) => map.cells.get(key(lr, w))).filter(Boolean);
  for (const b of map.best) map.tds.get(key(b.lr, b.weight_decay))?.classList.add("best");
  map.table.querySelector(".best-caption").textContent = map.best.length ? `  best ${valueText(map.best[0].mean)}` : "";
}

function applyCells(cells, full) {
  const scaleChanged = cells.scale[0] !== state.scale[0] || cells.scale[1] !== state.scale[1];
  Object.assign(state, { metric: cells.metric, mode: cells.mode, scale: cells.scale, cursor: cells.cursor });
  if (full) buildHeatmaps(cells);
  for (const h of cells.heatmaps) {
    if (scaleChanged && !full) for (const c of state.maps.get(h.optimizer).cells.values()) paint(h.optimizer, c);
    for (const c of h.cells) paint(h.optimizer, c);
    markBest(h.optimizer, h.best);
    live.cells += h.cells.length;
  }
  document.getElementById("metric").textContent =
    `(${cells.metric.replace("_", " ")}${PERCENT.has(cells.metric) ? ", %" : ""}; ${cells.mode === "min" ? "lower" : "higher"} is better)`;
  document.getElementById("scale-low").textContent = valueText(state.mode === "min" ? cells.scale[0] : cells.scale[1]);
  document.getElementById("scale-high").textContent = valueText(state.mode === "min" ? cells.scale[1] : cells.scale[0]);
  renderBestTable();
}

function tooltipFor(td) {
  const name = td.closest("table").dataset.optimizer;
  const c = state.maps.get(name).cells.get(key(Number(td.dataset.lr), Number(td.dataset.wd)));
  if (!c) return null;
  const lines = [`${name}   α = ${c.lr} (${wd.pow2(c.lr)})`, `λ = ${c.weight_decay} raw per step (${wd.pow2(c.weight_decay)})`];
  if (c.weight_decay_given !== c.weight_decay) lines.push(`λ as given = ${c.weight_decay_given}`);
  const std = c.std === null ? "" : ` ± ${valueText(c.std)}`;
  lines.push(c.mean === null ? `no finished seed (${c.state})` : `mean ${valueText(c.mean)}${std} over ${c.n} seed${c.n === 1 ? "" : "s"}`);
  if (c.n_diverged) lines.push(`${c.n_diverged} of ${c.n_trials} seeds diverged`);
  lines.push(`${c.n_trials} trial${c.n_trials === 1 ? "" : "s"} · click for curves`);
  return lines;
}

// --- a cell's curves and attempts -----------------------------------------------------------------------------------
function epochValue(e) {
  return e[state.metric] !== undefined ? e[state.metric] : (e.extra || {})[state.metric] ?? null;
}

function trialValue(t) {
  return t[state.metric] !== undefined ? t[state.metric] : (t.metrics || {})[state.metric] ?? null;
}

async function showCell(name, lr, w) {
  const q = new URLSearchParams({ lr, weight_decay: w });
  const answer = await wd.api(`/sweeps/${ID}/cells/${name}?${q}`);
  const panel = document.getElementById("cell-panel");
  panel.hidden = false;
  document.getElementById("cell-title").textContent = `${name}, α = ${lr}, λ = ${w}`;
  if (!answer.ok) {
    document.getElementById("cell-curves").replaceChildren(wd.el("p", { class: "error" }, wd.problem(answer.body)));
    return;
  }
  const palette = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#f0e442", "#000000"];
  const series = [];
  const rows = [];
  answer.body.trials.forEach((t, i) => {
    const attempts = [...new Set(t.epochs.map((e) => e.attempt))];
    for (const a of attempts) {
      series.push({
        label: `seed ${t.seed}${attempts.length > 1 ? ` #${a}` : ""}`,
        colour: palette[(i + a - 1) % palette.length],
        points: t.epochs.filter((e) => e.attempt === a).map((e) => [e.epoch, epochValue(e)]),
      });
    }
    for (const a of t.attempts_detail) {
      rows.push(wd.el("tr", {}, wd.el("td", {}, String(t.seed)), wd.el("td", {}, String(a.attempt)),
        wd.el("td", {}, a.status), wd.el("td", {}, a.attempt === t.attempts ? valueText(trialValue(t)) : "–"),
        wd.el("td", {}, wd.when(a.started_at)), wd.el("td", {}, a.host || "–"), wd.el("td", {}, a.error || "")));
    }
  });
  document.getElementById("cell-curves").replaceChildren(wd.chart(series, { yLabel: state.metric.replace("_", " ") }));
  document.querySelector("#cell-attempts tbody").replaceChildren(...rows);
  panel.scrollIntoView({ behavior: "smooth", block: "nearest" });
}

// --- verdict, best cells and their curves ---------------------------------------------------------------------------
async function renderVerdict() {
  const root = document.getElementById("verdict");
  const names = [...state.maps.keys()];
  if (!Object.entries(TWINS).some(([l2, dw]) => names.includes(l2) && names.includes(dw))) {
    root.replaceChildren(wd.el("p", { class: "muted" }, "This sweep has no L2 optimizer beside its decoupled twin " +
      "(sgd and sgdw, adam and adamw): there is no pair to compare. Its best cells are below."));
    return;
  }
  const answer = await wd.api(`/sweeps/${ID}/separability`);
  if (!answer.ok) {
    root.replaceChildren(wd.el("p", { class: "muted" }, wd.problem(answer.body)));
    return;
  }
  const f = (x, d = 2) => (x === null ? "–" : x.toFixed(d));
  const waiting = answer.body.unfinished.map((p) => wd.el("p", { class: "muted" },
    `${p.l2} vs ${p.decoupled}: ${p.finished} of ${p.cells} cells finished; their verdict comes when all have.`));
  root.replaceChildren(...waiting, ...answer.body.comparisons.map((c) => {
    const seeds = Object.keys(c.l2_by_seed);
    const table = wd.el("table", { class: "data" },
      wd.el("tr", {}, ...["seed", `${c.l2} index`, `${c.decoupled} index`, `${c.l2} slope`, `${c.decoupled} slope`,
        `${c.l2} interaction`, `${c.decoupled} interaction`].map((h) => wd.el("th", {}, h))),
      ...seeds.map((s) => {
        const [a, b] = [c.l2_by_seed[s], c.decoupled_by_seed[s] || {}];
        return wd.el("tr", {}, wd.el("td", {}, s), wd.el("td", {}, f(a.coupling_index)), wd.el("td", {}, f(b.coupling_index)),
          wd.el("td", {}, f(a.coupling_slope)), wd.el("td", {}, f(b.coupling_slope)),
          wd.el("td", {}, f(a.interaction_share)), wd.el("td", {}, f(b.interaction_share)));
      }));
    return wd.el("div", { class: "comparison" },
      verdictBlock(c),
      table);
  }));
}

const OUTCOMES = {
  l2_more_coupled: "Coupled with L2, not with decoupled decay (the paper's claim)",
  not_more_coupled: "Not shown: L2 is not more coupled",
  inconclusive: "Inconclusive",
};

function verdictBlock(c) {
  // the outcome and its sentence; why it cannot tell, when it cannot; the statistics behind it, smaller, beneath
  const details = wd.el("span", { class: "details" });
  c.verdict.split("\n").slice(1).forEach((line, i) => details.append(...(i ? [wd.el("br"), line] : [line])));
  const reasons = c.reasons.length
    ? wd.el("ul", { class: "reasons" }, ...c.reasons.map((r) => wd.el("li", { "data-code": r.code }, r.text)))
    : "";
  return wd.el("div", { class: `verdict ${c.outcome}` }, wd.el("strong", {}, OUTCOMES[c.outcome] || c.outcome),
    wd.el("p", {}, c.sentence), reasons, details);
}

function renderBestTable() {
  const rows = [];
  for (const [name, map] of state.maps) {
    const b = map.best[0];
    if (!b) continue;
    rows.push(wd.el("tr", {}, wd.el("td", {}, name), wd.el("td", {}, `${b.lr} (${wd.pow2(b.lr)})`),
      wd.el("td", {}, `${b.weight_decay} (${wd.pow2(b.weight_decay)})`),
      wd.el("td", {}, `${valueText(b.mean)}${b.std === null ? "" : ` ± ${valueText(b.std)}`}`), wd.el("td", {}, String(b.n))));
  }
  document.querySelector("#best tbody").replaceChildren(...rows);
}

async function renderBestCurves() {
  const series = [];
  for (const [name, map] of state.maps) {
    const b = map.best[0];
    if (!b) continue;
    const answer = await wd.api(`/sweeps/${ID}/cells/${name}?${new URLSearchParams({ lr: b.lr, weight_decay: b.weight_decay })}`);
    if (!answer.ok) continue;
    answer.body.trials.forEach((t, i) => {
      const points = t.epochs.filter((e) => e.attempt === t.attempts).map((e) => [e.epoch, epochValue(e)]);
      series.push({ label: i ? "" : `${name} (${answer.body.trials.length} seed${answer.body.trials.length === 1 ? "" : "s"})`, colour: COLOURS[name] || "#444", points });
    });
  }
  if (series.length) {
    document.getElementById("best-curves").replaceChildren(wd.chart(series, { yLabel: state.metric.replace("_", " ") }));
  }
}

// --- trials ---------------------------------------------------------------------------------------------------------
let trials = [];
let shown = 50; // rows of the trial table; "show more" adds as many again
let sortKey = "id";
let sortUp = true;

async function loadTrials() {
  const q = new URLSearchParams({ limit: 1000 });
  const o = document.getElementById("trial-optimizer").value;
  const s = document.getElementById("trial-status").value;
  if (o) q.set("optimizer", o);
  if (s) q.set("status", s);
  const answer = await wd.api(`/sweeps/${ID}/trials?${q}`);
  if (!answer.ok) return;
  trials = answer.body.data.map((t) => ({ ...t, value: trialValue(t) }));
  document.getElementById("trial-count").textContent = answer.body.count > trials.length
    ? `(the first ${trials.length} of ${answer.body.count}; trials.csv has all)` : `(${answer.body.count})`;
  renderTrials();
}

function renderTrials() {
  const sorted = [...trials].sort((a, b) => {
    const [x, y] = [a[sortKey], b[sortKey]];
    const c = x === null ? 1 : y === null ? -1 : x < y ? -1 : x > y ? 1 : 0;
    return sortUp ? c : -c;
  });
  const more = document.getElementById("more-trials");
  more.hidden = sorted.length <= shown;
  more.textContent = `Show ${Math.min(50, sorted.length - shown)} more of ${sorted.length - shown}`;
  document.querySelector("#trials tbody").replaceChildren(...sorted.slice(0, shown).map((t) => wd.el("tr", {},
    wd.el("td", {}, String(t.id)), wd.el("td", {}, t.optimizer), wd.el("td", {}, String(t.lr)),
    wd.el("td", {}, String(t.weight_decay)), wd.el("td", {}, String(t.seed)),
    wd.el("td", {}, wd.el("span", { class: `badge ${t.status}` }, t.status)), wd.el("td", {}, valueText(t.value)),
    wd.el("td", {}, String(t.attempts)), wd.el("td", {}, wd.num(t.wall_time_s, 1)), wd.el("td", { class: "error-text" }, t.error || ""))));
  for (const th of document.querySelectorAll("#trials th")) {
    th.dataset.sorted = th.dataset.key === sortKey ? (sortUp ? "up" : "down") : "";
  }
}

// --- the sweep's status, actions and downloads ----------------------------------------------------------------------
function renderSweep(s) {
  state.sweep = s;
  const status = document.getElementById("status");
  status.textContent = s.status;
  status.className = `badge ${s.status}`;
  document.getElementById("bar").style.width = `${(100 * s.progress).toFixed(1)}%`;
  const c = s.counts;
  const finished = (c.completed || 0) + (c.diverged || 0) + (c.failed || 0);
  const parts = [`${finished} / ${s.n_cells} cells finished`,
    `completed ${c.completed || 0} · diverged ${c.diverged || 0} · failed ${c.failed || 0} · running ${c.running || 0} · pending ${c.pending || 0}${c.cancelled ? ` · cancelled ${c.cancelled}` : ""}`,
    `elapsed ${wd.duration(s.elapsed_s)}`];
  if (ACTIVE.has(s.status)) parts.push(`ETA ${wd.duration(s.eta_s)}`);
  if (s.reused_cells) parts.push(`${s.reused_cells} reused from earlier sweeps`);
  document.getElementById("progress-text").textContent = parts.join(" — ");
  const error = document.getElementById("sweep-error");
  error.textContent = s.error || "";
  error.hidden = !s.error;
  document.getElementById("cancel").hidden = !ACTIVE.has(s.status);
  document.getElementById("resume").hidden = !["failed", "cancelled"].includes(s.status);
}

function renderDownloads(names) {
  const link = (href, text) => wd.el("li", {}, wd.el("a", { href, download: "" }, text));
  document.getElementById("downloads").replaceChildren(
    link(`/sweeps/${ID}/trials.csv`, "trials.csv — every trial: grid place, status, final metrics, provenance"),
    link(`/sweeps/${ID}/epochs.csv`, "epochs.csv — every epoch of every attempt"),
    link(`/sweeps/${ID}/heatmap.png`, "heatmap.png — every optimizer, L2 beside its twin"),
    ...names.flatMap((n) => [
      link(`/sweeps/${ID}/grid.csv?optimizer=${n}`, `grid.csv — ${n}, mean over seeds`),
      link(`/sweeps/${ID}/grid.csv?optimizer=${n}&metric=std`, `grid.csv — ${n}, std over seeds`),
      link(`/sweeps/${ID}/heatmap.png?optimizer=${n}`, `heatmap.png — ${n}`),
    ]),
    wd.el("li", {}, wd.el("a", { href: `/sweeps/${ID}/separability` }, "separability (JSON)")));
}

async function act(action) {
  const error = document.getElementById("action-error");
  const answer = await wd.api(`/sweeps/${ID}/${action}`, { method: "POST" });
  error.hidden = answer.ok;
  error.textContent = answer.ok ? "" : wd.problem(answer.body);
  if (answer.ok) {
    renderSweep(answer.body);
    schedule(500);
  }
}

// --- polling --------------------------------------------------------------------------------------------------------
let timer = null;
let polls = 0;
function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(poll, ms);
}

async function finish() {
  // the end: the whole grid once more (nothing missed), then what needs every cell
  const cells = await wd.api(`/sweeps/${ID}/cells`);
  if (cells.ok) applyCells(cells.body, true);
  await Promise.all([renderVerdict(), loadTrials(), renderBestCurves()]);
}

async function poll() {
  const wasActive = ACTIVE.has(state.sweep.status);
  try {
    const s = await wd.api(`/sweeps/${ID}`);
    if (s.ok) renderSweep(s.body);
    if (wasActive || ACTIVE.has(state.sweep.status)) {
      const c = await fetch(`/sweeps/${ID}/cells?since=${encodeURIComponent(state.cursor)}`, { credentials: "same-origin" });
      const text = await c.text();
      if (c.ok) {
        live.polls += 1;
        live.bytes = text.length;
        applyCells(JSON.parse(text), false);
      }
      polls += 1;
      if (polls % 10 === 0) {
        loadTrials();
        renderVerdict(); // a pair is analysed as soon as its cells have finished
      }
    }
    if (wasActive && !ACTIVE.has(state.sweep.status)) await finish();
  } catch (e) {
    // the server restarting, a network blip: keep the page, try again
  }
  schedule(ACTIVE.has(state.sweep.status) ? 2000 : 10000);
}

// --- start ----------------------------------------------------------------------------------------------------------
function start() {
  renderSweep(initial.sweep);
  applyCells(initial.cells, true);
  const names = initial.cells.heatmaps.map((h) => h.optimizer);
  renderDownloads(names);
  const select = document.getElementById("trial-optimizer");
  for (const n of names) select.append(wd.el("option", {}, n));
  select.addEventListener("change", loadTrials);
  document.getElementById("trial-status").addEventListener("change", loadTrials);
  document.getElementById("more-trials").addEventListener("click", () => {
    shown += 50;
    renderTrials();
  });
  document.getElementById("value-header").textContent = initial.cells.metric.replace("_", " ");
  for (const th of document.querySelectorAll("#trials th")) {
    th.addEventListener("click", () => {
      sortUp = sortKey === th.dataset.key ? !sortUp : true;
      sortKey = th.dataset.key;
      renderTrials();
    });
  }
  const heatmaps = document.getElementById("heatmaps");
  heatmaps.addEventListener("mousemove", (e) => {
    const td = e.target.closest("td.cell");
    wd.tooltip(e, td ? tooltipFor(td) : null);
  });
  heatmaps.addEventListener("mouseleave", (e) => wd.tooltip(e, null));
  heatmaps.addEventListener("click", (e) => {
    const td = e.target.closest("td.cell");
    if (td) showCell(td.closest("table").dataset.optimizer, td.dataset.lr, td.dataset.wd);
  });
  document.getElementById("cancel").addEventListener("click", () => act("cancel"));
  document.getElementById("resume").addEventListener("click", () => act("resume"));
  loadTrials();
  renderVerdict();
  renderBestCurves();
  schedule(2000);
}
start();
