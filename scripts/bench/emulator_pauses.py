#!/usr/bin/env python3
"""Does the local emulator stop answering as its data grows? moto's plain server and the
project's launcher (scripts/moto_server.py), one after the other: each gets one table and
--seconds of BatchWriteItems (25 items of 12 short attributes each), one at a time. Prints,
per 50,000 items, moto's resident memory and the slowest batch: a batch that waits for a full
garbage collection takes seconds instead of milliseconds. Loopback only.

    .venv/bin/python scripts/bench/emulator_pauses.py [--seconds 420]
"""
import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) // 1024


def run(name, server, seconds):
    port = free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    moto = subprocess.Popen(server + ["-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        ddb = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                           aws_access_key_id="bench", aws_secret_access_key="bench")
        for _ in range(100):
            try:
                ddb.list_tables()
                break
            except Exception:
                time.sleep(0.1)
        ddb.create_table(TableName="coach", BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk")],
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                    {"AttributeName": "sk", "KeyType": "RANGE"}])
        deadline, batches, worst = time.monotonic() + seconds, 0, 0.0
        while time.monotonic() < deadline:
            items = [{"PutRequest": {"Item": {"pk": {"S": f"P#{batches % 50}"}, "sk": {"S": f"S#{batches}-{k}"},
                                              "n": {"N": str(batches)},
                                              **{f"a{j}": {"S": "v" * 40} for j in range(12)}}}}
                     for k in range(25)]
            started = time.perf_counter()
            ddb.batch_write_item(RequestItems={"coach": items})
            worst = max(worst, time.perf_counter() - started)
            batches += 1
            if batches % 2000 == 0:
                print(f"| {name} | {batches * 25:,} | {rss_mb(moto.pid):,} | {worst * 1000:,.0f} |", flush=True)
                worst = 0.0
    finally:
        moto.terminate()
        moto.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=420, help="writing time per server")
    args = parser.parse_args()
    venv = ROOT / ".venv" / "bin"
    print("| server | items | moto RSS MB | slowest batch ms |")
    print("| --- | --- | --- | --- |")
    run("moto_server (plain)", [str(venv / "moto_server")], args.seconds)
    run("scripts/moto_server.py", [str(venv / "python"), str(ROOT / "scripts" / "moto_server.py")], args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
