"""What the emulator benches share: the two servers they compare (moto's plain server and the
project's launcher, scripts/moto_server.py), one started on a free loopback port, and boto3
clients of it."""
import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv" / "bin"
SERVERS = [("moto_server (plain)", [str(VENV / "moto_server")]),
           ("scripts/moto_server.py", [str(VENV / "python"), str(ROOT / "scripts" / "moto_server.py")])]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(service, endpoint):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="bench", aws_secret_access_key="bench")


@contextlib.contextmanager
def started(server):
    """`server` on a free loopback port, answering: yields (its endpoint, its process id)."""
    port = free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    moto = subprocess.Popen(server + ["-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        probe = client("dynamodb", endpoint)
        for _ in range(100):
            try:
                probe.list_tables()
                break
            except Exception:
                time.sleep(0.1)
        yield endpoint, moto.pid
    finally:
        moto.terminate()
        moto.wait()
