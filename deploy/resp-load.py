#!/usr/bin/env python3
"""Sends a command N times to a RESP server on loopback, pipelined, and
waits for every reply.

    deploy/resp-load.py PORT N 'COMMAND ARG ...' ['COMMAND ...' ...]

Each command is split on spaces and formatted with `i` (0..N-1), e.g.
`'SET key:{i:010d} v{i}'`. Several commands are sent N times each, one
after the other. Replies are counted, not checked (an error is one line).
"""
import socket
import sys

BATCH = 100_000


def encode(words):
    out = [b"*%d\r\n" % len(words)]
    for w in words:
        w = w.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(w), w))
    return b"".join(out)


def main():
    port, n, templates = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    s = socket.create_connection(("127.0.0.1", port))
    for template in templates:
        words = template.split(" ")
        for base in range(0, n, BATCH):
            count = min(BATCH, n - base)
            s.sendall(b"".join(encode([w.format(i=i) for w in words]) for i in range(base, base + count)))
            data = b""
            # Every reply these commands get is one line (+OK, :n, -ERR).
            while data.count(b"\r\n") < count:
                chunk = s.recv(1 << 20)
                if not chunk:
                    sys.exit("connection closed")
                data += chunk


main()
