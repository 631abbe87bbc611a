"""moto's server, with S3 conditional writes made atomic as they are on AWS.

Coach's index manifest is replaced with conditional PutObject (`If-Match` / `If-None-Match:
*`). S3 checks the condition and writes in one step; moto's threaded server checks it, then
writes, without a lock, so two concurrent writers can both pass the check and one update is
lost, which real S3 never allows. This wrapper runs moto's PutObject handler under one lock
and changes nothing else. Usage is moto_server's: `moto_server.py -H 127.0.0.1 -p 5050`.
"""

import sys
import threading

from moto.s3.responses import S3Response
from moto.server import main

_lock = threading.Lock()
_put_object = S3Response.put_object


def _atomic_put_object(self, *args, **kwargs):
    with _lock:
        return _put_object(self, *args, **kwargs)


S3Response.put_object = _atomic_put_object

if __name__ == "__main__":
    sys.exit(main())
