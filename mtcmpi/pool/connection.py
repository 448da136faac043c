"""The connection file: where a session listens and the keys that admit its members.

It is JSON, created with mode 0600 and replaced atomically: the address, the session's CURVE
key pair and the members' key pair (whoever can read the file may serve and submit), and who
wrote it (host, pid, versions), so an error can say which session a stale file names.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
from dataclasses import asdict, dataclass

import zmq

from .. import __version__

PYTHON = "%d.%d" % sys.version_info[:2]   # pickles by value need the same minor version


class SessionError(Exception):
    """A pool session cannot be used as asked (bad file, no live session, versions differ)."""


@dataclass
class Connection:
    """The contents of a connection file."""

    address: str          # tcp://HOST:PORT the session listens on
    server_public: str    # the session's CURVE key pair (z85 text)
    server_secret: str
    member_public: str    # the one key pair every pool and client presents
    member_secret: str
    host: str = ""
    pid: int = 0
    created: float = 0.0
    mtcmpi: str = __version__
    python: str = PYTHON

    @classmethod
    def new(cls, address: str) -> "Connection":
        """Fresh random keys for a session listening at address."""
        server_public, server_secret = zmq.curve_keypair()
        member_public, member_secret = zmq.curve_keypair()
        return cls(address, server_public.decode(), server_secret.decode(), member_public.decode(),
                   member_secret.decode(), platform.node(), os.getpid(), time.time())

    def describe(self) -> str:
        """Who wrote the file, for error messages."""
        return (f"the session at {self.address} (started by pid {self.pid} on {self.host}, "
                f"mtcmpi {self.mtcmpi}, Python {self.python})")


def read(path: str) -> Connection:
    """The connection in path, or SessionError saying why it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            fields = json.load(f)
        return Connection(**fields)
    except FileNotFoundError:
        raise SessionError(f"{path}: no such connection file (start the session first: "
                           "mtcmpi.connect(FILE) or `python -m mtcmpi hub --connection FILE`)") from None
    except PermissionError as exc:
        raise SessionError(f"{path}: cannot read the connection file ({exc.strerror})") from None
    except (OSError, ValueError, TypeError) as exc:
        raise SessionError(f"{path} is not an mtcmpi connection file ({exc})") from None


def write(path: str, connection: Connection) -> None:
    """Write the file with mode 0600 (its directory made 0700 if missing), atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(asdict(connection), f, indent=1)
    os.chmod(temporary, 0o600)   # whatever the umask
    os.replace(temporary, path)


def default_ip() -> str:
    """The address of this host's name: on a cluster, the one its compute nodes reach."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def check_versions(mine: dict, theirs: dict, who: str) -> str | None:
    """None if both sides run the same mtcmpi and Python minor version, else the error."""
    for key, name in (("mtcmpi", "mtcmpi"), ("python", "Python")):
        if mine.get(key) != theirs.get(key):
            return (f"{who} runs {name} {theirs.get(key)} but the session runs {name} "
                    f"{mine.get(key)}: use the same version on both sides")
    return None


def expand(path: str) -> str:
    """The path with ~ expanded."""
    return os.path.expanduser(os.fspath(path))


def reachable(address: str, timeout: float = 2.0) -> bool:
    """Whether something listens at a tcp://HOST:PORT address."""
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
        return True
    except (OSError, ValueError):
        return False
