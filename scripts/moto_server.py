"""moto's server, with two behaviours made as they are on AWS.

S3 conditional writes, atomic. Coach's index manifest is replaced with conditional PutObject
(`If-Match` / `If-None-Match: *`). S3 checks the condition and writes in one step; moto's
threaded server checks it, then writes, without a lock, so two concurrent writers can both
pass the check and one update is lost, which real S3 never allows. moto's PutObject handler
runs under one lock here.

DynamoDB transactions that cost what they touch. moto backs up every table a
TransactWriteItems names, with a deep copy of the whole table, before each transaction, to
restore it if the transaction is cancelled. Coach writes a chat turn, an upload, a usage
record in transactions on one table, so with a few thousand items every transaction copied
them all: the emulator grew to gigabytes and answered after Coach's timeout. Here the backup
holds only the items the transaction touches (each as it was, or its absence), restored when
it is cancelled; transactions run one at a time, as DynamoDB isolates them. Everything else is
moto's own: the checks, the writes, the cancellation reasons.

SQS sends that cost one message. To read one setting (content-based deduplication), moto's
SendMessage builds all of a queue's attributes, and three of them count its messages, each a
scan of every message in the queue with clock arithmetic per message. So each send took time
in proportion to the queue's backlog: S3's event notifications are such sends, inside
PutObject, so with ingest a few thousand documents behind, an upload took 170 ms instead of
30. Here a send builds the attributes without the three counts (it reads none of them);
GetQueueAttributes and everything else still count, as before.

No pauses from the garbage collector. A full collection walks every object moto holds, and
with a team's data (gigabytes) it held every request for seconds, past Coach's timeouts.
What survives a full collection is frozen, so later ones walk only what is newer (see below).

Usage is moto_server's: `moto_server.py -H 127.0.0.1 -p 5050`.
"""

import copy
import gc
import sys
import threading
import time

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.s3.responses import S3Response
from moto.sqs.models import Queue, SQSBackend
from moto.server import main

_put_lock = threading.Lock()
_put_object = S3Response.put_object


def _atomic_put_object(self, *args, **kwargs):
    with _put_lock:
        return _put_object(self, *args, **kwargs)


S3Response.put_object = _atomic_put_object


class _TablesKept:
    """`copy` for moto's DynamoDB module: a table is "copied" as itself (the backup of whole
    tables becomes a no-op, and so does its restore); anything else is copied as before."""

    @staticmethod
    def deepcopy(value, memo=None):
        if isinstance(value, Table):
            return value
        return copy.deepcopy(value, memo)

    def __getattr__(self, name):
        return getattr(copy, name)


dynamodb_models.copy = _TablesKept()

_transactions = threading.Lock()
_transact_write_items = DynamoDBBackend.transact_write_items


def _touched(backend, transact_items):
    """Each item a transaction names, once: (table name, key, a copy of the item or None)."""
    seen, touched = set(), []
    for entry in transact_items:
        if not isinstance(entry, dict) or len(entry) != 1:
            continue
        op = next(iter(entry.values()))
        table = backend.tables.get(op.get("TableName")) if isinstance(op, dict) else None
        if table is None:
            continue
        source = op.get("Key") if "Key" in op else op.get("Item") or {}
        names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
        if not all(name in source for name in names):
            continue  # moto refuses it, before writing anything
        key = {name: source[name] for name in names}
        ident = (table.name, repr(sorted(key.items())))
        if ident in seen:
            continue
        seen.add(ident)
        current = backend.get_item(table.name, key)
        touched.append((table.name, key, copy.deepcopy(current.to_json()["Attributes"]) if current else None))
    return touched


def _restore(backend, touched):
    """Puts each touched item back as it was (or removes it, when there was none)."""
    for table_name, key, attributes in touched:
        if attributes is None:
            if backend.get_item(table_name, key) is not None:
                backend.delete_item(table_name, key)
        else:
            backend.put_item(table_name, attributes)


def _transact_write_items_touched_only(self, transact_items):
    with _transactions:
        touched = _touched(self, transact_items)
        try:
            return _transact_write_items(self, transact_items)
        except Exception:
            _restore(self, touched)
            raise


DynamoDBBackend.transact_write_items = _transact_write_items_touched_only

_sending = threading.local()
_queue_attributes = Queue.attributes.fget


class _WithoutCounts:
    """A queue as moto's `attributes` reads it, without the message counts."""

    BASE_ATTRIBUTES = [name for name in Queue.BASE_ATTRIBUTES if not name.startswith("ApproximateNumberOfMessages")]

    def __init__(self, queue):
        self._queue = queue

    def __getattr__(self, name):
        return getattr(self._queue, name)


def _attributes(self):
    if getattr(_sending, "active", False):
        return _queue_attributes(_WithoutCounts(self))
    return _queue_attributes(self)


Queue.attributes = property(_attributes)


def _without_counts(send):
    def wrapper(*args, **kwargs):
        outer = getattr(_sending, "active", False)
        _sending.active = True
        try:
            return send(*args, **kwargs)
        finally:
            _sending.active = outer

    return wrapper


SQSBackend.send_message = _without_counts(SQSBackend.send_message)
SQSBackend.send_message_batch = _without_counts(SQSBackend.send_message_batch)

# Garbage collection that does not stop the emulator. A full collection of Python's cycle
# collector walks every object moto holds; with a team's data that is gigabytes, and every
# request waits for it: 1.6 s at 880 MB, 3.6 s at 1.6 GB, past Coach's 3 s storage timeout
# (scripts/bench/emulator_pauses.py). After each full collection, what survived it (moto's
# data) is frozen, so later collections walk only what is newer. Frozen objects are still
# freed by reference counting when moto drops them; only reference cycles among them would
# stay (the bench's memory was the same with and without). Each collection over half a
# second is logged (stderr: make dev's moto.log).
_collection_started = [0.0]


def _after_full_collection(phase, info):
    if info.get("generation") != 2:
        return
    if phase == "start":
        _collection_started[0] = time.perf_counter()
        return
    took = time.perf_counter() - _collection_started[0]
    if took > 0.5:
        print(f"moto_server: a full garbage collection held every request for {took:.1f} s "
              f"({info.get('collected', 0)} objects freed)", file=sys.stderr, flush=True)
    gc.freeze()


gc.callbacks.append(_after_full_collection)

if __name__ == "__main__":
    sys.exit(main())
