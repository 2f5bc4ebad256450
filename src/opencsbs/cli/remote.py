"""The command line as a client of a running opencsbs: with ``--url`` (``OPENCSBS_URL``) and ``--token``
(``OPENCSBS_TOKEN``), ``backup list|show``, ``check`` and ``policy list|show`` ask the CSBS v1 API over HTTP
(httpx) instead of opening the database and the bank, so they work from an operator's laptop with a project
token. The answers are the API's bodies, shown as the local commands show them.

Errors: an API refusal exits 1 with ``CSBS.xxxx: <message>`` (as the local commands say it); a service that
cannot be reached exits 1 with ``cannot reach opencsbs at <url>: <why>``; a missing token or project exits 2.
"""

from __future__ import annotations

from typing import Any

import click

#: the default CSBS provider id (``settings.provider_id``): asked for only when the service does not list one
DEFAULT_PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"


class Remote:
    """HTTP calls to the opencsbs at ``url`` with ``token`` (``X-Auth-Token``), for ``project``."""

    def __init__(self, url: str, token: str | None, project: str | None, *, timeout: float = 30.0):
        if not token:
            raise click.UsageError("--url needs a token: --token TOKEN or OPENCSBS_TOKEN")
        if not project:
            raise click.UsageError("--project is required with --url (the project the token is scoped to)")
        self.url = url.rstrip("/")
        self.project = project
        self._client = __import__("httpx").Client(base_url=f"{self.url}/v1/{project}",
                                                  headers={"X-Auth-Token": token, "Accept": "application/json"},
                                                  timeout=timeout, verify=True)

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc) -> None:
        self._client.close()

    def call(self, method: str, path: str, **kwargs) -> Any:
        """The JSON body of ``method path``; raises ``click.ClickException`` for an error answer (its
        ``error_code: error_msg``) or a service that cannot be reached."""
        import httpx

        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach opencsbs at {self.url}: {exc}") from None
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            if isinstance(body, dict) and "error_code" in body:
                raise click.ClickException(f"{body['error_code']}: {body.get('error_msg', '')}")
            raise click.ClickException(f"opencsbs at {self.url} answered {response.status_code} "
                                       f"{response.reason_phrase}")
        return response.json() if response.content else None

    # --- the calls the commands make --------------------------------------------------------------------

    def backups(self, params: dict[str, Any]) -> list[dict]:
        return self.call("GET", "/checkpoint_items", params={k: v for k, v in params.items() if v is not None}
                         )["checkpoint_items"]

    def backup(self, item_id: str) -> dict:
        return self.call("GET", f"/checkpoint_items/{item_id}")["checkpoint_item"]

    def policies(self, params: dict[str, Any]) -> list[dict]:
        return self.call("GET", "/policies", params={k: v for k, v in params.items() if v is not None})["policies"]

    def policy(self, policy_id: str) -> dict:
        return self.call("GET", f"/policies/{policy_id}")["policy"]

    def check(self, server_ids: list[str]) -> list[dict]:
        providers = self.call("GET", "/providers").get("providers") or [{"id": DEFAULT_PROVIDER}]
        body = {"check_protectable": [{"resource_id": sid, "resource_type": "OS::Nova::Server"}
                                      for sid in server_ids]}
        return self.call("POST", f"/providers/{providers[0]['id']}/resources/action", json=body)["protectable"]


def remote_of(ctx, project: str | None) -> Remote | None:
    """A :class:`Remote` when the command line was given ``--url`` (or ``OPENCSBS_URL``), else ``None``."""
    url = getattr(ctx, "url", None)
    return Remote(url, getattr(ctx, "token", None), project) if url else None
