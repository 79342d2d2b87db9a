#!/usr/bin/env python3
"""Would splice(2) make CONNECT tunnels cheaper? An experiment outside the
proxy (issue 10): one relay thread moves N bytes from a sender socket to a
receiver socket, either the way `proxy/tunnel.rs` does (receive into a
64 KiB buffer, send it: two copies across the user boundary per chunk) or
through a pipe with splice(2) (socket -> pipe -> socket, pages moved, not
copied to user space). The relay thread's CPU time (user + system,
CLOCK_THREAD_CPUTIME_ID) per GiB is what a proxy would pay; sender and
receiver are separate processes. Methods interleave (A B A B ...) for
`--rounds`, medians reported, and the ratio splice / copy.

    scripts/bench/splice_experiment.py [--gib 1] [--rounds 5] [--chunk 65536]

Loopback only, kernel-picked ports, bounded loops. Syscall overhead per
chunk is Python's in both methods (a few microseconds per 64 KiB); what
differs is the kernel's work per byte.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time


def sender(port, nbytes, chunk):
    s = socket.create_connection(("127.0.0.1", port))
    data, left = memoryview(bytes(chunk)), nbytes
    while left > 0:
        n = min(left, chunk)
        s.sendall(data[:n])
        left -= n
    s.close()


def receiver(port, chunk):
    s = socket.create_connection(("127.0.0.1", port))
    buf, total = bytearray(chunk), 0
    while True:
        n = s.recv_into(buf)
        if n == 0:
            break
        total += n
    s.sendall(str(total).encode())
    s.close()


def copy_relay(src, dst, chunk):
    buf = bytearray(chunk)
    view = memoryview(buf)
    moved = 0
    while True:
        n = src.recv_into(buf)
        if n == 0:
            return moved
        dst.sendall(view[:n])
        moved += n


def splice_relay(src, dst, chunk):
    r, w = os.pipe()
    moved = 0
    try:
        while True:
            n = os.splice(src.fileno(), w, chunk, flags=os.SPLICE_F_MOVE)
            if n == 0:
                return moved
            left = n
            while left > 0:
                left -= os.splice(r, dst.fileno(), left, flags=os.SPLICE_F_MOVE)
            moved += n
    finally:
        os.close(r)
        os.close(w)


def one_run(method, nbytes, chunk):
    """Returns the relay thread's CPU seconds for moving `nbytes`."""
    listen_in, listen_out = socket.socket(), socket.socket()
    for s in (listen_in, listen_out):
        s.bind(("127.0.0.1", 0))
        s.listen(1)
    me = os.path.abspath(__file__)
    send = subprocess.Popen([sys.executable, me, "--sender", str(listen_in.getsockname()[1]),
                             str(nbytes), str(chunk)])
    recv = subprocess.Popen([sys.executable, me, "--receiver", str(listen_out.getsockname()[1]),
                             str(chunk)])
    src, _ = listen_in.accept()
    dst, _ = listen_out.accept()
    start = time.thread_time()
    moved = {"copy": copy_relay, "splice": splice_relay}[method](src, dst, chunk)
    dst.shutdown(socket.SHUT_WR)
    cpu = time.thread_time() - start
    counted = dst.recv(64)
    for s in (src, dst, listen_in, listen_out):
        s.close()
    send.wait(timeout=120)
    recv.wait(timeout=120)
    if moved != nbytes or int(counted) != nbytes:
        raise SystemExit(f"{method}: moved {moved}, receiver counted {counted!r}, expected {nbytes}")
    return cpu


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--sender":
        return sender(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    if len(sys.argv) > 1 and sys.argv[1] == "--receiver":
        return receiver(int(sys.argv[2]), int(sys.argv[3]))
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=65536)
    a = ap.parse_args()
    nbytes = int(a.gib * (1 << 30))
    results = {"copy": [], "splice": []}
    for round_ in range(max(1, min(a.rounds, 50))):
        for method in ("copy", "splice"):
            cpu = one_run(method, nbytes, a.chunk)
            results[method].append(cpu / a.gib)
            print(f"round {round_ + 1} {method:6} {cpu / a.gib:.3f} CPU s/GiB", flush=True)
    copy, spliced = (statistics.median(results[m]) for m in ("copy", "splice"))
    print(f"median CPU s/GiB: copy {copy:.3f}, splice {spliced:.3f}, ratio splice/copy {spliced / copy:.3f}")


if __name__ == "__main__":
    sys.exit(main())
