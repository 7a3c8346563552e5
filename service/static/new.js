// Submit a sweep: a preset with overrides, or a whole spec. The API validates; its 422s are shown beside the field
// they name (or, for a field this form has no box for, beside the JSON it came from).
"use strict";

const form = document.getElementById("submit");
const mode = () => form.querySelector("input[name=mode]:checked").value;

function clearErrors() {
  for (const p of form.querySelectorAll(".field-error")) p.remove();
  for (const f of form.querySelectorAll(".field.invalid")) f.classList.remove("invalid");
  document.getElementById("form-error").hidden = true;
}

function showError(field, message) {
  const box = form.querySelector(`#${mode()}-mode .field[data-field="${field}"]`);
  if (!box) return false;
  box.classList.add("invalid");
  box.append(wd.el("p", { class: "field-error error", role: "alert" }, message));
  return true;
}

// text as the user typed it becomes a number or list where it reads as one; otherwise it is sent as it is, and the
// API's message says what it wanted
function number(text) {
  return /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(text.trim()) ? Number(text) : text;
}
function integers(text) {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  return parts.every((p) => /^-?\d+$/.test(p)) ? parts.map(Number) : text;
}

function body() {
  if (mode() === "spec") {
    const text = document.getElementById("spec").value;
    try {
      return JSON.parse(text);
    } catch (e) {
      showError("spec", `Not JSON: ${e.message}`);
      return null;
    }
  }
  const out = { preset: document.getElementById("preset").value };
  const text = document.getElementById("overrides").value.trim();
  if (text) {
    let extra;
    try {
      extra = JSON.parse(text);
    } catch (e) {
      showError("overrides", `Not JSON: ${e.message}`);
      return null;
    }
    if (typeof extra !== "object" || extra === null || Array.isArray(extra)) {
      showError("overrides", "Write a JSON object of the spec's fields: {\"field\": value, ...}");
      return null;
    }
    Object.assign(out, extra);
  }
  const name = document.getElementById("name").value.trim();
  const epochs = document.getElementById("epochs").value.trim();
  const seeds = document.getElementById("seeds").value.trim();
  if (name) out.name = name;
  if (epochs) out.epochs = number(epochs);
  if (seeds) out.seeds = integers(seeds);
  return out;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  const payload = body();
  if (payload === null) return;
  const answer = await wd.api("/sweeps", { json: payload });
  if (answer.ok) {
    location.href = `/ui/sweeps/${answer.body.id}`;
    return;
  }
  const general = [];
  if (answer.status === 422 && Array.isArray(answer.body.detail)) {
    for (const e of answer.body.detail) {
      const loc = (e.loc || []).slice(1); // after "body"
      const where = loc.join(".");
      const placed = mode() === "preset"
        ? showError(String(loc[0]), e.msg) || showError("overrides", `${where}: ${e.msg}`)
        : showError("spec", `${where || "spec"}: ${e.msg}`);
      if (!placed) general.push(`${where}: ${e.msg}`);
    }
  } else {
    general.push(wd.problem(answer.body));
  }
  if (general.length) {
    const p = document.getElementById("form-error");
    p.textContent = general.join("; ");
    p.hidden = false;
  }
});

for (const radio of form.querySelectorAll("input[name=mode]")) {
  radio.addEventListener("change", () => {
    clearErrors();
    document.getElementById("preset-mode").hidden = mode() !== "preset";
    document.getElementById("spec-mode").hidden = mode() !== "spec";
  });
}

document.getElementById("spec-file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (file) document.getElementById("spec").value = await file.text();
});

async function start() {
  const [presets, plugins] = await Promise.all([wd.api("/presets"), wd.api("/plugins")]);
  const select = document.getElementById("preset");
  const describe = () => {
    const p = (presets.body || []).find((x) => x.name === select.value);
    document.getElementById("preset-description").textContent = p ? p.description : "";
  };
  if (presets.ok) {
    select.replaceChildren(...presets.body.map((p) => wd.el("option", { value: p.name }, p.name)));
    select.value = presets.body.some((p) => p.name === "smoke") ? "smoke" : select.value;
  }
  select.addEventListener("change", describe);
  describe();
  if (plugins.ok) {
    document.querySelector("#plugins tbody").replaceChildren(...plugins.body.map((p) => wd.el("tr", {},
      wd.el("td", {}, p.kind), wd.el("td", {}, wd.el("code", {}, p.name)), wd.el("td", {}, `${p.package} ${p.version}`),
      wd.el("td", {}, p.error ? `cannot be imported here: ${p.error}` : p.doc))));
  }
}
start();
