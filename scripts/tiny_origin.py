"""A minimal keep-alive HTTP/1.1 origin for the bench and fault scripts that
must see inside their origins (requests in flight, first request served):
GETs without bodies only, one thread per connection. And the TOML of a
proxy in front of such origins."""

import socket
import threading


def serve_connection(conn, handle):
    """Calls `handle(target, send)` for each request head on `conn` until the
    peer closes; `handle` answers through `send` (socket.sendall)."""
    with conn:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buffer += data
            # GETs without bodies: the head is the whole request.
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            parts = head.split(b" ", 2)
            target = parts[1] if len(parts) > 2 else b""
            try:
                handle(target, conn.sendall)
            except OSError:
                return


def listen(port=0):
    """A listening socket on 127.0.0.1:`port` (0: the kernel picks)."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    return listener


def accept_forever(listener, handle):
    """Serves every connection `listener` accepts, each on its own thread."""
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve_connection, args=(conn, handle), daemon=True).start()


def proxy_toml(port, shards, origin_ports, upstream_keys="", sections=""):
    """shardproxy on 127.0.0.1:`port` with one upstream `fleet` of the
    origins, routed from `/`; `upstream_keys` are added to the upstream,
    `sections` (whole TOML tables) before it."""
    servers = ", ".join(f'"127.0.0.1:{p}"' for p in origin_ports)
    return f"""[server]
listen = ["127.0.0.1:{port}"]
shards = {shards}
pin = false

{sections}

[[upstream]]
name = "fleet"
servers = [{servers}]
{upstream_keys}

[[route]]
upstream = "fleet"
"""
