"""The messages between a session, its pools and its clients (ZeroMQ multipart frames).

Every message is [kind, body]. HELLO, WELCOME and REFUSED carry JSON, so peers of different
versions can tell each other so; every other body is a pickle, read only from peers that have
passed the CURVE handshake (see auth.py).
"""
from __future__ import annotations

import json
import os
import pickle
from typing import Any

import zmq

HELLO, WELCOME, REFUSED = b"hello", b"welcome", b"refused"     # joining (JSON)
SUBMIT, CANCEL, RESULTS = b"submit", b"cancel", b"results"      # client <-> session
TASKS, DONE = b"tasks", b"done"                                  # session <-> pool
HEARTBEAT, DRAIN, BYE, STOP, NEWS = b"beat", b"drain", b"bye", b"stop", b"news"
JSON_KINDS = (HELLO, WELCOME, REFUSED)

HEARTBEAT_S = 1.0   # every peer says something at least this often
LOST_S = 5.0        # a peer silent this long is gone: its tasks run again elsewhere
CONNECT_S = 5.0     # how long a pool or client waits for the session to answer its hello
MAX_BATCH = 2048    # tasks or results per message at most
LINGER_S = 2.0      # a pool that leaves has this long to deliver its last results and bye


def send(sock: zmq.Socket, kind: bytes, body: Any = None, to: bytes | None = None) -> None:
    """Send one message (to a ROUTER peer when `to` is given)."""
    data = json.dumps(body).encode() if kind in JSON_KINDS else pickle.dumps(body, protocol=4)
    sock.send_multipart([kind, data] if to is None else [to, kind, data], copy=False)


def decode(kind: bytes, data: bytes) -> Any:
    """The body of a message from an authenticated peer."""
    return json.loads(data) if kind in JSON_KINDS else pickle.loads(data)


def batches(items: list, size: int = MAX_BATCH):
    """items in lists of at most size."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


class Wakeup:
    """A self-pipe that wakes a thread blocked in zmq.Poller.poll (it registers fd): another
    thread calls wake(); the woken one calls drain() before it looks for what woke it."""

    def __init__(self) -> None:
        self.fd, self._write = os.pipe()
        os.set_blocking(self.fd, False)

    def wake(self) -> None:
        os.write(self._write, b"x")

    def drain(self) -> None:
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._write)
