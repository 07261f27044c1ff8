"""Does Tansu's --authentication work with the agents' client (kafka-python)? A probe, not
a test: it starts the replicated stack (for its S3 store, where Tansu keeps users), creates
a SCRAM user through an unauthenticated broker, starts a broker with --authentication on
the same bucket and tries to produce with each mechanism. Findings: docs/CLUSTER.md,
"Agent authentication". Run: .venv/bin/python scripts/probe_tansu_auth.py"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kafka import KafkaProducer

from stack.broker import tansu_binary
from stack.cluster import _S3_KEYS, BUCKET, ReplicatedStack
from stack.process import free_port


def main() -> None:
    tansu = str(tansu_binary())
    folder = Path(tempfile.mkdtemp(prefix="tansu-auth-"))
    stack = ReplicatedStack(folder / "stack")
    info = stack.up()
    broker = None
    try:
        plain = f"tcp://127.0.0.1:{info.broker_ports[1]}"
        for mechanism, user in (("scram512", "node-512"), ("scram256", "node-256")):
            created = subprocess.run(
                [
                    tansu,
                    "user",
                    "create",
                    "--broker",
                    plain,
                    user,
                    "s3cret",
                    "--mechanism",
                    mechanism,
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            print(f"user create {user} ({mechanism}) on an open broker: rc {created.returncode}")
        port = free_port()
        env = {
            "PATH": os.environ["PATH"],
            "RUST_LOG": "warn",
            **_S3_KEYS,
            "AWS_ENDPOINT": f"http://127.0.0.1:{info.s3_port}",
        }
        log = folder / "tansu-auth.log"
        url = f"tcp://127.0.0.1:{port}"
        broker = subprocess.Popen(
            [
                tansu,
                "broker",
                "--cluster-id",
                "meter",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                f"s3://{BUCKET}/",
                "--authentication",
            ],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        time.sleep(3)
        created = subprocess.run(
            [tansu, "user", "create", "--broker", url, "node-x", "s3cret"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        print(f"user create on the authenticating broker: rc {created.returncode}")
        tries = [
            ("node-512", "s3cret", "SCRAM-SHA-512"),
            ("node-512", "wrong", "SCRAM-SHA-512"),
            ("node-256", "s3cret", "SCRAM-SHA-256"),
            ("node-512", "s3cret", "PLAIN"),
        ]
        for user, password, mechanism in tries:
            try:
                producer = KafkaProducer(
                    bootstrap_servers=f"127.0.0.1:{port}",
                    security_protocol="SASL_PLAINTEXT",
                    sasl_mechanism=mechanism,
                    sasl_plain_username=user,
                    sasl_plain_password=password,
                    request_timeout_ms=5000,
                    max_block_ms=8000,
                )
                sent = producer.send("probe", b"x").get(timeout=10)
                print(f"{user}/{password} {mechanism}: produced at offset {sent.offset}")
                producer.close()
            except Exception as exc:  # the probe reports every outcome
                print(f"{user}/{password} {mechanism}: {type(exc).__name__}: {exc}")
        print(f"broker log: {log}")
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait()
        stack.down()


if __name__ == "__main__":
    main()
