"""Identity, catalog and fixtures of the test OpenStack (idempotent). Run with the nova venv's python.

Creates: project ``service`` with users nova/cinder/placement/ironic (roles admin + service: Nova passes a service
token to Cinder, and keystonemiddleware requires the ``service`` role on it); the opencsbs service user
``opencsbs`` (roles admin + service in project ``service``: it lists servers and volumes of every project and
validates tokens); project
``csbs-demo`` with user ``csbs-demo`` (role member: the token pass-through mode; also member of ``csbs-bench``, the
benchmark's project); the catalog (compute, volumev3,
block-storage, placement, network and image (stubs.py), baremetal); the flavor ``csbs.tiny``, volume types
``multiattach`` (extra spec multiattach), ``ssd`` and ``dss``, unlimited quotas for ``csbs-demo``, ``csbs-bench`` and ``admin``, and host aggregates: AZ ``az1`` = ci-host, AZ
``az-nobackup`` = ci-host-2. With ``RBD=1`` in the environment (the stack has Ceph): volume type ``rbd`` (extra spec
``volume_backend_name=ceph``, Cinder's RBD backend), every other type pinned to the fake backend
(``volume_backend_name=fake``, so only ``rbd`` volumes land in Ceph), and AZ ``az-kvm`` = kvm-host (libvirt driver).

    python bootstrap.py identity      # before the nova services start (they read the catalog once)
    python bootstrap.py fixtures      # once the compute services are up
"""

import os
import sys
import warnings

import openstack

warnings.filterwarnings("ignore")
PW = "s3cret"


def port(service, default):
    """The stack's port of ``service`` (openstack.sh exports KS_PORT, NOVA_PORT, ...; the fixed ports otherwise)."""
    return int(os.environ.get(f"{service}_PORT", default))


def admin():
    return openstack.connect(auth_url=os.environ.get("AUTH_URL", "http://127.0.0.1:5000/v3"), username="admin",
                             password=PW,
                             project_name="admin", user_domain_id="default", project_domain_id="default",
                             region_name="RegionOne")


def identity(conn):
    idn = conn.identity
    service = idn.find_project("service") or idn.create_project(name="service", domain_id="default")
    demo = idn.find_project("csbs-demo") or idn.create_project(name="csbs-demo", domain_id="default")
    bench = idn.find_project("csbs-bench") or idn.create_project(name="csbs-bench", domain_id="default")
    admin_role = idn.find_role("admin")
    member_role = idn.find_role("member") or idn.create_role(name="member")
    svc_role = idn.find_role("service") or idn.create_role(name="service")

    def user(name, project):
        return idn.find_user(name) or idn.create_user(name=name, password=PW, domain_id="default",
                                                      default_project_id=project.id)

    for name in ("nova", "cinder", "placement", "ironic"):
        u = user(name, service)
        for role in (admin_role, svc_role):
            idn.assign_project_role_to_user(service, u, role)
    opencsbs = user("opencsbs", service)
    for role in (admin_role, svc_role):  # admin: list every project's servers; service: validate tokens
        idn.assign_project_role_to_user(service, opencsbs, role)
    member = user("csbs-demo", demo)
    idn.assign_project_role_to_user(demo, member, member_role)
    idn.assign_project_role_to_user(bench, member, member_role)
    for name, typ, url in (("cinderv3", "volumev3", f"http://127.0.0.1:{port('CINDER', 8776)}/v3/$(project_id)s"),
                           ("cinder", "block-storage", f"http://127.0.0.1:{port('CINDER', 8776)}/v3/$(project_id)s"),
                           ("nova", "compute", f"http://127.0.0.1:{port('NOVA', 8774)}/v2.1"),
                           ("placement", "placement", f"http://127.0.0.1:{port('PLACEMENT', 8778)}"),
                           ("neutron", "network", f"http://127.0.0.1:{port('NEUTRON', 9696)}"),
                           ("glance", "image", f"http://127.0.0.1:{port('GLANCE', 9292)}"),
                           ("ironic", "baremetal", f"http://127.0.0.1:{port('IRONIC', 6385)}")):
        if idn.find_service(name):
            continue
        svc = idn.create_service(name=name, type=typ)
        for iface in ("public", "internal", "admin"):
            idn.create_endpoint(service_id=svc.id, interface=iface, region_id="RegionOne", url=url)


def fixtures(conn):
    """Flavor csbs.tiny, volume types and the az-nobackup aggregate (after the compute services registered)."""
    if conn.compute.find_flavor("csbs.tiny") is None:
        conn.compute.create_flavor(name="csbs.tiny", ram=128, vcpus=1, disk=1)
    bs = conn.block_storage
    types = {t.name: t for t in bs.types()}
    if "multiattach" not in types:
        bs.create_type(name="multiattach", extra_specs={"multiattach": "<is> True"})
    for name in ("ssd", "dss"):
        if name not in types:
            bs.create_type(name=name)
    rbd = os.environ.get("RBD") == "1"
    if rbd:
        if "rbd" not in types:
            bs.create_type(name="rbd", extra_specs={"volume_backend_name": "ceph"})
        for t in bs.types():
            if t.name != "rbd" and (t.extra_specs or {}).get("volume_backend_name") != "fake":
                bs.update_type_extra_specs(t, volume_backend_name="fake")
    # no quota in the way of tests and benchmarks that make many servers and volumes
    for project in ("csbs-demo", "csbs-bench", "admin"):
        pid = conn.identity.find_project(project).id
        conn.set_compute_quotas(pid, instances=-1, cores=-1, ram=-1)
        conn.set_volume_quotas(pid, volumes=-1, gigabytes=-1, snapshots=-1)
    aggs = {a.name: a for a in conn.compute.aggregates()}
    zones = [("main", "az1", "ci-host"), ("nobackup", "az-nobackup", "ci-host-2")]
    if rbd:
        zones.append(("kvm", "az-kvm", "kvm-host"))
    for name, zone, host in zones:
        agg = aggs.get(name) or conn.compute.create_aggregate(name=name, availability_zone=zone)
        if host not in (agg.hosts or []):
            conn.compute.add_host_to_aggregate(agg, host)


if __name__ == "__main__":
    {"identity": identity, "fixtures": fixtures}[sys.argv[1]](admin())
