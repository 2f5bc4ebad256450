// Policies: list, create and edit (schedule from week days and times, shown as the RRULE it makes), retention
// (count, days, long-term GFS counts), bind and unbind servers, enable/disable, run now, delete.
import { all, csbs, listPolicies, listServers, provider, session } from "./api.js";
import { badge, errorText, field, h, modal, notice, render, table } from "./ui.js";

const DAYS = [["MO", "Mon"], ["TU", "Tue"], ["WE", "Wed"], ["TH", "Thu"], ["FR", "Fri"], ["SA", "Sat"], ["SU", "Sun"]];

// the RRULE of a weekly schedule: days ["MO", ...], times ["02:00", ...] (UTC)
export function rruleOf(days, times) {
  const hours = [...new Set(times.map((t) => Number(t.split(":")[0])))].sort((a, b) => a - b);
  const minutes = [...new Set(times.map((t) => Number(t.split(":")[1])))].sort((a, b) => a - b);
  return `FREQ=WEEKLY;BYDAY=${days.join(",")};BYHOUR=${hours.join(",")};BYMINUTE=${minutes.join(",")}`;
}

// every time of day an RRULE's BYHOUR x BYMINUTE makes (RFC 5545: each hour with each minute)
function timePoints(rule) {
  const part = (k) => ((rule.match(new RegExp(`${k}=([^;]*)`)) || [])[1] || "").split(",").filter(Boolean);
  const pad = (n) => String(n).padStart(2, "0");
  return part("BYHOUR").flatMap((hh) => part("BYMINUTE").map((mm) => `${pad(hh)}:${pad(mm)}`)).sort();
}

export const pattern = (rule) => `BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:${rule}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n`;
const ruleOf = (p) => ((p || "").match(/RRULE:([^\r\n]*)/) || [])[1] || "";
const op = (policy) => (policy.scheduled_operations || [])[0] || {};

function retentionText(def) {
  if (!def) return "";
  const parts = [];
  if (def.max_backups !== undefined && Number(def.max_backups) !== -1) parts.push(`keep ${def.max_backups} backups`);
  if (def.retention_duration_days !== undefined && Number(def.retention_duration_days) !== -1) {
    parts.push(`keep ${def.retention_duration_days} days`);
  }
  for (const k of ["day", "week", "month", "year"]) {
    if (def[`${k}_backups`]) parts.push(`${def[`${k}_backups`]} ${k}ly`);
  }
  if (String(def.permanent) === "true" || def.permanent === true) parts.push("permanent");
  return parts.join(", ") || "keep all";
}

export async function policiesView(_match, main) {
  const policies = await all(listPolicies);
  const columns = [
    { label: "Policy", cell: (p) => [h("a", { href: `#/policies/${encodeURIComponent(p.id)}` }, p.name),
      p.description ? h("div.muted", {}, p.description) : null] },
    { label: "Status", cell: (p) => [badge(p.status), op(p).enabled ? "" : h("div.muted", {}, "schedule off")] },
    { label: "Schedule (UTC)", cell: (p) => h("code", {}, ruleOf(op(p).trigger?.properties?.pattern)) },
    { label: "Retention", cell: (p) => retentionText(op(p).operation_definition) },
    { label: "Servers", cell: (p) => (p.resources || []).map((r) => h("div", {}, r.name || r.id)) },
    { label: "", cell: (p) => h("div.actions", {},
      h("button.secondary", { type: "button", on: { click: () => setEnabled(p, !op(p).enabled) } },
        op(p).enabled ? "Disable" : "Enable"),
      h("button.secondary", { type: "button", on: { click: () => runNow(p) } }, "Run now"),
      h("button.danger", { type: "button", on: { click: () => remove(p) } }, "Delete")) },
  ];
  render(main, h("h1", {}, "Policies"),
    h("div.actions", {}, h("a.button", { href: "#/policies/new" }, "New policy")),
    table(columns, policies, { empty: "No policy yet." }));
}

async function setEnabled(policy, enabled) {
  try {
    await csbs("PUT", `/policies/${encodeURIComponent(policy.id)}`,
      { body: { policy: { scheduled_operations: [{ id: op(policy).id, enabled }] } } });
    notice(`Policy ${policy.name} ${enabled ? "enabled" : "disabled"}.`);
    await policiesView(null, document.getElementById("main"));
  } catch (err) {
    notice(errorText(err), true);
  }
}

async function runNow(policy) {
  try {
    await provider("POST", "/checkpoints",
      { body: { checkpoint: { plan_id: policy.id, parameters: { auto_trigger: false } } } });
    location.hash = "#/backups";
    notice(`Policy ${policy.name} is running: its backups appear below.`);
  } catch (err) {
    notice(errorText(err), true);
  }
}

async function remove(policy) {
  const dlg = await modal(`Delete policy ${policy.name}?`, h("p", {}, "Its backups stay."), "Delete");
  if (!dlg) return;
  try {
    await csbs("DELETE", `/policies/${encodeURIComponent(policy.id)}`);
    notice(`Policy ${policy.name} deleted.`);
    await policiesView(null, document.getElementById("main"));
  } catch (err) {
    notice(errorText(err), true);
  }
}

export async function policyForm(_match, policyId) {
  const main = document.getElementById("main");
  const [servers, policies] = await Promise.all([all(listServers), all(listPolicies)]);
  const policy = policyId ? (await csbs("GET", `/policies/${encodeURIComponent(policyId)}`)).policy : null;
  const o = policy ? op(policy) : {};
  const def = o.operation_definition || {};
  const rule = ruleOf(o.trigger?.properties?.pattern);
  const ruleDays = ((rule.match(/BYDAY=([^;]*)/) || [])[1] || "").split(",").filter(Boolean);
  const boundElsewhere = new Map();
  for (const p of policies) if (p.id !== policyId) for (const r of p.resources || []) boundElsewhere.set(r.id, p.name);

  const name = h("input", { name: "name", required: true, value: policy?.name || "" });
  const description = h("input", { name: "description", value: policy?.description || "" });
  const days = DAYS.map(([code, label]) => h("input", { type: "checkbox", name: "day", value: code,
    checked: policy ? ruleDays.includes(code) : true }));
  const times = h("input", { name: "times", required: true, value: policy ? timePoints(rule).join(", ") : "02:00",
    pattern: "\\s*\\d{1,2}:\\d{2}(\\s*,\\s*\\d{1,2}:\\d{2})*\\s*" });
  const preview = h("pre.rrule#rrule", { "aria-live": "polite" });
  const keep = h("select", { name: "retention" },
    h("option", { value: "count", selected: def.max_backups !== undefined && Number(def.max_backups) !== -1 },
      "a number of backups"),
    h("option", { value: "days", selected: def.retention_duration_days !== undefined &&
      Number(def.retention_duration_days) !== -1 }, "a number of days"));
  const count = h("input", { name: "max_backups", type: "number",
    value: Number(def.max_backups) > 0 ? def.max_backups : 7 });
  const dayCount = h("input", { name: "retention_duration_days", type: "number",
    value: Number(def.retention_duration_days) > 0 ? def.retention_duration_days : 30 });
  const gfs = ["day", "week", "month", "year"].map((k) => h("input", { name: `${k}_backups`, type: "number", value: def[`${k}_backups`] || "" }));
  const bound = new Set((policy?.resources || []).map((r) => r.id));
  const serverBoxes = servers.map((s) => h("input", { type: "checkbox", name: "server", value: s.id,
    checked: bound.has(s.id) }));
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: policy ? o.enabled !== false : true });

  const timeList = () => times.value.split(",").map((t) => t.trim()).filter(Boolean)
    .map((t) => t.replace(/^(\d):/, "0$1:"));
  function update() {
    const r = rruleOf(days.filter((d) => d.checked).map((d) => d.value), timeList());
    const points = timePoints(r);
    preview.textContent = `RRULE:${r}\nruns at ${points.join(", ")} UTC on the days ticked`;
    count.disabled = keep.value !== "count";
    dayCount.disabled = keep.value !== "days";
    return r;
  }
  [...days, times, keep].forEach((el) => el.addEventListener("input", update));

  const form = h("form.card", { "aria-label": policy ? `Edit policy ${policy.name}` : "New policy" },
    h("div.grid2", {},
      h("div", {}, field("Name", name, "letters, digits, _ and -"), field("Description", description),
        h("fieldset", {}, h("legend", {}, "Schedule (UTC)"),
          h("div", {}, days.map((d, n) => h("label.inline", {}, d, DAYS[n][1]))),
          field("Times", times, "HH:MM, several separated by commas"), preview,
          h("label.inline", {}, enabled, "Scheduled backups on"))),
      h("div", {},
        h("fieldset", {}, h("legend", {}, "Retention"), field("Keep", keep), field("Backups to keep", count),
          field("Days to keep", dayCount),
          h("div.row", {}, ["Daily", "Weekly", "Monthly", "Yearly"].map((l, n) => field(`${l} (long-term)`, gfs[n])))),
        h("fieldset", {}, h("legend", {}, "Servers"),
          servers.map((s, n) => h("label.inline", {}, serverBoxes[n], s.name || s.id,
            boundElsewhere.has(s.id) ? h("span.muted", {}, ` (in ${boundElsewhere.get(s.id)})`) : null))))),
    h("div.actions", {}, h("button", { type: "submit" }, policy ? "Save" : "Create"),
      h("a.button.secondary", { href: "#/policies" }, "Cancel")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const definition = { provider_id: session.provider };
    if (keep.value === "count") { definition.max_backups = Number(count.value); definition.retention_duration_days = -1; }
    else { definition.retention_duration_days = Number(dayCount.value); definition.max_backups = -1; }
    ["day", "week", "month", "year"].forEach((k, n) => { if (gfs[n].value !== "") definition[`${k}_backups`] = Number(gfs[n].value); });
    const resources = servers.filter((s, n) => serverBoxes[n].checked)
      .map((s) => ({ id: s.id, type: s.resource_type, name: s.name || s.id }));
    const trigger = { properties: { pattern: pattern(update()) } };
    try {
      let saved;
      if (policy) {
        saved = (await csbs("PUT", `/policies/${encodeURIComponent(policy.id)}`, { body: { policy: {
          name: name.value, description: description.value, resources,
          scheduled_operations: [{ id: o.id, enabled: enabled.checked, operation_definition: definition, trigger }],
        } } })).policy;
      } else {
        saved = (await csbs("POST", "/policies", { body: { policy: {
          name: name.value, description: description.value, provider_id: session.provider,
          parameters: { common: {} }, resources,
          scheduled_operations: [{ name: "default", description: "", enabled: enabled.checked, operation_type: "backup",
            operation_definition: definition, trigger }],
        } } })).policy;
      }
      location.hash = "#/policies";
      notice(`Policy ${saved.name} ${policy ? "saved" : "created"}.`);
    } catch (err) {
      notice(errorText(err), true);
    }
  });
  render(main, h("p", {}, h("a", { href: "#/policies" }, "← Policies")),
    h("h1", {}, policy ? `Policy ${policy.name}` : "New policy"), form);
  update();
}
