#!/usr/bin/env python3
"""Does the local emulator stop answering as its data grows, and what memory does it hold?
moto's plain server and the project's launcher (scripts/moto_server.py), one after the
other: each gets one table and --seconds of BatchWriteItems (25 items of 12 short
attributes each), one at a time, while a second client keeps S3 busy beside it as ingest
does (PutObject, GetObject and deleting the version, 256 KiB each, in a versioned bucket:
nothing it writes stays). Prints, per 50,000 items, moto's resident memory and the slowest
batch: a batch that waits for a full garbage collection takes seconds instead of
milliseconds, and memory beyond the plain server's is what the launcher's freezing keeps of
objects moto dropped. Loopback only.

    .venv/bin/python scripts/bench/emulator_pauses.py [--seconds 420]
"""
import argparse
import sys
import threading
import time

from moto_servers import SERVERS, client, started


def churn(endpoint, stop):
    """S3 objects written, read and deleted (every version) until `stop` is set."""
    s3 = client("s3", endpoint)
    s3.create_bucket(Bucket="coach")
    s3.put_bucket_versioning(Bucket="coach", VersioningConfiguration={"Status": "Enabled"})
    body, n = b"s" * (256 << 10), 0
    while not stop.is_set():
        key = f"index/segment-{n}"
        version = s3.put_object(Bucket="coach", Key=key, Body=body)["VersionId"]
        s3.get_object(Bucket="coach", Key=key)["Body"].read()
        s3.delete_object(Bucket="coach", Key=key, VersionId=version)
        n += 1


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) // 1024


def run(name, server, seconds):
    with started(server) as (endpoint, pid):
        stop = threading.Event()
        beside = threading.Thread(target=churn, args=(endpoint, stop), daemon=True)
        beside.start()
        ddb = client("dynamodb", endpoint)
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
            begun = time.perf_counter()
            ddb.batch_write_item(RequestItems={"coach": items})
            worst = max(worst, time.perf_counter() - begun)
            batches += 1
            if batches % 2000 == 0:
                print(f"| {name} | {batches * 25:,} | {rss_mb(pid):,} | {worst * 1000:,.0f} |", flush=True)
                worst = 0.0
        stop.set()
        beside.join()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=420, help="writing time per server")
    args = parser.parse_args()
    print("| server | items | moto RSS MB | slowest batch ms |")
    print("| --- | --- | --- | --- |")
    for name, server in SERVERS:
        run(name, server, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
