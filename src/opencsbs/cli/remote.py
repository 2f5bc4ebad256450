"""The command line as a client of a running opencsbs: backups, restores, policies, cancels and the extension
commands ask its HTTP API (httpx) instead of opening the database and the bank, so they work from an operator's
laptop with a project token. The answers are the API's bodies, shown as the local commands show them.

Where the endpoint and the token come from, first match wins:

- ``--url URL`` (``OPENCSBS_URL``) with ``--token TOKEN`` (``OPENCSBS_TOKEN``) and ``--project PROJECT``;
- ``--os-cloud NAME`` (``OS_CLOUD``): the clouds.yaml entry NAME (openstacksdk's config loader, so the standard
  search paths ``./clouds.yaml``, ``~/.config/openstack/clouds.yaml``, ``/etc/openstack/clouds.yaml`` and
  ``secure.yaml`` apply); keystoneauth1 logs in, the token's project is the project, and the endpoint of service
  type ``data-protect`` comes from the token's catalog (or the entry's ``data_protect_endpoint_override``).

Errors: an API refusal exits 1 with ``CSBS.xxxx: <message>`` (as the local commands say it); a service that
cannot be reached exits 1 with ``cannot reach opencsbs at <url>: <why>``; Keystone refusing the login exits 1
with ``cannot log in with cloud '<name>': <why>``; a missing token, project or clouds.yaml entry exits 2.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

import click

from opencsbs.cli._common import ConfigExit, Ctx

#: the default CSBS provider id (``settings.provider_id``): asked for only when the service does not list one
DEFAULT_PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
#: the catalog's service type of CSBS (as the Huawei/OTC SDKs look it up)
SERVICE_TYPE = "data-protect"
#: ``.../v1`` or ``.../v1/<project>`` at the end of a catalog endpoint (the API's roots are above it)
_VERSIONED = re.compile(r"/v1(?:/[^/]*)?/?$")
#: the servers a page of :meth:`Remote.server_names` asks for (the servers route's default page)
NAMES_PAGE = 1000


def answer(response, url: str) -> Any:
    """The JSON body of an httpx ``response`` from the opencsbs at ``url`` (``None`` for an empty one); raises
    ``click.ClickException`` with ``error_code: error_msg`` for an error answer."""
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if isinstance(body, dict) and "error_code" in body:
            raise click.ClickException(f"{body['error_code']}: {body.get('error_msg', '')}")
        raise click.ClickException(f"opencsbs at {url} answered {response.status_code} {response.reason_phrase}")
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise click.ClickException(f"opencsbs at {url} answered {response.status_code} with a body that is not "
                                   "JSON") from None


def with_sizes(body: dict) -> dict:
    """A backup as the API answers it plus the ``source_bytes`` (its disks' sizes: GiB in the API) and
    ``stored_bytes`` (``extend_info.size``: MiB, rounded up) the local listing shows exactly."""
    ext = body.get("extend_info") or {}
    disks = sum(int(vb.get("source_volume_size") or 0) for vb in ext.get("volume_backups") or [])
    return {**body, "source_bytes": disks * 1024**3, "stored_bytes": int(ext.get("size") or 0) * 1024**2}


def login(url: str, username: str, password: str, project: str, domain: str, timeout: float = 30.0) -> dict:
    """A token of a Keystone user from the opencsbs at ``url`` (``POST /opencsbs/v1/auth/tokens``, keystone
    mode): ``{"id", "project_id", "project_name", "user_id", "expires_at"}``. Refusals as :func:`answer`."""
    import httpx

    body = {"auth": {"username": username, "password": password, "project": project, "domain": domain}}
    try:
        response = httpx.post(f"{url.rstrip('/')}/opencsbs/v1/auth/tokens", json=body, timeout=timeout)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach opencsbs at {url}: {exc}") from None
    return answer(response, url)["token"]


class Remote:
    """HTTP calls to the opencsbs at ``url`` (the API's root) with ``token`` (``X-Auth-Token``) for ``project``:
    :meth:`v1` for the CSBS routes (``/v1/{project}/...``), :meth:`ext` for the extension routes
    (``/opencsbs/v1/{project}/...``)."""

    def __init__(self, url: str, token: str | None, project: str | None, *, timeout: float = 30.0):
        if not token:
            raise click.UsageError("--url needs a token: --token TOKEN or OPENCSBS_TOKEN")
        if not project:
            raise click.UsageError("--project is required with --url (the project the token is scoped to)")
        import httpx

        self.url = url.rstrip("/")
        self.project = project
        self._provider: str | None = None
        self._client = httpx.Client(base_url=self.url, timeout=timeout,
                                    headers={"X-Auth-Token": token, "Accept": "application/json"})

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc) -> None:
        self._client.close()

    def close(self) -> None:
        self._client.close()

    def call(self, method: str, path: str, **kwargs) -> Any:
        """The JSON body of ``method path`` (``None`` for an empty one); raises ``click.ClickException`` for an
        error answer (its ``error_code: error_msg``) or a service that cannot be reached."""
        import httpx

        if "params" in kwargs:
            kwargs["params"] = {k: v for k, v in kwargs["params"].items() if v is not None}
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach opencsbs at {self.url}: {exc}") from None
        return answer(response, self.url)

    def v1(self, method: str, path: str, **kwargs) -> Any:
        return self.call(method, f"/v1/{self.project}{path}", **kwargs)

    def ext(self, method: str, path: str, **kwargs) -> Any:
        return self.call(method, f"/opencsbs/v1/{self.project}{path}", **kwargs)

    @property
    def provider(self) -> str:
        """The id of the service's (first) provider."""
        if self._provider is None:
            providers = self.v1("GET", "/providers").get("providers") or [{"id": DEFAULT_PROVIDER}]
            self._provider = providers[0]["id"]
        return self._provider

    # --- the calls the commands make --------------------------------------------------------------------

    def backups(self, params: dict[str, Any]) -> list[dict]:
        return [self._backup_body(b) for b in self.v1("GET", "/checkpoint_items", params=params)["checkpoint_items"]]

    def backup(self, item_id: str) -> dict:
        return self._backup_body(self.v1("GET", f"/checkpoint_items/{item_id}")["checkpoint_item"])

    def _backup_body(self, body: dict) -> dict:
        """A backup the API answered (:func:`with_sizes`) with the ``project_id`` the local commands show: the
        project of the route that answered it."""
        return {"project_id": self.project, **with_sizes(body)}

    def protect(self, server_id: str, protect: dict) -> dict:
        """Start a backup of ``server_id``; returns its checkpoint_item (the checkpoint holds one)."""
        checkpoint = self.v1("POST", f"/providers/{self.provider}/resources/{server_id}/action",
                             json={"protect": protect})["checkpoint"]
        items = self.backups({"checkpoint_id": checkpoint["id"]})
        if not items:
            raise click.ClickException(f"backup started (checkpoint {checkpoint['id']}) but it is not listed")
        return items[0]

    def delete_backup(self, item: dict) -> None:
        self.v1("DELETE", f"/providers/{self.provider}/checkpoints/{item['checkpoint_id']}",
                params={"checkpoint_items": item["id"]})

    def restore(self, restore_id: str) -> dict:
        return self.v1("GET", f"/restores/{restore_id}")["restore"]

    def start_restore(self, item: dict, target_id: str | None, power_on: bool) -> dict:
        """Restore backup ``item`` onto its server (each disk backup onto its own disk) or onto ``target_id``
        (onto the target's disks in device order, as the local command maps them)."""
        disks = item["extend_info"]["volume_backups"]
        if target_id and target_id != item["resource_id"]:
            volumes = self.server_volumes(target_id)
            mapping = [{"backup_id": vb["id"], "volume_id": vb["source_volume_id"]
                        if vb["source_volume_id"] in volumes or i >= len(volumes) else volumes[i]}
                       for i, vb in enumerate(disks)]
        else:
            target_id = item["resource_id"]
            mapping = [{"backup_id": vb["id"], "volume_id": vb["source_volume_id"]} for vb in disks]
        body = {"restore": {"provider_id": self.provider, "checkpoint_id": item["checkpoint_id"], "parameters": {
            "checkpoint_item_id": item["id"], "power_on": power_on,
            "targets": {"server_id": target_id, "volumes": mapping}}}}
        return self.v1("POST", "/restores", json=body)["restore"]

    def server_pages(self, page_size: int | None = None) -> Iterator[list[dict]]:
        """The project's servers, one page of at most ``page_size`` at a time, in the order of the servers
        extension route (``GET /opencsbs/v1/{project}/servers``, paged by ``marker`` = the last id of the page
        before; ``page_size`` defaults to ``NAMES_PAGE``). Raises :class:`click.ClickException` for a refusal, a service that cannot be reached or an answer
        without a list of servers with ids."""
        page_size = page_size or NAMES_PAGE
        marker = None
        while True:
            body = self.ext("GET", "/servers", params={"marker": marker, "limit": page_size})
            page = body.get("servers") if isinstance(body, dict) else None
            if not isinstance(page, list) or not all(isinstance(s, dict) and "id" in s for s in page):
                raise click.ClickException(f"{self.url}: the servers route answered without a list of servers")
            yield page
            if len(page) < page_size:
                return
            marker = page[-1]["id"]

    def server_volumes(self, server_id: str) -> list[str]:
        """The volume ids of server ``server_id``, in device order (the servers extension route, every page).
        Raises :class:`click.ClickException` when the project has no such server."""
        for page in self.server_pages():
            for server in page:
                if server["id"] == server_id:
                    return [v["id"] for v in sorted(server["volumes"], key=lambda v: v.get("device") or "")]
        raise click.ClickException(f"server '{server_id}' not found in project {self.project}")

    def policies(self, params: dict[str, Any]) -> list[dict]:
        return self.v1("GET", "/policies", params=params)["policies"]

    def policy(self, policy_id: str) -> dict:
        return self.v1("GET", f"/policies/{policy_id}")["policy"]

    def run_policy(self, policy_id: str, servers: list[str] | None) -> dict:
        parameters: dict[str, Any] = {"auto_trigger": False}
        if servers:
            parameters["resources"] = servers
        return self.v1("POST", f"/providers/{self.provider}/checkpoints",
                       json={"checkpoint": {"plan_id": policy_id, "parameters": parameters}})["checkpoint"]

    def check(self, server_ids: list[str]) -> list[dict]:
        body = {"check_protectable": [{"resource_id": sid, "resource_type": "OS::Nova::Server"}
                                      for sid in server_ids]}
        return self.v1("POST", f"/providers/{self.provider}/resources/action", json=body)["protectable"]

    def server_names(self, server_ids: list[str], page_size: int | None = None) -> dict[str, str]:
        """The names of those of ``server_ids`` the project's server list shows (the servers extension route,
        ``GET /opencsbs/v1/{project}/servers``: check_protectable answers no names): one request per page of
        ``page_size`` servers, until every one is found or the list ends. Best effort: a refusal, a service
        that cannot be reached or an answer without a server list ends the search with the names found so far
        (the caller shows ``-`` for the others)."""
        wanted = set(server_ids)
        names: dict[str, str] = {}
        try:
            for page in self.server_pages(page_size):
                names.update({s["id"]: s["name"] for s in page if s["id"] in wanted and s.get("name")})
                if not wanted - names.keys():
                    break
        except click.ClickException:
            pass
        return names

def keystone_remote(cloud: str, project: str | None) -> Remote:
    """A :class:`Remote` for clouds.yaml entry ``cloud``: log in with keystoneauth1 (through openstacksdk's
    config loader), take the token's project and the ``data-protect`` endpoint. Raises :class:`ConfigExit` for an
    unknown entry or a missing openstacksdk, ``click.ClickException`` for a refused login or no endpoint."""
    try:
        from openstack import config as os_config
        from openstack import exceptions as os_exceptions
    except ImportError:
        raise ConfigExit("--os-cloud needs openstacksdk's config loader: pip install -e '.[openstack]'") from None
    from keystoneauth1 import exceptions as ks_exceptions

    try:
        region = os_config.OpenStackConfig().get_one(cloud=cloud)
    except os_exceptions.ConfigException as exc:
        raise ConfigExit(f"clouds.yaml: {exc}") from None
    try:
        session = region.get_session()
        token = session.get_token()
        token_project = session.get_project_id()
        endpoint = region.get_endpoint(SERVICE_TYPE) or region.get_endpoint_from_catalog(SERVICE_TYPE)
    except (ks_exceptions.ClientException, os_exceptions.SDKException) as exc:
        raise click.ClickException(f"cannot log in with cloud '{cloud}': {exc}") from None
    if not endpoint:
        raise click.ClickException(f"cloud '{cloud}': the token's catalog has no '{SERVICE_TYPE}' endpoint "
                                   f"(or set {SERVICE_TYPE.replace('-', '_')}_endpoint_override in clouds.yaml)")
    if project and token_project and project != token_project:
        raise click.UsageError(f"--project {project} is not the project of cloud '{cloud}' ({token_project})")
    endpoint = endpoint.replace("$(project_id)s", token_project or "").replace("%(project_id)s", token_project or "")
    return Remote(_VERSIONED.sub("", endpoint.rstrip("/")) or endpoint, token, token_project or project)


def remote_of(ctx, project: str | None) -> Remote | None:
    """A :class:`Remote` when the command line was given ``--url`` (``OPENCSBS_URL``) or ``--os-cloud``
    (``OS_CLOUD``), else ``None`` (the local mode)."""
    url = getattr(ctx, "url", None)
    if url:
        return Remote(url, getattr(ctx, "token", None), project)
    cloud = getattr(ctx, "os_cloud", None)
    if cloud:
        return keystone_remote(cloud, project)
    return None


def local_only(ctx, what: str) -> None:
    """Refuse a command that has no API (``what``) in client mode: exit 2 naming it."""
    if getattr(ctx, "url", None) or getattr(ctx, "os_cloud", None):
        raise ConfigExit(f"{what} has no API: it works on the service's own database and bank only; run it on "
                         "the service's machine without --url/--os-cloud (OPENCSBS_URL, OS_CLOUD)")


#: the commands without an API (a group: every command in it), as docs/cli.md lists them: in client mode they
#: refuse in one line (exit 2) rather than open a local database or bank (:func:`refuse_client_mode`)
LOCAL_ONLY = ("serve", "worker", "scheduler", "workers", "db", "bank", "sandbox", "rules", "token create",
              "token list", "token revoke", "replication rule", "replication run", "restore list")


def refuse_client_mode(root: click.Group, paths=LOCAL_ONLY) -> None:
    """Make each command of ``paths`` under ``root`` (``"bank"``: every command of the group) call
    :func:`local_only` before it runs, so that with ``--url``/``--os-cloud`` it exits 2 naming itself."""
    for path in paths:
        command: click.Command = root
        for name in path.split():
            command = command.commands[name]  # type: ignore[attr-defined]
        for leaf_path, leaf in _leaves(command, path):
            leaf.callback = _refusing(leaf.callback, leaf_path)


def _leaves(command: click.Command, path: str):
    """``(path, command)`` of ``command`` and, for a group, of every command below it."""
    if not isinstance(command, click.Group):
        yield path, command
        return
    for name, sub in command.commands.items():
        yield from _leaves(sub, f"{path} {name}")


def _refusing(callback, what: str):
    """``callback`` preceded by :func:`local_only` on the command line's state (``what``: the command's name)."""
    @functools.wraps(callback)
    def refusing(*args, **kwargs):
        local_only(click.get_current_context().find_object(Ctx), what)
        return callback(*args, **kwargs)

    return refusing
