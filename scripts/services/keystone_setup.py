"""Provision the test Keystone (idempotent): projects, users, role assignments and the data-protect catalog entry.

Run by ``keystone.sh`` with the Keystone venv's Python: ``keystone_setup.py URL PASSWORD CSBS_ENDPOINT``.
Prints ``export NAME=value`` lines (project ids) for ``keystone.env``.
"""

from __future__ import annotations

import sys

import requests

URL, PW, CSBS_ENDPOINT = sys.argv[1:4]
DOMAIN = {"id": "default"}

#: user -> (project, role)
USERS = {
    "csbs-reader": ("csbs-alpha", "reader"),
    "csbs-member": ("csbs-alpha", "member"),
    "csbs-admin": ("csbs-alpha", "admin"),
    "csbs-other": ("csbs-beta", "member"),
    "opencsbs": ("service", "service"),
}


def admin_token() -> str:
    body = {"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": "admin", "domain": DOMAIN, "password": PW}}},
        "scope": {"project": {"name": "admin", "domain": DOMAIN}}}}
    r = requests.post(URL + "/auth/tokens", json=body, timeout=30)
    r.raise_for_status()
    return r.headers["X-Subject-Token"]


S = requests.Session()
S.headers["X-Auth-Token"] = admin_token()


def find_or_create(kind: str, plural: str, match: dict, create: dict) -> dict:
    r = S.get(f"{URL}/{plural}", params=match, timeout=30)
    r.raise_for_status()
    found = r.json()[plural]
    if found:
        return found[0]
    r = S.post(f"{URL}/{plural}", json={kind: create}, timeout=30)
    r.raise_for_status()
    return r.json()[kind]


projects = {name: find_or_create("project", "projects", {"name": name},
                                 {"name": name, "domain_id": "default", "enabled": True})
            for name in ("csbs-alpha", "csbs-beta", "service")}
roles = {name: find_or_create("role", "roles", {"name": name}, {"name": name})
         for name in ("reader", "member", "admin", "service")}
for user, (project, role) in USERS.items():
    u = find_or_create("user", "users", {"name": user},
                       {"name": user, "domain_id": "default", "password": PW, "enabled": True})
    r = S.put(f"{URL}/projects/{projects[project]['id']}/users/{u['id']}/roles/{roles[role]['id']}", timeout=30)
    r.raise_for_status()

service = find_or_create("service", "services", {"type": "data-protect"},
                         {"name": "csbs", "type": "data-protect", "description": "Cloud Server Backup Service"})
r = S.get(f"{URL}/endpoints", params={"service_id": service["id"]}, timeout=30)
r.raise_for_status()
existing = {e["interface"]: e for e in r.json()["endpoints"]}
for interface in ("public", "internal", "admin"):
    e = existing.get(interface)
    if e and e["url"] == CSBS_ENDPOINT:
        continue
    if e:
        S.delete(f"{URL}/endpoints/{e['id']}", timeout=30).raise_for_status()
    S.post(f"{URL}/endpoints", json={"endpoint": {
        "service_id": service["id"], "interface": interface, "region_id": "RegionOne", "url": CSBS_ENDPOINT}},
        timeout=30).raise_for_status()

print(f"export OPENCSBS_TEST_KEYSTONE_PROJECT_ALPHA={projects['csbs-alpha']['id']}")
print(f"export OPENCSBS_TEST_KEYSTONE_PROJECT_BETA={projects['csbs-beta']['id']}")
