// wdgrid's pages share these: the API call (same origin; the session cookie rides along), number and time formats,
// the colour scale, and the tooltip. Every number the pages show comes from the JSON API.
"use strict";

const wd = {
  // fetch a JSON route; a 401 sends the person to the login page and back here afterwards (unless noRedirect)
  async api(path, options = {}) {
    const { json, noRedirect, ...rest } = options;
    const init = { credentials: "same-origin", headers: { Accept: "application/json" }, ...rest };
    if (json !== undefined) {
      init.method = init.method || "POST";
      init.headers = { ...init.headers, "Content-Type": "application/json" };
      init.body = JSON.stringify(json);
    }
    const response = await fetch(path, init);
    if (response.status === 401 && !options.noRedirect) {
      location.href = "/ui/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new Error("sign in first");
    }
    const type = response.headers.get("content-type") || "";
    const body = type.includes("json") ? await response.json() : await response.text();
    return { ok: response.ok, status: response.status, body };
  },

  // the API's error body as one line: {detail: "..."} or a 422's list of {loc, msg}
  problem(body) {
    if (!body || body.detail === undefined) return String(body);
    if (typeof body.detail === "string") return body.detail;
    return body.detail.map((e) => `${(e.loc || []).slice(1).join(".") || "body"}: ${e.msg}`).join("; ");
  },

  el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined) node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
    return node;
  },

  // 2^k where the value is a power of two, else 3 significant digits
  pow2(x) {
    if (x > 0) {
      const k = Math.log2(x);
      if (Math.abs(k - Math.round(k)) < 1e-9) return `2^${Math.round(k)}`;
    }
    return x === 0 ? "0" : Number(x).toPrecision(3);
  },

  num(x, digits = 2) {
    return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
  },

  duration(s) {
    if (s === null || s === undefined) return "–";
    s = Math.round(s);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  },

  when(iso) {
    return iso ? new Date(iso).toLocaleString() : "–";
  },

  // viridis (colour-blind safe, light to dark in grey scale), t in 0..1
  VIRIDIS: ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"],
  colour(t) {
    const stops = wd.VIRIDIS;
    t = Math.min(1, Math.max(0, t)) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(t));
    const mix = (a, b, f) => Math.round(a + (b - a) * f);
    const rgb = (h) => [1, 3, 5].map((o) => parseInt(h.slice(o, o + 2), 16));
    const [a, b] = [rgb(stops[i]), rgb(stops[i + 1])];
    return `rgb(${mix(a[0], b[0], t - i)}, ${mix(a[1], b[1], t - i)}, ${mix(a[2], b[2], t - i)})`;
  },

  tooltip(event, lines) {
    const tip = document.getElementById("tooltip");
    if (!lines) { tip.hidden = true; return; }
    tip.replaceChildren(...lines.map((l) => wd.el("div", {}, l)));
    tip.hidden = false;
    tip.style.left = `${event.pageX + 14}px`;
    tip.style.top = `${event.pageY + 14}px`;
  },

  // a line chart as SVG: series = [{label, colour, points: [[x, y], ...]}]
  chart(series, { xLabel = "epoch", yLabel = "", width = 520, height = 260 } = {}) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("class", "chart");
    const pts = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p[1]));
    if (!pts.length) return wd.el("p", { class: "muted" }, "No epochs stored yet.");
    const [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
    const [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
    const m = { l: 48, r: 150, t: 22, b: 34 };
    const sx = (x) => m.l + ((x - x0) / (x1 - x0 || 1)) * (width - m.l - m.r);
    const sy = (y) => height - m.b - ((y - y0) / (y1 - y0 || 1)) * (height - m.t - m.b);
    const add = (tag, attrs, text) => {
      const node = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
      if (text !== undefined) node.textContent = text;
      svg.append(node);
      return node;
    };
    add("line", { x1: m.l, y1: height - m.b, x2: width - m.r, y2: height - m.b, class: "axis" });
    add("line", { x1: m.l, y1: m.t, x2: m.l, y2: height - m.b, class: "axis" });
    for (const y of [y0, (y0 + y1) / 2, y1]) add("text", { x: m.l - 4, y: sy(y) + 4, "text-anchor": "end" }, wd.num(y));
    for (const x of [x0, x1]) add("text", { x: sx(x), y: height - m.b + 14, "text-anchor": "middle" }, String(x));
    add("text", { x: (m.l + width - m.r) / 2, y: height - 4, "text-anchor": "middle" }, xLabel);
    add("text", { x: m.l, y: 12 }, yLabel);
    let row = 0;
    for (const s of series) {
      const d = s.points.filter((p) => Number.isFinite(p[1])).map((p, j) => `${j ? "L" : "M"}${sx(p[0])},${sy(p[1])}`);
      add("path", { d: d.join(""), fill: "none", stroke: s.colour, "stroke-width": 1.5 });
      if (!s.label) continue;
      add("rect", { x: width - m.r + 8, y: m.t + 14 * row - 8, width: 10, height: 3, fill: s.colour });
      add("text", { x: width - m.r + 22, y: m.t + 14 * row - 4, class: "key" }, s.label);
      row += 1;
    }
    return svg;
  },
};
