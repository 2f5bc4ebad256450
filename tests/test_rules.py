"""Authorization rules: defaults in code, YAML overrides, 403 with the documented body."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from opencsbs.auth.base import Principal
from opencsbs.auth.rules import DEFAULT_RULES, Enforcer, PolicyFileError, Rule, load_policy_file, parse_rule

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
SERVER = "6507cb66-90dc-4a12-a573-c9f3398f899d"


def _p(*roles: str, project: str = "demo", system: bool = False, admin_project: bool = False) -> Principal:
    return Principal(project_id="" if system else project, user_id="u", roles=frozenset(roles),
                     system_scope="all" if system else None, is_admin_project=admin_project)


ADMIN_ROLES = ("reader", "member", "admin")
CROSS = ("context_is_admin", "csbs:all_tenants", "csbs:locks:bypass_governance", "csbs:workers:read")
#: a project's admin only (docs/locks.md): a member's stolen token cannot lock data away or release a hold
ADMIN_ONLY = ("csbs:locks:write", "csbs:holds:write")


def test_defaults_reader_reads_member_changes_admin_of_its_project_only():
    e = Enforcer()
    reader, member, admin = _p("reader"), _p("reader", "member"), _p(*ADMIN_ROLES)
    cloud, ops = _p(*ADMIN_ROLES, system=True), _p(*ADMIN_ROLES, project="ops", admin_project=True)
    for rule in DEFAULT_RULES:
        write = rule.endswith((":write", ":create", ":delete", ":protect"))
        assert e.allowed(reader, rule) == (not write and rule not in CROSS), rule
        assert e.allowed(member, rule) == (rule not in CROSS + ADMIN_ONLY), rule
        assert e.allowed(admin, rule) == (rule not in CROSS), rule
        assert e.allowed(cloud, rule) and e.allowed(ops, rule), rule
    assert not e.allowed(admin, "csbs:no-such-rule")  # unknown rules: cloud admins only
    assert e.allowed(cloud, "csbs:no-such-rule")
    assert not e.allowed(_p("service"), "csbs:providers:read")
    # a system-scoped or admin-project token without the admin role is no cloud admin
    assert not e.is_cloud_admin(_p("reader", "member", system=True))
    assert not e.is_cloud_admin(_p("reader", "member", project="ops", admin_project=True))
    assert e.may_act_on(admin, "demo") and not e.may_act_on(admin, "other")
    assert e.may_act_on(cloud, "other") and e.may_act_on(ops, "other")
    assert not e.may_act_on(_p("reader", system=True), "")  # no project of its own


@pytest.mark.parametrize("value, roles", [
    (["member", "Admin"], {"member", "admin"}),
    ("role:member or role:admin", {"member", "admin"}),
    ("(role:admin)", {"admin"}),
    ("@", {"reader", "member", "admin"}),
    ("!", set()),
    ("", set()),
    ([], set()),
])
def test_parse_rule(value, roles):
    assert parse_rule(value) == Rule.of_roles(*roles)
    assert parse_rule(value).roles == frozenset(roles)


def test_parse_rule_scope_checks():
    rule = parse_rule("role:Admin and system_scope:all or (role:admin) and is_admin_project:true")
    assert rule == DEFAULT_RULES["context_is_admin"]
    assert parse_rule(rule.render()) == rule
    assert parse_rule("rule:context_is_admin") == DEFAULT_RULES["csbs:all_tenants"]
    assert parse_rule("role:member and role:admin").any_of == (frozenset({"role:member", "role:admin"}),)


@pytest.mark.parametrize("value", ["project_id:%(project_id)s", "role:", 3, [1], {"a": 1}, "rule:admin_api",
                                   "system_scope:domain", "role:admin and not system_scope:all"])
def test_parse_rule_refuses_what_it_cannot_honour(value):
    with pytest.raises(PolicyFileError):
        parse_rule(value)


def test_policy_file_unknown_rule_and_bad_yaml_are_refused(tmp_path):
    f = tmp_path / "policy.yaml"
    f.write_text('"csbs:polices:write": "role:admin"\n')  # typo
    with pytest.raises(PolicyFileError, match="unknown rule"):
        load_policy_file(f)
    f.write_text("- a list\n")
    with pytest.raises(PolicyFileError, match="mapping"):
        load_policy_file(f)
    f.write_text("a: [\n")
    with pytest.raises(PolicyFileError):
        load_policy_file(f)
    f.write_text('"context_is_admin": "rule:context_is_admin"\n')
    with pytest.raises(PolicyFileError, match="itself"):
        load_policy_file(f)


def test_policy_file_overrides_reach_the_api(settings, inventory, tmp_path):
    """check_protectable made admin-only by the file: reader and member get 403 with the gateway body."""
    from fastapi.testclient import TestClient

    from opencsbs.api.app import create_app
    from opencsbs.auth.local import create_token
    from opencsbs.db.base import transaction
    from opencsbs.bootstrap import build_runtime

    f = tmp_path / "policy.yaml"
    f.write_text(yaml.safe_dump({"csbs:resources:check_protectable": "role:admin",
                                 "csbs:providers:read": ["member"]}))
    settings.auth.policy_file = f
    rt = build_runtime(settings, migrate=False)
    try:
        with transaction(rt.sessions) as s:
            tok = {role: create_token(s, "demo", role) for role in ("reader", "member", "admin")}
        from opencsbs.clouds.sandbox.inventory import load_inventory_file

        with transaction(rt.sessions) as s:
            load_inventory_file(s, inventory, rt.settings.volumes_dir)
        body = {"check_protectable": [{"resource_id": SERVER, "resource_type": "OS::Nova::Server"}]}
        with TestClient(create_app(rt), raise_server_exceptions=False) as c:
            url = f"/v1/demo/providers/{PROVIDER}/resources/action"
            for role in ("reader", "member"):
                r = c.post(url, json=body, headers={"X-Auth-Token": tok[role]})
                assert r.status_code == 403
                assert r.json() == {"error_code": "APIGW.0302", "error_msg": "The IAM user is not authorized to "
                                    "access the API: csbs:resources:check_protectable is not allowed for this token"}
            assert c.post(url, json=body, headers={"X-Auth-Token": tok["admin"]}).status_code == 200
            assert c.get("/v1/demo/providers", headers={"X-Auth-Token": tok["reader"]}).status_code == 403
            assert c.get("/v1/demo/providers", headers={"X-Auth-Token": tok["member"]}).status_code == 200
    finally:
        rt.close()


def test_cli_rules_show_round_trips(tmp_path, monkeypatch):
    from opencsbs.cli import main

    monkeypatch.delenv("OPENCSBS_CONFIG", raising=False)
    out = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "rules", "show"])
    assert out.exit_code == 0, out.output
    f = tmp_path / "p.yaml"
    f.write_text(out.output)
    assert Enforcer.from_file(f).rules == DEFAULT_RULES
    f.write_text('"csbs:tags:write": "role:admin"\n')
    monkeypatch.setenv("OPENCSBS_AUTH__POLICY_FILE", str(f))
    out = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "rules", "show"])
    assert '"csbs:tags:write": "role:admin"' in out.output
    f.write_text('"csbs:tag:write": "role:admin"\n')
    out = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "rules", "show"])
    assert out.exit_code != 0 and "unknown rule" in out.output


def test_every_operation_goes_through_a_rule(settings, inventory, tmp_path):
    """With every rule set to nobody ("!"), even an admin gets no 2xx from any operation of /openapi.json (403,
    or 400 where the body is judged before the rule), so no route escapes the policy file."""
    import re
    import uuid

    from fastapi.testclient import TestClient

    from opencsbs.api.app import create_app
    from opencsbs.auth.local import create_token
    from opencsbs.db.base import transaction
    from opencsbs.bootstrap import build_runtime

    f = tmp_path / "nobody.yaml"
    f.write_text(yaml.safe_dump({rule: "!" for rule in DEFAULT_RULES}))
    settings.auth.policy_file = f
    rt = build_runtime(settings, migrate=False)
    try:
        with transaction(rt.sessions) as s:
            admin = create_token(s, "demo", "admin")
            cloud = create_token(s, None, cloud_admin=True)
        with TestClient(create_app(rt), raise_server_exceptions=False) as c:
            doc = c.get("/openapi.json").json()
            seen = 0
            for path, ops in doc["paths"].items():
                if "{project_id}" not in path:
                    continue
                url = re.sub(r"\{(\w+)\}", lambda m: {"project_id": "demo", "provider_id": PROVIDER}.get(
                    m.group(1), str(uuid.uuid4())), path)
                for method, op in ops.items():
                    body = {} if "requestBody" in op else None
                    allowed = (403, 400) if "requestBody" in op else (403,)
                    for tok in (admin, cloud):
                        r = c.request(method.upper(), url, json=body, headers={"X-Auth-Token": tok})
                        assert r.status_code in allowed, (method, path, r.status_code, r.text[:200])
                    seen += 1
            assert seen >= 10
    finally:
        rt.close()


def test_rule_names_used_by_the_routes_are_known():
    """A rule name the code enforces but the defaults lack would silently be admin-only."""
    import re
    from pathlib import Path

    import opencsbs

    root = Path(opencsbs.__file__).parent
    used = set()
    for py in list((root / "api").rglob("*.py")) + list((root / "service").rglob("*.py")):
        used |= set(re.findall(r"""(?:require|enforce)\(\s*["'](csbs:[\w:]+)["']""", py.read_text()))
    assert used, "no rule names found"
    assert used <= set(DEFAULT_RULES), used - set(DEFAULT_RULES)
