// Backups: the documented filters and sort of GET /checkpoint_items, paged with marker (and the matching
// count); a backup's detail (disks, sizes, saving ratio, speed, failure); live progress; delete.
import { all, countItems, csbs, listItems, listPolicies, listServers, provider } from "./api.js";
import { age, badge, bytes, errorText, field, h, modal, notice, later, render, table, toWire, when } from "./ui.js";

// status values of querying_all_backups.rst
const STATUSES = ["waiting_protect", "protecting", "available", "waiting_restore", "restoring", "error",
  "waiting_delete", "deleting", "deleted"];
const BUSY = new Set(["waiting_protect", "protecting", "waiting_restore", "restoring", "waiting_delete", "deleting"]);
const SORTS = [["created_at:desc", "newest first"], ["created_at:asc", "oldest first"], ["name:asc", "name A-Z"],
  ["name:desc", "name Z-A"], ["status:asc", "status"], ["updated_at:desc", "recently changed"]];
const PAGE = 10;

const state = { filters: {}, sort: "created_at:desc", markers: [], generation: 0 };

export async function backupsView(_match, main) {
  const [servers, policies] = await Promise.all([all(listServers), all(listPolicies)]);
  const f = state.filters;
  const status = h("select", { name: "status" }, h("option", { value: "" }, "any"),
    STATUSES.map((s) => h("option", { value: s, selected: f.status === s }, s)));
  const server = h("select", { name: "resource_id" }, h("option", { value: "" }, "any"),
    servers.map((s) => h("option", { value: s.id, selected: f.resource_id === s.id }, s.name || s.id)));
  const policy = h("select", { name: "policy_id" }, h("option", { value: "" }, "any"),
    policies.map((p) => h("option", { value: p.id, selected: f.policy_id === p.id }, p.name)));
  const name = h("input", { name: "name", value: f.name || "", placeholder: "part of the name" });
  const from = h("input", { name: "start_time", type: "datetime-local", value: f.from || "" });
  const to = h("input", { name: "end_time", type: "datetime-local", value: f.to || "" });
  const sort = h("select", { name: "sort" }, SORTS.map(([v, l]) => h("option", { value: v, selected: state.sort === v }, l)));
  const form = h("form.card", { "aria-label": "Filters" },
    h("div.row", {}, field("Status", status), field("Server", server), field("Policy", policy), field("Name", name),
      field("Created from (UTC)", from), field("Created until (UTC)", to), field("Sort", sort),
      h("div", {}, h("button", { type: "submit" }, "Apply"))));
  const results = h("div");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.filters = { status: status.value, resource_id: server.value, policy_id: policy.value, name: name.value,
      from: from.value, to: to.value };
    state.sort = sort.value;
    state.markers = [];
    showPage(results);
  });
  render(main, h("h1", {}, "Backups"), form, results);
  await showPage(results);
}

function query() {
  const f = state.filters;
  const utc = (local) => (local ? toWire(new Date(local + "Z")) : undefined);
  return { status: f.status, resource_id: f.resource_id, policy_id: f.policy_id, name: f.name,
    start_time: utc(f.from), end_time: utc(f.to) };
}

async function showPage(box) {
  const marker = state.markers[state.markers.length - 1];
  const q = query();
  let items;
  let count;
  try {
    [items, count] = await Promise.all([listItems({ ...q, sort: state.sort, limit: PAGE, marker }), countItems(q)]);
  } catch (err) {
    render(box, h("p.bad", { role: "alert" }, errorText(err)));
    return;
  }
  const first = state.markers.length * PAGE;
  const columns = [
    { label: "Backup", cell: (i) => [h("a", { href: `#/backups/${encodeURIComponent(i.id)}` }, i.name),
      i.description ? h("div.muted", {}, i.description) : null] },
    { label: "Server", cell: (i) => i.extend_info.resource_name || i.resource_id },
    { label: "Status", cell: (i) => [badge(i.status), BUSY.has(i.status) ? progress(i) : null,
      i.status === "error" ? h("div.bad", {}, i.extend_info.fail_reason) : null] },
    { label: "Created", cell: (i) => h("span", { title: when(i.created_at) }, age(i.created_at)) },
    { label: "Stored", cell: (i) => bytes(i.extend_info.size * 1024 * 1024) },
    { label: "Saving", cell: (i) => `${i.extend_info.space_saving_ratio} %` },
    { label: "Kind", cell: (i) => (i.extend_info.incremental ? "incremental" : "full") +
      (i.extend_info.auto_trigger ? ", scheduled" : "") },
  ];
  const pager = h("div.actions", {},
    h("span.muted", {}, count ? `${first + 1}–${first + items.length} of ${count}` : ""),
    state.markers.length ? h("button.secondary", { type: "button", on: { click: () => {
      state.markers.pop(); showPage(box);
    } } }, "Previous page") : null,
    items.length === PAGE && first + PAGE < count ? h("button.secondary", { type: "button", on: { click: () => {
      state.markers.push(items[items.length - 1].id); showPage(box);
    } } }, "Next page") : null);
  render(box, table(columns, items, { empty: "No backup matches." }), pager);
  if (items.some((i) => BUSY.has(i.status))) {
    const generation = ++state.generation;
    later(() => { if (generation === state.generation && box.isConnected) return showPage(box); }, 2000);
  }
}

function progress(item) {
  const p = Number(item.extend_info.progress || 0);
  return h("div", {}, h("progress", { max: 100, value: p, "aria-label": `${item.name} progress` }), ` ${p} %`);
}

export async function backupView(match, main) {
  const id = decodeURIComponent(match[1]);
  const item = (await csbs("GET", `/checkpoint_items/${encodeURIComponent(id)}`)).checkpoint_item;
  const x = item.extend_info;
  const disks = table([
    { label: "Disk", cell: (v) => [v.source_volume_name || v.source_volume_id, v.bootable ? " (system)" : ""] },
    { label: "Disk size", cell: (v) => `${v.source_volume_size} GB` },
    { label: "Stored", cell: (v) => bytes(v.size * 1024 * 1024) },
    { label: "Saving", cell: (v) => `${v.space_saving_ratio} %` },
    { label: "Speed", cell: (v) => `${bytes(v.average_speed * 1024)}/s` },
    { label: "Kind", cell: (v) => (v.incremental ? "incremental" : "full") },
    { label: "Status", cell: (v) => badge(v.status) },
  ], x.volume_backups || [], { empty: "No disk backed up yet." });
  const busy = BUSY.has(item.status);
  render(main,
    h("p", {}, h("a", { href: "#/backups" }, "← Backups")),
    h("h1", {}, `Backup ${item.name}`),
    h("div.card", {}, h("dl.facts", {},
      h("dt", {}, "Status"), h("dd#backup-status", {}, badge(item.status), busy ? progress(item) : null),
      h("dt", {}, "Server"), h("dd", {}, `${x.resource_name} (${item.resource_id})`),
      h("dt", {}, "Created"), h("dd", {}, `${when(item.created_at)} · ${age(item.created_at)}`),
      h("dt", {}, "Finished"), h("dd", {}, when(x.finished_at) || "—"),
      h("dt", {}, "Stored"), h("dd", {}, bytes(x.size * 1024 * 1024)),
      h("dt", {}, "Space saving"), h("dd", {}, `${x.space_saving_ratio} %`),
      h("dt", {}, "Average speed"), h("dd", {}, `${bytes(x.average_speed * 1024)}/s`),
      h("dt", {}, "Kind"), h("dd", {}, (x.incremental ? "incremental" : "full") + (x.auto_trigger ? ", by the schedule" : ", on request")),
      h("dt", {}, "Description"), h("dd", {}, item.description || "—"),
      item.status === "error" ? [h("dt", {}, "Failure"),
        h("dd.bad", { role: "alert" }, `${x.fail_op}: ${x.fail_reason}`, x.fail_code && x.fail_code.Code !== undefined ?
          h("code", {}, ` ${x.fail_code.Code}`) : null)] : null,
      h("dt", {}, "Ids"), h("dd.muted", {}, `item ${item.id} · checkpoint ${item.checkpoint_id}`))),
    h("h2", {}, "Disks"), disks,
    h("div.actions", {},
      item.status === "available" ? h("a.button", { href: `#/restore/${encodeURIComponent(item.id)}` }, "Restore…") : null,
      h("button.danger", { type: "button", on: { click: () => remove(item) } }, "Delete")));
  if (busy) later(() => backupView(match, main), 2000);
}

async function remove(item) {
  const dlg = await modal(`Delete backup ${item.name}?`, h("p", {}, "Its data is dropped from the bank; this cannot be undone."),
    "Delete");
  if (!dlg) return;
  try {
    await provider("DELETE", `/checkpoints/${encodeURIComponent(item.checkpoint_id)}`,
      { query: { checkpoint_items: item.id } });
    location.hash = "#/backups";
    notice(`Backup ${item.name} is being deleted.`);
  } catch (err) {
    notice(errorText(err), true);
  }
}
