// Servers: the project's servers (extension listing), each with check_protectable's answer (asked in one
// batch per page), the policy it is bound to, its last backup and its age; back up now.
import { all, checkProtectable, listItems, listPolicies, listServers, provider } from "./api.js";
import { age, badge, errorText, field, h, modal, notice, render, table, when } from "./ui.js";

const PAGE = 50;

export async function serversView(_match, main, marker = undefined, previous = []) {
  const [servers, policies] = await Promise.all([listServers(marker, PAGE), all(listPolicies)]);
  const boundTo = new Map();
  for (const p of policies) for (const r of p.resources || []) boundTo.set(r.id, p);
  const verdicts = new Map();
  const last = new Map();
  const checkedAt = h("span.muted");

  async function check() {
    if (!servers.length) return;
    const answers = await checkProtectable(servers);
    answers.forEach((a) => verdicts.set(a.resource_id, a));
    checkedAt.textContent = `checked ${servers.length} servers in one request at ${new Date().toLocaleTimeString()}`;
  }
  await Promise.all([
    check(),
    ...servers.map((s) => listItems({ resource_id: s.id, limit: 1, sort: "created_at:desc" })
      .then((items) => last.set(s.id, items[0]))),
  ]);

  const columns = [
    { label: "Server", cell: (s) => [h("strong", {}, s.name || s.id), h("div.muted", {}, s.id)] },
    { label: "Type", cell: (s) => s.resource_type.replace("OS::", "").replace("::", " ") },
    { label: "Status", cell: (s) => s.status + (s.task_state ? ` (${s.task_state})` : "") },
    { label: "Can be backed up", cell: (s) => verdictCell(verdicts.get(s.id)) },
    { label: "Policy", cell: (s) => {
      const p = boundTo.get(s.id);
      return p ? h("a", { href: `#/policies/${encodeURIComponent(p.id)}` }, p.name) : h("span.muted", {}, "none");
    } },
    { label: "Last backup", cell: (s) => {
      const item = last.get(s.id);
      if (!item) return h("span.muted", {}, "never");
      return [h("a", { href: `#/backups/${encodeURIComponent(item.id)}` }, item.name), " ", badge(item.status),
        h("div.muted", { title: when(item.created_at) }, age(item.created_at))];
    } },
    { label: "", cell: (s) => h("button.secondary", {
      type: "button", "aria-label": `Back up ${s.name || s.id} now`, on: { click: () => backUpNow(s) },
      disabled: verdicts.has(s.id) && !verdicts.get(s.id).result,
      title: verdicts.has(s.id) && !verdicts.get(s.id).result ? verdicts.get(s.id).error_msg : undefined,
    }, "Back up now") },
  ];

  const nav = h("div.actions", {},
    previous.length ? h("button.secondary", { type: "button",
      on: { click: () => serversView(_match, main, previous[previous.length - 1], previous.slice(0, -1)) } },
    "Previous page") : null,
    servers.length === PAGE ? h("button.secondary", { type: "button",
      on: { click: () => serversView(_match, main, servers[servers.length - 1].id, [...previous, marker]) } },
    "Next page") : null);

  const tableBox = h("div", {}, table(columns, servers, { empty: "The project has no servers." }));
  render(main,
    h("h1", {}, "Servers"),
    h("div.actions", {},
      h("button", { type: "button", on: { click: async () => {
        try { await check(); render(tableBox, table(columns, servers)); } catch (err) { notice(errorText(err), true); }
      } } }, "Check all"), checkedAt),
    tableBox, nav, checkOther());
}

// ask check_protectable about any id and type (a volume, or a server the list does not show)
function checkOther() {
  const id = h("input", { name: "resource_id", required: true });
  const type = h("input", { name: "resource_type", required: true, value: "OS::Nova::Server", list: "resource-types" });
  const answer = h("div", { role: "status", "aria-live": "polite" });
  const form = h("form.card", { "aria-label": "Check another resource" },
    h("h2", {}, "Check another resource"),
    h("datalist#resource-types", {}, ["OS::Nova::Server", "OS::Ironic::BareMetalServer", "OS::Cinder::Volume"]
      .map((t) => h("option", { value: t }))),
    h("div.row", {}, field("Resource id", id), field("Resource type", type),
      h("div", {}, h("button", { type: "submit" }, "Check"))), answer);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const [v] = await checkProtectable([{ id: id.value.trim(), resource_type: type.value.trim() }]);
      render(answer, h("p", {}, h("strong", {}, v.resource_id), ": ", verdictCell(v)));
    } catch (err) {
      render(answer, h("p.bad", {}, errorText(err)));
    }
  });
  return form;
}

function verdictCell(v) {
  if (!v) return h("span.muted", {}, "…");
  if (v.result) return h("span.ok", {}, "Yes");
  return [h("span.bad", {}, "No: "), v.error_msg || "", " ", h("code", {}, v.error_code || "")];
}

async function backUpNow(server) {
  const name = h("input", { name: "backup_name",
    placeholder: "manualbk_…" });
  const description = h("textarea", { name: "description", rows: 2 });
  const dlg = await modal(`Back up ${server.name || server.id}`,
    [field("Backup name", name, "letters, digits, _ and -; empty: opencsbs names it"),
      field("Description", description)], "Back up");
  if (!dlg) return;
  const protect = {};
  if (name.value) protect.backup_name = name.value;
  if (description.value) protect.description = description.value;
  protect.resource_type = server.resource_type;
  try {
    const body = await provider("POST", `/resources/${encodeURIComponent(server.id)}/action`, { body: { protect } });
    location.hash = "#/backups";
    notice(`Backup of ${server.name || server.id} started (checkpoint ${body.checkpoint.id}).`);
  } catch (err) {
    notice(errorText(err), true);
  }
}
