// The console's shell: log in and out, the navigation, and the hash router (#/servers, #/backups,
// #/backups/{item_id}, #/restore[/{item_id}], #/policies, #/policies/new, #/policies/{id}, #/project).
import { ApiError, clearSession, request, saveSession, session } from "./api.js";
import { clearStaleNotice, errorText, field, h, notice, render } from "./ui.js";
import { serversView } from "./servers.js";
import { backupsView, backupView } from "./backups.js";
import { restoreView } from "./restore.js";
import { policiesView, policyForm } from "./policies.js";
import { projectView } from "./project.js";

const main = document.getElementById("main");

const routes = [
  [/^#\/servers$/, serversView],
  [/^#\/backups$/, backupsView],
  [/^#\/backups\/([^/]+)$/, backupView],
  [/^#\/restore(?:\/([^/]+))?$/, restoreView],
  [/^#\/policies$/, policiesView],
  [/^#\/policies\/new$/, (m) => policyForm(m, null)],
  [/^#\/policies\/([^/]+)$/, (m) => policyForm(m, decodeURIComponent(m[1]))],
  [/^#\/project$/, projectView],
];

async function loginView() {
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  let mode = "local";
  try {
    mode = (await request("GET", "/opencsbs/v1/auth", { token: null })).mode;
  } catch (err) {
    notice(errorText(err), true);
  }
  const form = h("form.card.login", { "aria-labelledby": "login-title" }, h("h1#login-title", {}, "Log in"));
  if (mode === "keystone") {
    const user = h("input", { name: "username", autocomplete: "username", required: true });
    const pass = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
    const project = h("input", { name: "project", required: true });
    const domain = h("input", { name: "domain", value: "Default", required: true });
    form.append(field("User name", user), field("Password", pass), field("Project (name or id)", project),
      field("Domain", domain));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      keystoneLogin(user.value, pass.value, project.value, domain.value);
    });
  } else {
    const project = h("input", { name: "project", required: true, autocomplete: "off" });
    const token = h("input", { name: "token", type: "password", required: true, autocomplete: "off" });
    form.append(field("Project id", project),
      field("Token", token, "from `opencsbs token create --project PROJECT`"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      start({ token: token.value.trim(), project: project.value.trim(), mode });
    });
  }
  form.append(h("div.actions", {}, h("button", { type: "submit" }, "Log in")));
  render(main, form);
  form.querySelector("input").focus();
}

async function keystoneLogin(username, password, project, domain) {
  try {
    const body = await request("POST", "/opencsbs/v1/auth/tokens",
      { token: null, body: { auth: { username, password, project, domain } } });
    await start({ token: body.token.id, project: body.token.project_id, user: username,
      projectName: body.token.project_name, mode: "keystone" });
  } catch (err) {
    notice(errorText(err), true);
  }
}

// check the token against the project by asking for its CSBS provider, then open the servers
async function start(values) {
  try {
    const body = await request("GET", `/v1/${encodeURIComponent(values.project)}/providers`, { token: values.token });
    saveSession({ ...values, provider: body.providers[0].id });
    notice("");
    if (location.hash === "#/servers") route(); else location.hash = "#/servers";
  } catch (err) {
    notice(errorText(err), true);
  }
}

function logout() {
  clearSession();
  notice("Logged out.");
  location.hash = "";
  loginView();
}

async function route() {
  if (!session.token) return loginView();
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  document.getElementById("who").textContent =
    `project ${session.projectName || session.project}` + (session.user ? ` · ${session.user}` : "");
  const hash = location.hash || "#/servers";
  for (const a of document.querySelectorAll("#nav a")) {
    const here = hash === a.getAttribute("href") || hash.startsWith(a.getAttribute("href") + "/");
    if (here) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const found = routes.find(([re]) => re.test(hash));
  if (!found) { location.hash = "#/servers"; return; }
  render(main, h("p.muted", {}, "Loading…"));
  try {
    await found[1](hash.match(found[0]), main);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      clearSession();
      notice("The token was refused (expired or revoked): log in again.", true);
      return loginView();
    }
    render(main, h("p.bad", { role: "alert" }, errorText(err)));
  }
  main.focus({ preventScroll: true });
}

document.getElementById("logout").addEventListener("click", logout);
window.addEventListener("hashchange", () => { clearStaleNotice(); route(); });
route();
