// Restore wizard: a backup, a target server and the disk mapping; check_restorable's answer before anything
// runs; power-on choice; then the restore followed to its end (GET /restores/{id}).
import { all, csbs, listItems, listServers, provider, session } from "./api.js";
import { age, badge, errorText, field, h, later, notice, render } from "./ui.js";

export async function restoreView(match, main) {
  const chosen = match[1] ? decodeURIComponent(match[1]) : "";
  const [items, servers] = await Promise.all([
    listItems({ status: "available", sort: "created_at:desc", limit: 200 }), all(listServers)]);
  const backup = h("select", { name: "checkpoint_item_id", required: true },
    h("option", { value: "" }, "choose a backup"),
    items.map((i) => h("option", { value: i.id, selected: i.id === chosen },
      `${i.name} · ${i.extend_info.resource_name} · ${age(i.created_at)}`)));
  const target = h("select", { name: "target_server", required: true });
  const mapping = h("div");
  const verdict = h("div", { role: "status", "aria-live": "polite" });
  const powerOn = h("input", { type: "checkbox", name: "power_on", checked: true });
  const run = h("button", { type: "button", disabled: true }, "Restore");
  const check = h("button.secondary", { type: "button" }, "Check");
  const follow = h("div");

  const current = () => items.find((i) => i.id === backup.value);
  const targetServer = () => servers.find((s) => s.id === target.value);

  function fillTargets() {
    const item = current();
    render(target, servers.map((s) => h("option", { value: s.id, selected: item && s.id === item.resource_id },
      `${s.name || s.id} (${s.status})`)));
    fillMapping();
  }

  function fillMapping() {
    run.disabled = true;
    render(verdict);
    const item = current();
    const server = targetServer();
    if (!item || !server) { render(mapping); return; }
    const disks = server.volumes;
    check.disabled = !disks.length;
    if (!disks.length) { render(mapping, h("p.bad", {}, `${server.name || server.id} has no disk to restore onto.`)); return; }
    render(mapping, h("fieldset", {}, h("legend", {}, "Disk mapping"),
      (item.extend_info.volume_backups || []).map((vb, n) => {
        const pick = disks.find((d) => d.id === vb.source_volume_id) ||
          disks.find((d) => d.bootable === vb.bootable) || disks[n];
        const sel = h("select", { dataset: { backupId: vb.id } },
          disks.map((d) => h("option", { value: d.id, selected: pick && d.id === pick.id },
            `${d.name || d.id}${d.bootable ? " (system)" : ""} · ${d.size_gb} GB`)));
        sel.addEventListener("change", () => { run.disabled = true; render(verdict); });
        return field(`${vb.source_volume_name || vb.source_volume_id} (${vb.source_volume_size} GB` +
          `${vb.bootable ? ", system" : ""}) onto`, sel);
      })));
  }

  function request() {
    const volumes = [...mapping.querySelectorAll("select")].map((s) => ({ backup_id: s.dataset.backupId, volume_id: s.value }));
    return { item: current(), server: targetServer(), volumes };
  }

  check.addEventListener("click", async () => {
    const { item, server, volumes } = request();
    if (!item || !server) return;
    try {
      const body = await provider("POST", "/resources/action", { body: { check_restorable: [{
        checkpoint_item_id: item.id,
        target: { resource_id: server.id, resource_type: server.resource_type, volumes } }] } });
      const v = body.restorable[0];
      render(verdict, v.result ? h("p.ok", {}, "Can be restored.") :
        h("p.bad", {}, "Cannot be restored: ", v.error_msg, " ", h("code", {}, v.error_code)));
      run.disabled = !v.result;
    } catch (err) {
      render(verdict, h("p.bad", {}, errorText(err)));
    }
  });

  run.addEventListener("click", async () => {
    const { item, server, volumes } = request();
    run.disabled = true;
    try {
      const body = await csbs("POST", "/restores", { body: { restore: {
        checkpoint_id: item.checkpoint_id, provider_id: session.provider,
        parameters: { checkpoint_item_id: item.id, power_on: powerOn.checked,
          targets: { server_id: server.id, volumes } } } } });
      notice(`Restore of ${item.name} onto ${server.name || server.id} started.`);
      followRestore(body.restore, follow);
    } catch (err) {
      notice(errorText(err), true);
      run.disabled = false;
    }
  });

  backup.addEventListener("change", fillTargets);
  target.addEventListener("change", fillMapping);
  render(main, h("h1", {}, "Restore"),
    h("div.card", {}, field("1. Backup", backup), field("2. Target server", target), mapping,
      h("label.inline", {}, powerOn, "Power the server on afterwards"),
      h("div.actions", {}, check, run), verdict),
    follow);
  fillTargets();
}

async function followRestore(restore, box) {
  const done = restore.status !== "in_progress";
  render(box, h("div.card", {}, h("h2", {}, "Progress"),
    h("p#restore-status", {}, badge(restore.status), " ",
      h("progress", { max: 100, value: restore.progress || 0, "aria-label": "restore progress" }),
      ` ${restore.progress || 0} %`),
    Object.entries(restore.resources_reason || {}).map(([k, v]) => h("p.bad", {}, `${k}: ${v}`))));
  if (!done) {
    later(async () => {
      const body = await csbs("GET", `/restores/${encodeURIComponent(restore.id)}`);
      await followRestore(body.restore, box);
    }, 1500);
  }
}
