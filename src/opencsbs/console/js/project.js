// Project: quotas, the tags of policies and backups, failures with their reasons (newest first), and charts
// drawn from the backups list (stored vs logical bytes and space saving over time, backups per day by status).
import { csbs, listItems } from "./api.js";
import { age, bytes, h, render, table, when } from "./ui.js";
import { barChart, lineChart } from "./charts.js";

const STATUS_COLOURS = { available: "#1d7a3a", error: "#b42318", protecting: "#d29c00", waiting_protect: "#e8c35a",
  restoring: "#6f42c1", waiting_restore: "#a98bd8", deleting: "#777", waiting_delete: "#aaa", deleted: "#ccc" };

export async function projectView(_match, main) {
  const [quotas, policyTags, backupTags, failures, items] = await Promise.all([
    csbs("GET", "/quotas"),
    csbs("GET", "/csbs_backup_policy/tags"),
    csbs("GET", "/csbs_backup/tags"),
    listItems({ status: "error", sort: "created_at:desc", limit: 50 }),
    listItems({ sort: "created_at:asc", limit: 1000 }),
  ]);
  render(main, h("h1", {}, "Project"),
    h("div.grid2", {},
      h("section", { "aria-labelledby": "q" }, h("h2#q", {}, "Quotas"), quotaTable(quotas.quotas.resources)),
      h("section", { "aria-labelledby": "t" }, h("h2#t", {}, "Tags"),
        tagTable("Policy tags", policyTags.tags), tagTable("Backup tags", backupTags.tags))),
    h("section", { "aria-labelledby": "f" }, h("h2#f", {}, "Failures"), table([
      { label: "When", cell: (i) => h("span", { title: when(i.created_at) }, age(i.created_at)) },
      { label: "Backup", cell: (i) => h("a", { href: `#/backups/${encodeURIComponent(i.id)}` }, i.name) },
      { label: "Server", cell: (i) => i.extend_info.resource_name || i.resource_id },
      { label: "Operation", cell: (i) => i.extend_info.fail_op },
      { label: "Reason", cell: (i) => [h("span.bad", {}, i.extend_info.fail_reason),
        i.extend_info.fail_code && i.extend_info.fail_code.Code !== undefined ?
          [" ", h("code", {}, String(i.extend_info.fail_code.Code))] : null] },
    ], failures, { empty: "No failed backup." })),
    h("section", { "aria-labelledby": "c" }, h("h2#c", {}, "Charts"), charts(items)));
}

function quotaTable(resources) {
  return table([
    { label: "Quota", cell: (r) => (r.type === "backup_capacity" ? "Backup capacity" : "Backups") },
    { label: "Used", cell: (r) => `${r.used}${r.unit ? " " + r.unit : ""}` },
    { label: "Limit", cell: (r) => (r.quota === -1 ? "unlimited" : `${r.quota}${r.unit ? " " + r.unit : ""}`) },
    { label: "", cell: (r) => (r.quota > 0 ? h("progress", { max: r.quota, value: Math.min(r.used, r.quota),
      "aria-label": `${r.type} used` }) : "") },
  ], resources);
}

function tagTable(title, tags) {
  return [h("h3", {}, title), table([
    { label: "Key", cell: (t) => t.key },
    { label: "Values", cell: (t) => (t.values || []).join(", ") },
  ], tags || [], { empty: "None." })];
}

function day(ts) { return ts.slice(0, 10); }

function charts(items) {
  if (!items.length) return h("p.muted", {}, "No backup yet.");
  // per day: backups by status; running totals of stored and logical bytes of available backups
  const days = [...new Set(items.map((i) => day(i.created_at)))];
  const statuses = [...new Set(items.map((i) => i.status))];
  const perDay = days.map((d) => Object.fromEntries(statuses.map((s) => [s,
    items.filter((i) => day(i.created_at) === d && i.status === s).length])));
  let stored = 0;
  let logical = 0;
  const totals = days.map((d) => {
    for (const i of items.filter((x) => day(x.created_at) === d && x.status === "available")) {
      const mb = i.extend_info.size * 1024 * 1024;
      stored += mb;
      logical += (i.extend_info.volume_backups || []).reduce((n, v) => n + v.source_volume_size * 1024 ** 3, 0);
    }
    return { stored, logical };
  });
  const saving = totals.map((t) => (t.logical ? Math.round(100 * (1 - t.stored / t.logical)) : 0));
  return h("div.grid2", {},
    h("figure", {}, h("figcaption", {}, "Stored vs logical bytes (available backups, running total)"),
      lineChart(days, [
        { label: "logical (disk sizes)", colour: "#8aa4d6", values: totals.map((t) => t.logical) },
        { label: "stored in the bank", colour: "#1f5fbf", values: totals.map((t) => t.stored) },
      ], bytes)),
    h("figure", {}, h("figcaption", {}, "Space saving (dedup and compression), %"),
      lineChart(days, [{ label: "saving %", colour: "#1d7a3a", values: saving }], (v) => `${v} %`, 100)),
    h("figure", {}, h("figcaption", {}, "Backups per day by status"),
      barChart(days, statuses.map((s) => ({ label: s, colour: STATUS_COLOURS[s] || "#888",
        values: perDay.map((p) => p[s]) })))));
}
