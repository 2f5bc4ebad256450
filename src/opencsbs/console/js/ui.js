// Small DOM helpers and formatters shared by the screens.

// h("tag.class#id", {attrs, on: {event: fn}}, ...children)
export function h(spec, attrs = {}, ...children) {
  const [tagAndClass, id] = spec.split("#");
  const [tag, ...classes] = tagAndClass.split(".");
  const el = document.createElement(tag || "div");
  if (id) el.id = id;
  if (classes.length) el.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function render(target, ...children) {
  target.replaceChildren();
  append(target, children);
}

let noticeAt = 0;

export function notice(text, isError = false) {
  noticeAt = Date.now();
  const box = document.getElementById("notice");
  render(box, text ? h("p" + (isError ? ".error" : ""), { role: isError ? "alert" : undefined }, text) : null);
}

// on navigation: drop a notice unless it was just set (by the action that navigated)
export function clearStaleNotice() {
  if (Date.now() - noticeAt > 1500) render(document.getElementById("notice"));
}

export function errorText(err) {
  return err && err.code ? `${err.message} (${err.code})` : String(err && err.message ? err.message : err);
}

// a table: columns [{label, cell(row) -> node|string}], rows; stacked on phones
export function table(columns, rows, { empty = "Nothing to show.", caption } = {}) {
  if (!rows.length) return h("p.muted", {}, empty);
  return h("div.table-wrap", {},
    h("table.stack", {},
      caption ? h("caption.muted", {}, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.label)))),
      h("tbody", {}, rows.map((r) => h("tr", { dataset: r.id ? { id: r.id } : {} },
        columns.map((c) => h("td", { "data-label": c.label }, c.cell(r))))))));
}

export const badge = (status) => h("span.badge." + status, {}, status);

export function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let v = Number(n);
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v >= 10 || i === 0 ? 0 : 1)} ${units[i]}`;
}

// CSBS wire timestamps are UTC without a zone: YYYY-MM-DDTHH:MM:SS.ffffff
export function parseWire(ts) {
  if (!ts) return null;
  return new Date(ts.replace(" ", "T").replace(/(\.\d{3})\d*$/, "$1") + (/[zZ]|[+-]\d\d:?\d\d$/.test(ts) ? "" : "Z"));
}

export function toWire(date) {
  return date.toISOString().replace("Z", "").replace(/\.(\d{3})$/, ".$1000");
}

export function age(ts) {
  const d = parseWire(ts);
  if (!d) return "";
  const s = Math.max(0, (Date.now() - d.getTime()) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

export const when = (ts) => (ts ? `${ts.replace("T", " ").slice(0, 19)} UTC` : "");

export function field(label, input, hint) {
  if (!input.id) input.id = "f-" + Math.random().toString(36).slice(2, 9);
  return h("div", {}, h("label", { for: input.id }, label), input, hint ? h("div.muted", {}, hint) : null);
}

// a modal <dialog> whose form resolves with the submit button's value, or null when cancelled (Esc too)
export function modal(title, body, submitLabel) {
  return new Promise((resolve) => {
    const dlg = h("dialog", { "aria-label": title },
      h("form", { method: "dialog" },
        h("h2", {}, title), body,
        h("div.actions", {},
          h("button", { value: "ok" }, submitLabel),
          h("button.secondary", { value: "cancel", formnovalidate: true }, "Cancel"))));
    dlg.addEventListener("close", () => {
      dlg.remove();
      resolve(dlg.returnValue === "ok" ? dlg : null);
    });
    document.body.append(dlg);
    dlg.showModal();
  });
}

// run fn once after ms, unless the user went to another page meanwhile (live progress re-renders this way)
export function later(fn, ms) {
  const page = location.hash;
  setTimeout(() => {
    if (location.hash === page) Promise.resolve().then(fn).catch((err) => notice(errorText(err), true));
  }, ms);
}
