"""A real Redis Cluster of three masters (no replicas) for the tests, from the same
redis-server binary as the embedded Redis: three `--cluster-enabled yes` servers, joined
with CLUSTER MEET, the 16384 slots split between them with CLUSTER ADDSLOTS, ready once
every node reports cluster_state:ok."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path

import redis

from eventbook.embedded import redis_server_binary

SLOTS = 16384
MASTERS = 3


def free_cluster_port() -> int:
    """A free port whose cluster bus port (10000 higher, so at most 55535) is free too."""
    while True:
        port = random.randint(20000, 55535)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


class RedisCluster:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """A URL of one node: the cluster client finds the others from it."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self, timeout: float = 20.0) -> None:
        for _ in range(MASTERS):
            port = free_cluster_port()
            node_dir = self.directory / f"node-{port}"
            node_dir.mkdir(parents=True)
            self.ports.append(port)
            self.processes.append(subprocess.Popen(
                [
                    str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1",
                    "--dir", str(node_dir), "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
                    "--appendonly", "no", "--save", "", "--logfile", "redis.log",
                ],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        nodes = [self._connect(port, timeout) for port in self.ports]
        try:
            for port in self.ports[1:]:
                nodes[0].execute_command("CLUSTER MEET", "127.0.0.1", port)
            bounds = [SLOTS * n // MASTERS for n in range(MASTERS + 1)]
            for node, low, high in zip(nodes, bounds, bounds[1:], strict=False):
                node.execute_command("CLUSTER ADDSLOTS", *range(low, high))
            deadline = time.monotonic() + timeout
            while not all(self._ready(node) for node in nodes):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the cluster on {self.ports} did not become ready")
                time.sleep(0.05)
        finally:
            for node in nodes:
                node.close()

    def _connect(self, port: int, timeout: float) -> redis.Redis:
        node = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                node.ping()
                return node
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _ready(self, node: redis.Redis) -> bool:
        """The node sees the cluster whole: every slot served, every master known."""
        info = node.cluster("INFO")
        return bool(info["cluster_state"] == "ok"
                    and int(info["cluster_known_nodes"]) == MASTERS
                    and int(info["cluster_slots_ok"]) == SLOTS)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
