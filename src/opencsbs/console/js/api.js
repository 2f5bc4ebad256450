// The one way the console talks to opencsbs: the CSBS v1 API (and the documented /opencsbs/v1 extensions)
// with the user's token in X-Auth-Token, like any other client. Errors arrive as CSBS bodies
// {"error_code", "error_msg"} and are thrown as ApiError with both.

const KEY = "opencsbs.session";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// {token, project, provider, user, mode}; kept in sessionStorage (gone when the tab closes)
export const session = JSON.parse(sessionStorage.getItem(KEY) || "null") || {};

export function saveSession(values) {
  Object.keys(session).forEach((k) => delete session[k]);
  Object.assign(session, values);
  sessionStorage.setItem(KEY, JSON.stringify(session));
}

export function clearSession() {
  Object.keys(session).forEach((k) => delete session[k]);
  sessionStorage.removeItem(KEY);
}

// fetch JSON: method, absolute path on this server, optional body, optional query object
export async function request(method, path, { body, query, token = session.token } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== "") params.set(k, v);
    }
    const qs = params.toString();
    if (qs) url += "?" + qs;
  }
  const headers = { Accept: "application/json" };
  if (token) headers["X-Auth-Token"] = token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "", `opencsbs did not answer (${err.message})`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!response.ok) {
    const code = data && data.error_code ? data.error_code : "";
    const msg = data && data.error_msg ? data.error_msg : `HTTP ${response.status}`;
    throw new ApiError(response.status, code, msg);
  }
  return data;
}

const enc = encodeURIComponent;

// /v1/{project_id}{path}
export const csbs = (method, path, opts) => request(method, `/v1/${enc(session.project)}${path}`, opts);
// /v1/{project_id}/providers/{provider_id}{path}
export const provider = (method, path, opts) =>
  request(method, `/v1/${enc(session.project)}/providers/${enc(session.provider)}${path}`, opts);
// /opencsbs/v1/{project_id}{path} (extension routes)
export const ext = (method, path, opts) => request(method, `/opencsbs/v1/${enc(session.project)}${path}`, opts);

// Every page of a marker-paged list: fetch(marker) -> array; stops on a short or empty page.
export async function all(fetchPage, pageSize = 1000) {
  const out = [];
  let marker;
  for (;;) {
    const page = await fetchPage(marker, pageSize);
    out.push(...page);
    if (page.length < pageSize) return out;
    marker = page[page.length - 1].id;
  }
}

export const listServers = (marker, limit) =>
  ext("GET", "/servers", { query: { marker, limit } }).then((b) => b.servers);
export const listPolicies = (marker, limit) =>
  csbs("GET", "/policies", { query: { marker, limit } }).then((b) => b.policies);
export const listItems = (query) => csbs("GET", "/checkpoint_items", { query }).then((b) => b.checkpoint_items);
export const countItems = (query) => csbs("GET", "/checkpoint_items/count", { query }).then((b) => b.count);
export const checkProtectable = (servers) =>
  provider("POST", "/resources/action", {
    body: { check_protectable: servers.map((s) => ({ resource_id: s.id, resource_type: s.resource_type })) },
  }).then((b) => b.protectable);
