#!/usr/bin/env python3
"""Does the local emulator slow down as a team's data grows? moto's plain server and the
project's launcher (scripts/moto_server.py), one after the other in one run: each gets a
table and a bucket whose object events go to an SQS queue (as `coach-dev setup` configures
them), then N conditional PutItems (Coach's document record, with its index keys) and N
PutObjects (each an S3 event notification into the queue, which nothing drains, as when
ingest is behind). Prints the p50 of each call by thousand. Loopback only.

    .venv/bin/python scripts/bench/emulator_sends.py [--count 5000]
"""
import argparse
import statistics
import sys
import time

from moto_servers import SERVERS, client, started


def run(server, count):
    with started(server) as (endpoint, _):
        ddb, s3, sqs = client("dynamodb", endpoint), client("s3", endpoint), client("sqs", endpoint)
        names = ("pk", "sk", "gsi1pk", "gsi1sk")
        ddb.create_table(
            TableName="coach", BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in names],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            GlobalSecondaryIndexes=[{"IndexName": "gsi1", "Projection": {"ProjectionType": "ALL"},
                                     "KeySchema": [{"AttributeName": "gsi1pk", "KeyType": "HASH"},
                                                   {"AttributeName": "gsi1sk", "KeyType": "RANGE"}]}])
        s3.create_bucket(Bucket="coach-bench")
        queue = sqs.create_queue(QueueName="coach-bench-ingest")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        s3.put_bucket_notification_configuration(Bucket="coach-bench", NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
        body = ("word " * 400).encode()
        put_item, put_object = [], []
        for i in range(count):
            begun = time.perf_counter()
            ddb.put_item(TableName="coach", ConditionExpression="attribute_not_exists(pk)", Item={
                "pk": {"S": "TENANT#bench"}, "sk": {"S": f"DOC#{i:06d}"}, "status": {"S": "pending"},
                "gsi1pk": {"S": "INGEST#OPEN"}, "gsi1sk": {"S": f"{i:013d}"}})
            put_item.append((time.perf_counter() - begun) * 1000)
            begun = time.perf_counter()
            s3.put_object(Bucket="coach-bench", Key=f"uploads/bench/{i:06d}/doc.md", Body=body,
                          ContentType="text/markdown")
            put_object.append((time.perf_counter() - begun) * 1000)
        return put_item, put_object


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000)
    args = parser.parse_args()
    print("| server | thousand | PutItem p50 ms | PutObject p50 ms |")
    print("| --- | --- | --- | --- |")
    for name, server in SERVERS:
        put_item, put_object = run(server, args.count)
        for k in range(0, args.count, 1000):
            print(f"| {name} | {k // 1000 + 1} | {statistics.median(put_item[k:k + 1000]):.1f} | "
                  f"{statistics.median(put_object[k:k + 1000]):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
