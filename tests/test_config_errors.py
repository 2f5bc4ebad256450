"""Configuration mistakes (config file and ``OPENCSBS_*`` variables) stop every command with one line naming the
file, key or variable, and exit code 2: never a traceback, never a silently ignored key."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from opencsbs.config import ConfigError, check_environment, load_settings


def run(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENCSBS_")}
    clean.update(env)
    return subprocess.run([sys.executable, "-m", "opencsbs", "--data-dir", str(tmp_path / "d"), *args],
                          capture_output=True, text=True, timeout=120, env=clean)


def one_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.mark.parametrize("command", [["sandbox", "list"], ["serve", "--port", "1"], ["worker"], ["scheduler"]])
def test_invalid_yaml_in_the_config_file_is_one_line_with_file_and_line(tmp_path, command):
    config = tmp_path / "c1.yaml"
    config.write_text("port: [1\n")
    line = one_line(run(tmp_path, "--config", str(config), *command))
    assert line == f"Error: invalid settings: {config}:2:1: invalid YAML: expected ',' or ']', but got '<stream end>'"


def test_unknown_keys_in_the_config_file_are_refused_with_the_nearest_name(tmp_path):
    config = tmp_path / "c2.yaml"
    config.write_text("prot: 1234\n")
    assert one_line(run(tmp_path, "--config", str(config), "serve")) == (
        f"Error: invalid settings: {config}: unknown key 'prot' (did you mean 'port'?)")
    config.write_text("port: 1234\ncloud:\n  drvier: libvirt\n")
    assert one_line(run(tmp_path, "--config", str(config), "serve")) == (
        f"Error: invalid settings: {config}: unknown key 'cloud.drvier' (did you mean 'cloud.driver'?)")
    config.write_text("cloud:\n  openstack_rbd_backends:\n    ceph: {pol: volumes}\n")
    assert one_line(run(tmp_path, "--config", str(config), "sandbox", "list")) == (
        f"Error: invalid settings: {config}: unknown key 'cloud.openstack_rbd_backends.ceph.pol' "
        "(did you mean 'cloud.openstack_rbd_backends.ceph.pool'?)")


def test_a_config_file_that_is_not_a_mapping_is_refused(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("- port\n")
    assert one_line(run(tmp_path, "--config", str(config), "sandbox", "list")) == (
        f"Error: invalid settings: {config}: the config file must hold a mapping of settings, not list")


def test_unknown_settings_in_environment_variables_are_refused_with_the_nearest_name(tmp_path):
    assert one_line(run(tmp_path, "sandbox", "list", OPENCSBS_PROT="1234")) == (
        "Error: invalid settings: OPENCSBS_PROT: unknown setting 'prot' (did you mean OPENCSBS_PORT?)")
    assert one_line(run(tmp_path, "serve", OPENCSBS_CLOUD__DRVIER="libvirt")) == (
        "Error: invalid settings: OPENCSBS_CLOUD__DRVIER: unknown setting 'cloud.drvier' "
        "(did you mean OPENCSBS_CLOUD__DRIVER?)")


def test_a_list_that_is_not_json_names_the_variable_and_the_shape(tmp_path):
    assert one_line(run(tmp_path, "sandbox", "list", OPENCSBS_CLOUD__AZS_WITHOUT_BACKUP="az-nobackup")) == (
        """Error: invalid settings: OPENCSBS_CLOUD__AZS_WITHOUT_BACKUP: expected a JSON list, e.g. '["az-nobackup"]'""")
    r = run(tmp_path, "sandbox", "list", OPENCSBS_CLOUD__AZS_WITHOUT_BACKUP='["az-nobackup"]')
    assert r.returncode == 0, r.stderr


def test_a_value_of_the_wrong_type_exits_2(tmp_path):
    line = one_line(run(tmp_path, "sandbox", "list", OPENCSBS_LOG_FORMAT="xml"))
    assert line.startswith("Error: invalid settings: log_format: Input should be 'text' or 'json'"), line


def test_variables_of_other_tools_are_left_alone():
    check_environment({"OPENCSBS_TEST_DB": "postgresql", "OPENCSBS_CONFIG": "x.yaml", "OPENCSBS_WORK": "/w",
                       "OPENCSBS_SOMETHING_ELSE": "1", "OTHER": "x", "OPENCSBS_PORT": "8799",
                       "OPENCSBS_CLOUD__OPENSTACK_RBD_BACKENDS__CEPH__POOL": "volumes",
                       "OPENCSBS_CLOUD__OPENSTACK_RBD_BACKENDS__HDD": '{"pool": "hdd"}',
                       "OPENCSBS_QUOTAS__PROJECTS__DEMO": '{"backups": 5}'})
    with pytest.raises(ConfigError, match=r"^OPENCSBS_CLOUD__OPENSTACK_RBD_BACKENDS__HDD: expected a JSON object"):
        check_environment({"OPENCSBS_CLOUD__OPENSTACK_RBD_BACKENDS__HDD": "hdd"})
    with pytest.raises(ConfigError, match=r"^OPENCSBS_CLOUD__LIBVIRT_RBD__POL: unknown setting 'cloud.libvirt_rbd"
                                          r".pol' \(did you mean OPENCSBS_CLOUD__LIBVIRT_RBD__POOL\?\)"):
        check_environment({"OPENCSBS_CLOUD__LIBVIRT_RBD__POL": "x"})
    with pytest.raises(ConfigError, match=r"^OPENCSBS_QUOTAS__PROJECTS: expected a JSON object"):
        check_environment({"OPENCSBS_QUOTAS__PROJECTS": "demo"})


def test_the_test_tools_variables_are_left_alone():
    """Every ``OPENCSBS_*`` variable the test command and its component scripts read is left alone: scripts/test.sh
    exports the components' port variables (``OPENCSBS_RGW_PORT=auto``, ...), and every opencsbs process a test
    starts inherits them (``OPENCSBS_RGW_PORT`` once read as a misspelt ``OPENCSBS_PORT``)."""
    import re
    from pathlib import Path

    scripts = Path(__file__).resolve().parent.parent / "scripts"
    names = {m for f in scripts.rglob("*.sh") for m in re.findall(r"\bOPENCSBS_[A-Z0-9_]*[A-Z0-9]", f.read_text())}
    assert {"OPENCSBS_RGW_PORT", "OPENCSBS_OPENSTACK_PORTS", "OPENCSBS_TEST_PORTS"} <= names
    check_environment({name: "auto" for name in names if not name.startswith("OPENCSBS_CLOUD__")})


def test_a_good_config_file_still_loads(tmp_path):
    config = tmp_path / "ok.yaml"
    config.write_text("port: 1234\nlog_format: JSON\ncloud:\n  azs_without_backup: [az-x]\n"
                      "  openstack_rbd_backends:\n    ceph: {pool: v}\n")
    s = load_settings(config)
    assert (s.port, s.log_format, s.cloud.azs_without_backup) == (1234, "json", ["az-x"])
    assert s.cloud.openstack_rbd_backends["ceph"].pool == "v"
