#!/usr/bin/env python3
"""Would splice(2) or a zero-copy send make bodies and CONNECT tunnels
cheaper? An experiment outside the proxy (issues 7 and 10): one relay thread
moves N bytes from a sender socket to a receiver socket, either the way
`proxy/tunnel.rs` does (`copy`: receive into a 64 KiB buffer, send it: two
copies across the user boundary per chunk), through a pipe with splice(2)
(`splice`: socket -> pipe -> socket, pages moved, not copied to user
space), or receiving into buffers and sending them with MSG_ZEROCOPY
(`zerocopy`: the kernel pins the buffer's pages instead of copying them, and
reports on the socket's error queue when it is done with them, and whether
it had to copy after all). The relay thread's CPU time (user + system,
CLOCK_THREAD_CPUTIME_ID) per GiB is what a proxy would pay; sender and
receiver are separate processes. Methods interleave (A B C A B C ...) for
`--rounds`, medians reported, and each method's ratio to copy.

    scripts/bench/splice_experiment.py [--gib 1] [--rounds 5] [--chunk 65536] [--methods copy,splice,zerocopy]

Loopback only, kernel-picked ports, bounded loops. Syscall overhead per
chunk is Python's in both methods (a few microseconds per 64 KiB); what
differs is the kernel's work per byte.
"""

import argparse
import os
import select
import socket
import statistics
import struct
import subprocess
import sys
import time

# Linux's values (not all in Python's socket module).
SO_ZEROCOPY = 60
MSG_ZEROCOPY = 0x4000000
SO_EE_ORIGIN_ZEROCOPY = 5
SO_EE_CODE_ZEROCOPY_COPIED = 1


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


class ZerocopyNotes:
    """Reads the zero-copy completions off a socket's error queue: each
    covers a range of send calls (numbered from 0) whose pages the kernel
    no longer needs, flagged when it copied them anyway (as it does for a
    receiver on the same host)."""

    def __init__(self, sock):
        self.sock, self.done, self.copied, self.notes = sock, 0, 0, 0
        self.poller = select.poll()
        self.poller.register(sock, select.POLLERR)

    def reap(self, block):
        if block:
            self.poller.poll(5000)
        while True:
            try:
                _, ancdata, _, _ = self.sock.recvmsg(0, 256, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            for _level, _type, data in ancdata:
                _errno, origin, _kind, code, _pad, first, last = struct.unpack("=IBBBBII", data[:16])
                if origin != SO_EE_ORIGIN_ZEROCOPY:
                    continue
                self.done = max(self.done, last + 1)
                self.notes += 1
                if code & SO_EE_CODE_ZEROCOPY_COPIED:
                    self.copied += last - first + 1


def zerocopy_relay(src, dst, chunk, spares=4):
    """Receives into one of `spares` buffers and sends it with
    MSG_ZEROCOPY; a buffer is received into again only once the kernel has
    reported every send from it done."""
    dst.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
    notes = ZerocopyNotes(dst)
    bufs = [bytearray(chunk) for _ in range(spares)]
    last_send_of = [-1] * spares
    calls, moved, turn = 0, 0, 0
    while True:
        i = turn % spares
        for _ in range(10_000):  # bounded: each wait blocks up to 5 s
            if last_send_of[i] < notes.done:
                break
            notes.reap(block=True)
        n = src.recv_into(bufs[i])
        if n == 0:
            break
        view, off = memoryview(bufs[i])[:n], 0
        while off < n:
            try:
                off += dst.send(view[off:], MSG_ZEROCOPY)
                calls += 1
            except OSError:  # ENOBUFS: too many pages pinned; let some go
                notes.reap(block=True)
        last_send_of[i] = calls - 1
        moved += n
        turn += 1
        notes.reap(block=False)
    for _ in range(10_000):
        if notes.done >= calls:
            break
        notes.reap(block=True)
    zerocopy_relay.last = (calls, notes.copied)
    return moved


def one_run(method, nbytes, chunk):
    """Returns the relay thread's CPU seconds for moving `nbytes`, and the
    sender's and receiver's together (work the kernel does on the relay's
    behalf may land in either: a loopback receive runs in the sender's
    context)."""
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
    relays = {"copy": copy_relay, "splice": splice_relay, "zerocopy": zerocopy_relay}
    moved = relays[method](src, dst, chunk)
    dst.shutdown(socket.SHUT_WR)
    cpu = time.thread_time() - start
    counted = dst.recv(64)
    for s in (src, dst, listen_in, listen_out):
        s.close()
    ends = 0.0
    for child in (send, recv):
        _, _, usage = os.wait4(child.pid, 0)
        child.returncode = 0
        ends += usage.ru_utime + usage.ru_stime
    if moved != nbytes or int(counted) != nbytes:
        raise SystemExit(f"{method}: moved {moved}, receiver counted {counted!r}, expected {nbytes}")
    return cpu, ends


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--sender":
        return sender(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    if len(sys.argv) > 1 and sys.argv[1] == "--receiver":
        return receiver(int(sys.argv[2]), int(sys.argv[3]))
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--methods", default="copy,splice,zerocopy")
    a = ap.parse_args()
    nbytes = int(a.gib * (1 << 30))
    methods = a.methods.split(",")
    results = {m: [] for m in methods}
    totals = {m: [] for m in methods}
    for round_ in range(max(1, min(a.rounds, 50))):
        for method in methods:
            cpu, ends = one_run(method, nbytes, a.chunk)
            results[method].append(cpu / a.gib)
            totals[method].append((cpu + ends) / a.gib)
            extra = ""
            if method == "zerocopy":
                calls, copied = zerocopy_relay.last
                extra = f"  ({calls} sends, {copied} reported copied by the kernel)"
            print(f"round {round_ + 1} {method:8} relay {cpu / a.gib:.3f}, all three {(cpu + ends) / a.gib:.3f} "
                  f"CPU s/GiB{extra}", flush=True)
    for label, runs in (("relay thread", results), ("relay + sender + receiver", totals)):
        medians = {m: statistics.median(runs[m]) for m in methods}
        base = medians.get("copy")
        print(f"median CPU s/GiB, {label}: " + ", ".join(
            f"{m} {v:.3f}" + (f" ({v / base:.2f}x copy)" if base and m != "copy" else "")
            for m, v in medians.items()))


if __name__ == "__main__":
    sys.exit(main())
