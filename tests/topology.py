"""A deployment over several "hosts" on this one machine: Linux network namespaces made by the suite itself.

Each host is a network namespace (``ip netns add``) with one veth link to a bridge in the root namespace and an
address of its own in a private /24 of 10.251.0.0/16 (the bridge holds ``.1``, so the test process in the root
namespace reaches every host; hosts reach one another through the bridge). Processes run in a host with
``ip netns exec``; the file system is shared (only the network is separated), so sandbox volume files written by
the test are readable by every worker host, and libvirtd's unix socket in the root namespace is reachable from
every host.

What :class:`Topology` gives (all made and removed by it; needs root, ``ip`` and the PostgreSQL server binaries):

- :meth:`Topology.start_postgres` a private PostgreSQL cluster (``initdb``/``pg_ctl`` as the ``postgres`` user)
  listening on a host's address only;
- :meth:`Topology.start_s3` a private SeaweedFS S3 server (the ``weed`` binary ``scripts/services/s3.sh``
  installs) on a host's address, with credentials of its own;
- :meth:`Topology.start_opencsbs` ``opencsbs serve``/``worker``/``scheduler`` processes in a host, each from a
  config file written for it;
- :meth:`Topology.kill_host` (SIGKILL every process of a host), :meth:`Topology.cut` and :meth:`Topology.mend`
  (``ip link set eth0 down``/``up`` inside the host);
- :meth:`Topology.down` stops every process and deletes every namespace, link and file, also after a failure.

Names carry the creating process's id (``ocs<pid>-<host>``, bridge ``ocb<pid>``): two runs never collide, and
:func:`sweep_leftovers` deletes namespaces and bridges whose creating process is gone (a run that was killed).
The /24 is picked among those no route of this machine uses yet.
"""

from __future__ import annotations

import glob
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
NS_PREFIX = "ocs"
BRIDGE_PREFIX = "ocb"
API_PORT = 8799
PG_PORT = 5432


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def netns_available() -> tuple[bool, str]:
    """(True, "") when this process may make network namespaces (root, ``ip``) and the PostgreSQL server binaries
    and the SeaweedFS binary are there; else (False, why)."""
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    if shutil.which("ip") is None:
        return False, "the ip command (iproute2) is missing"
    if pg_bindir() is None:
        return False, "PostgreSQL server binaries (initdb, pg_ctl) not found (scripts/services/postgres.sh start)"
    if weed_binary() is None:
        return False, "SeaweedFS binary not found (scripts/services/s3.sh start; OPENCSBS_TEST_S3_WEED)"
    return True, ""


def pg_bindir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: ``OPENCSBS_TEST_PG_BINDIR``, else the newest
    ``/usr/lib/postgresql/*/bin``, else ``PATH``."""
    given = os.environ.get("OPENCSBS_TEST_PG_BINDIR")
    if given:
        return Path(given) if (Path(given) / "initdb").exists() else None
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(re.findall(r"/(\d+)/", p)[0]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    """A TCP port nothing listens on in the root network namespace (the kernel's choice)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def weed_binary() -> Path | None:
    """The SeaweedFS binary: ``OPENCSBS_TEST_S3_WEED``, else the one ``scripts/services/s3.sh`` installed under
    ``$OPENCSBS_WORK`` (default ``.work``), else ``weed`` on ``PATH``."""
    given = os.environ.get("OPENCSBS_TEST_S3_WEED")
    work = Path(os.environ.get("OPENCSBS_WORK", ROOT / ".work"))
    for candidate in (given, work / "s3" / "venv" / "bin" / "weed", shutil.which("weed")):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_leftovers() -> list[str]:
    """Delete the namespaces, bridges and folders of earlier runs whose process is gone; returns their names."""
    gone = []
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(rf"{NS_PREFIX}(\d+)-\w+", name)
        if m and not _alive(int(m.group(1))):
            _kill_netns_processes(name)
            _ip("netns", "del", name, check=False)
            gone.append(name)
    for path in Path(tempfile.gettempdir()).glob("opencsbs-topology-*-*"):
        m = re.fullmatch(r"opencsbs-topology-(\d+)-\w+", path.name)
        if m and not _alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            gone.append(str(path))
    for line in _ip("-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
        m = re.search(rf"\d+: ({BRIDGE_PREFIX}(\d+)):", line)
        if m and not _alive(int(m.group(2))):
            _ip("link", "del", m.group(1), check=False)
            gone.append(m.group(1))
    return gone


def _kill_netns_processes(ns: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _free_subnet() -> int:
    """A third octet N such that no route of this machine is in 10.251.N.0/24."""
    used = set(re.findall(r"10\.251\.(\d+)\.", _ip("-4", "route", "show", "table", "all", check=False).stdout))
    choices = [n for n in range(1, 255) if str(n) not in used]
    if not choices:
        raise RuntimeError("no free /24 left in 10.251.0.0/16")
    return random.choice(choices)


@dataclass
class Host:
    """One "host": its namespace, address and the processes started in it."""

    name: str
    ns: str
    ip: str
    link: str  #: the root-namespace end of its veth pair (the host's end is ``eth0``)
    procs: list[subprocess.Popen] = field(default_factory=list)


@dataclass
class S3:
    endpoint: str
    access_key: str
    secret_key: str


class Topology:
    """Hosts ``names`` (in this order: addresses .10, .11, ...) on one bridge; see the module's text."""

    def __init__(self, names: list[str]):
        self.pid = os.getpid()
        self.bridge = f"{BRIDGE_PREFIX}{self.pid}"
        self.octet = _free_subnet()
        self.gateway = f"10.251.{self.octet}.1"
        self.dir = Path(tempfile.mkdtemp(prefix=f"opencsbs-topology-{self.pid}-"))
        self.dir.chmod(0o755)  # the postgres user enters it for its cluster
        self.hosts = {name: Host(name, f"{NS_PREFIX}{self.pid}-{name}", f"10.251.{self.octet}.{10 + i}",
                                 f"oc{self.pid}h{i}") for i, name in enumerate(names)}
        self.pg_data: Path | None = None
        self.logs = self.dir / "logs"
        self.logs.mkdir()

    # --- the network ------------------------------------------------------------------------------------------

    def up(self) -> Topology:
        """Make the bridge, the namespaces and their links; on any failure undo what was made and raise."""
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, host in enumerate(self.hosts.values()):
                peer = f"op{self.pid}h{i}"
                _ip("netns", "add", host.ns)
                _ip("link", "add", host.link, "type", "veth", "peer", "name", peer)
                _ip("link", "set", peer, "netns", host.ns)
                _ip("-n", host.ns, "link", "set", peer, "name", "eth0")
                _ip("-n", host.ns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
                _ip("-n", host.ns, "link", "set", "lo", "up")
                _ip("-n", host.ns, "link", "set", "eth0", "up")
                _ip("link", "set", host.link, "master", self.bridge)
                _ip("link", "set", host.link, "up")
        except BaseException:
            self.down()
            raise
        return self

    def cut(self, name: str) -> None:
        """Cut the host's link (``ip link set eth0 down`` inside it): its processes keep running, unreachable."""
        _ip("-n", self.hosts[name].ns, "link", "set", "eth0", "down")

    def mend(self, name: str) -> None:
        """Bring the host's link back up."""
        _ip("-n", self.hosts[name].ns, "link", "set", "eth0", "up")

    def down(self) -> None:
        """Stop every process (SIGKILL after 10 s), the PostgreSQL cluster, delete namespaces, links and files."""
        for host in self.hosts.values():
            for p in host.procs:
                if p.poll() is None:
                    try:
                        os.killpg(p.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
        deadline = time.monotonic() + 10
        for host in self.hosts.values():
            for p in host.procs:
                try:
                    p.wait(max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        if self.pg_data is not None and (self.pg_data / "postmaster.pid").exists():
            subprocess.run(["runuser", "-u", "postgres", "--", str(pg_bindir() / "pg_ctl"), "-D", str(self.pg_data),
                            "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)
        for host in self.hosts.values():
            if host.ns in _ip("netns", "list", check=False).stdout.split():
                _kill_netns_processes(host.ns)
                _ip("netns", "del", host.ns, check=False)
            _ip("link", "del", host.link, check=False)
        _ip("link", "del", self.bridge, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- processes --------------------------------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], log: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``argv`` in host ``name`` (its own process group), output to ``logs/<log>``."""
        host = self.hosts[name]
        out = open(self.logs / log, "ab")
        proc = subprocess.Popen(["ip", "netns", "exec", host.ns, *argv], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, env={**os.environ, **(env or {})})
        out.close()
        host.procs.append(proc)
        return proc

    def kill_host(self, name: str) -> list[int]:
        """SIGKILL every process started in host ``name``; returns their pids."""
        killed = []
        for p in self.hosts[name].procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                killed.append(p.pid)
        self.hosts[name].procs = [p for p in self.hosts[name].procs if p.poll() is None]
        return killed

    def host_of_pid(self, pid: int) -> str | None:
        """The host whose process ``pid`` is (``ip netns exec`` execs its command: same pid)."""
        for host in self.hosts.values():
            if any(p.pid == pid for p in host.procs):
                return host.name
        return None

    def start_postgres(self, name: str) -> str:
        """A private PostgreSQL cluster on host ``name``'s address (trust authentication from the /24 only);
        returns the SQLAlchemy URL of its new database ``opencsbs``."""
        bindir = pg_bindir()
        host = self.hosts[name]
        self.pg_data = self.dir / "pg"
        self.pg_data.mkdir()
        shutil.chown(self.pg_data, "postgres", "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
        subprocess.run([*as_pg, str(bindir / "initdb"), "-D", str(self.pg_data), "-A", "trust", "-U", "postgres",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        with open(self.pg_data / "pg_hba.conf", "a") as fh:
            fh.write(f"host all all 10.251.{self.octet}.0/24 trust\n")
        options = (f"-c listen_addresses={host.ip} -p {PG_PORT} -k {self.pg_data} -c max_connections=600 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=64MB "
                   # a host cut off between a statement and its COMMIT leaves a transaction open here, holding its
                   # row locks (a job row: SKIP LOCKED then passes it by) until the dead peer is noticed
                   "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=3")
        done = subprocess.run(["ip", "netns", "exec", host.ns, *as_pg, str(bindir / "pg_ctl"), "-D",
                               str(self.pg_data), "-l", str(self.pg_data / "server.log"), "-w", "-t", "60",
                               "-o", options, "start"], capture_output=True, text=True, timeout=90)
        if done.returncode != 0:
            log = (self.pg_data / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"PostgreSQL did not start in {host.ns}: {done.stderr}\n{log}")
        from sqlalchemy import create_engine, text

        engine = create_engine(f"postgresql+psycopg://postgres@{host.ip}:{PG_PORT}/postgres",
                               isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text("CREATE DATABASE opencsbs"))
        finally:
            engine.dispose()
        return f"postgresql+psycopg://postgres@{host.ip}:{PG_PORT}/opencsbs"

    def start_s3(self, name: str) -> S3:
        """A private SeaweedFS S3 server (``weed mini``) on host ``name``'s address, with credentials of its own."""
        host = self.hosts[name]
        root = self.dir / "s3"
        (root / "data").mkdir(parents=True)
        access, secret = "opencsbs-topology", secrets.token_hex(16)
        (root / "s3.json").write_text(
            '{"identities": [{"name": "opencsbs", "credentials": [{"accessKey": "%s", "secretKey": "%s"}], '
            '"actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}' % (access, secret))
        # SeaweedFS names unix sockets in /tmp after its ports (/tmp/seaweedfs-master-grpc-19333.sock...), and /tmp
        # is shared by every network namespace: with its default ports this server would take over (and at its
        # stop remove) the sockets of the suite's shared S3 server. Every port is therefore one free in the root
        # namespace, as scripts/services/s3.sh does for OPENCSBS_TEST_S3_PORT=auto.
        s3_port = free_port()
        pinned = [f"-{option}={free_port()}" for option in (
            "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
            "filer.port.grpc", "admin.port", "admin.port.grpc", "webdav.port")]
        self.spawn(name, [str(weed_binary()), "mini", f"-dir={root / 'data'}", f"-ip={host.ip}",
                          f"-ip.bind={host.ip}", "-admin.ui=false", f"-s3.port={s3_port}", "-s3.port.iceberg=0",
                          "-s3.port.lance=0", *pinned, f"-s3.config={root / 's3.json'}"], "s3.log")
        endpoint = f"http://{host.ip}:{s3_port}"
        wait_http(endpoint + "/", 90, ok=lambda code: 200 <= code < 500, what="SeaweedFS S3")
        return S3(endpoint, access, secret)

    def write_config(self, name: str, settings: dict) -> Path:
        """Write ``settings`` (a config file's mapping) as ``<name>.yaml``; returns its path."""
        path = self.dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(settings))
        return path

    def start_opencsbs(self, name: str, config: Path, *args: str, log: str | None = None) -> subprocess.Popen:
        """``opencsbs --config CONFIG ARGS...`` in host ``name`` (``serve``, ``worker``, ``scheduler``)."""
        return self.spawn(name, [sys.executable, "-m", "opencsbs", "--config", str(config), *args],
                          log or f"{name}-{args[0]}.log")

    def log_tail(self, chars: int = 3000) -> str:
        """The last ``chars`` of every log, for a failure message."""
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)


def wait_http(url: str, timeout: float, ok=lambda code: code == 200, what: str = "server") -> None:
    """Wait until GET ``url`` answers with a status ``ok`` accepts; RuntimeError after ``timeout`` seconds."""
    import httpx

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            code = httpx.get(url, timeout=2).status_code
            if ok(code):
                return
            last = f"status {code}"
        except httpx.HTTPError as exc:
            last = str(exc) or type(exc).__name__
        time.sleep(0.2)
    raise RuntimeError(f"{what} at {url} did not answer in {timeout:.0f} s ({last})")


# --- an opencsbs deployment on the hosts ----------------------------------------------------------------------

#: the hosts of :func:`deploy`: PostgreSQL and S3 on "db", two API hosts, three worker hosts
HOSTS = ["db", "api1", "api2", "w1", "w2", "w3"]
WORKER_HOSTS = ["w1", "w2", "w3"]


@dataclass
class Deployment:
    """opencsbs on a :class:`Topology`: ``api_urls`` (one per API host), ``db_url``, ``s3``, the shared
    ``data_dir`` (sandbox volume files), ``settings`` (a config mapping every process starts from) and
    ``runtime``: the test process's own runtime on the same database and bank (root namespace, through the
    bridge), to load inventories, make tokens and read rows."""

    topo: Topology
    db_url: str
    s3: S3
    data_dir: Path
    settings: dict
    api_urls: list[str]
    runtime: object = None

    def config(self, name: str, **overrides) -> Path:
        """The base settings with ``overrides`` (one level of nested mappings merged), written for ``name``."""
        merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.settings.items()}
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key].update(value)
            else:
                merged[key] = value
        return self.topo.write_config(name, merged)

    def start_worker(self, host: str, *args: str, **overrides) -> subprocess.Popen:
        """``opencsbs worker ARGS...`` on ``host`` (e.g. ``--host``, ``--capability``)."""
        return self.topo.start_opencsbs(host, self.config(f"{host}-worker", **overrides), "worker", *args)

    def start_scheduler(self, host: str, **overrides) -> subprocess.Popen:
        """``opencsbs scheduler`` on ``host``."""
        return self.topo.start_opencsbs(host, self.config(f"{host}-scheduler", **overrides), "scheduler")

    def start_api(self, host: str, processes: int = 1, port: int = API_PORT, **overrides) -> str:
        """``opencsbs serve`` on ``host`` (no job workers, no scheduler: those are other processes); waits until
        it answers and returns its base URL."""
        ip = self.topo.hosts[host].ip
        config = self.config(f"{host}-serve-{port}", host=ip, port=port, workers=0, scheduler=False, **overrides)
        args = ["serve"] + (["--workers", str(processes)] if processes > 1 else [])
        self.topo.start_opencsbs(host, config, *args, log=f"{host}-serve-{port}.log")
        url = f"http://{ip}:{port}"
        wait_http(url + "/", 120, what=f"opencsbs serve on {host}")
        return url

    def token(self, project: str | None = "demo", role: str = "member") -> str:
        """A local token of ``project`` (written in the shared database); role ``cloud-admin``: a cloud admin's."""
        from opencsbs.auth.local import create_token
        from opencsbs.db.base import transaction

        with transaction(self.runtime.sessions) as session:
            if role == "cloud-admin":
                return create_token(session, None, cloud_admin=True)
            return create_token(session, project, role)

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
        self.topo.down()


def deploy(api_processes: int = 1, engine: dict | None = None, inventory: Path | None = None,
           scheduler_interval: float = 1.0, api_settings: dict | None = None) -> Deployment:
    """Make the topology of :data:`HOSTS` and start PostgreSQL and S3 on "db" and ``opencsbs serve`` on "api1"
    and "api2" (``api_processes`` HTTP processes each, the base settings with ``api_settings`` merged). Worker and
    scheduler processes are the caller's (:meth:`Deployment.start_worker`, :meth:`Deployment.start_scheduler`).
    ``inventory``: a sandbox inventory loaded before the APIs start. On failure everything made so far is
    removed."""
    from opencsbs.bootstrap import build_runtime
    from opencsbs.config import Settings
    from opencsbs.db.migrate import upgrade

    sweep_leftovers()
    topo = Topology(HOSTS).up()
    dep = None
    try:
        db_url = topo.start_postgres("db")
        s3 = topo.start_s3("db")
        data_dir = topo.dir / "data"
        settings = {
            "data_dir": str(data_dir), "database_url": db_url, "workers": 0, "scheduler": False,
            "scheduler_interval": scheduler_interval, "log_level": "info",
            "bank": {"backend": "s3", "s3_endpoint": s3.endpoint, "s3_bucket": "opencsbs",
                     "s3_access_key": s3.access_key, "s3_secret_key": s3.secret_key},
            "engine": engine or {},
        }
        upgrade(db_url)  # once, before several processes start on the database
        dep = Deployment(topo, db_url, s3, data_dir, settings, [])
        dep.runtime = build_runtime(Settings(**settings), migrate=False)
        if inventory is not None:
            from opencsbs.clouds.sandbox.inventory import load_inventory_file
            from opencsbs.db.base import transaction

            with transaction(dep.runtime.sessions) as session:
                load_inventory_file(session, inventory, dep.runtime.settings.volumes_dir)
        dep.api_urls = [dep.start_api(h, api_processes, **(api_settings or {})) for h in ("api1", "api2")]
        return dep
    except BaseException as exc:
        tail = topo.log_tail()
        if dep is not None:
            dep.close()
        else:
            topo.down()
        raise RuntimeError(f"the topology did not come up: {exc}\n{tail}") from exc
