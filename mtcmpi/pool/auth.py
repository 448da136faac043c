"""Who may talk to a session: ZeroMQ CURVE with the keys of the connection file.

The session's socket is a CURVE server; a ZAP handler admits only peers that present the
members' public key. The handshake is checked by libzmq before any message is delivered, so a
peer without the key never gets a byte to the session code (nothing of it is unpickled). A
handshake must complete within HANDSHAKE_S seconds, a message may not exceed MAX_MESSAGE
bytes (a huge length prefix closes the connection), and refusals are logged.
"""
from __future__ import annotations

import logging

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from .connection import Connection

log = logging.getLogger("mtcmpi.pool")
HANDSHAKE_S = 3.0              # a connection that has not authenticated by then is closed
MAX_MESSAGE = 1 << 31          # bytes; a batch of tasks or results larger than 2 GiB is refused
REFUSALS = {zmq.EVENT_HANDSHAKE_FAILED_AUTH: "wrong key",
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "not the ZeroMQ protocol",
            zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake failed or timed out"}


class Members:
    """ZAP credentials: the members' key only; every other key is refused and logged."""

    def __init__(self, public: str):
        self.public = public.encode()

    def callback(self, domain: str, key: bytes) -> bool:
        if key == self.public:
            return True
        log.warning("mtcmpi pool session: refused a connection presenting an unknown key")
        return False


def common_options(sock: zmq.Socket) -> None:
    """Limits every session socket has, on both ends."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.HANDSHAKE_IVL, int(HANDSHAKE_S * 1000))
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)


def listen(context: zmq.Context, connection: Connection, ip: str,
           port: int | None) -> tuple[zmq.Socket, ThreadAuthenticator, zmq.Socket, str]:
    """A CURVE-server ROUTER bound on ip (port, or a free one): (socket, authenticator,
    monitor socket, the tcp:// address bound)."""
    authenticator = ThreadAuthenticator(context, log=logging.getLogger("mtcmpi.pool.zap"))
    authenticator.start()
    authenticator.configure_curve_callback("*", credentials_provider=Members(connection.member_public))
    sock = context.socket(zmq.ROUTER)
    common_options(sock)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.curve_server = True
    sock.curve_secretkey = connection.server_secret.encode()
    sock.curve_publickey = connection.server_public.encode()
    if port:
        sock.bind(f"tcp://{ip}:{port}")
    else:
        port = sock.bind_to_random_port(f"tcp://{ip}")
    monitor = sock.get_monitor_socket(sum(REFUSALS) | zmq.EVENT_DISCONNECTED)
    return sock, authenticator, monitor, f"tcp://{ip}:{port}"


def watch(monitor: zmq.Socket) -> bool:
    """Log the handshakes the session refused since the last call; True if a peer disconnected."""
    disconnected = False
    while monitor.poll(0):
        event = recv_monitor_message(monitor)
        if event["event"] == zmq.EVENT_DISCONNECTED:
            disconnected = True
            continue
        quiet = event["event"] == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL   # also a port probe
        (log.info if quiet else log.warning)("mtcmpi pool session: refused a connection on %s: %s",
                                             event["endpoint"].decode(errors="replace"),
                                             REFUSALS.get(event["event"], "?"))
    return disconnected


def dial(context: zmq.Context, connection: Connection) -> zmq.Socket:
    """A DEALER that authenticates to the session of connection as a member."""
    sock = context.socket(zmq.DEALER)
    common_options(sock)
    sock.curve_serverkey = connection.server_public.encode()
    sock.curve_publickey = connection.member_public.encode()
    sock.curve_secretkey = connection.member_secret.encode()
    sock.connect(connection.address)
    return sock
