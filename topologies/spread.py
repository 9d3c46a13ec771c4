"""Open many short connections to one frontend and count who answered.

    python3 spread.py IP PORT COUNT [PATH]
    python3 spread.py --udp IP PORT COUNT

Each connection sends ``GET PATH`` (default ``/``) and reads the one-line
body; with ``--udp``, each query is a datagram from a socket of its own (a
new source port, as a resolver sends) answered by the server's name.
Prints JSON: {"answers": {body: count}, "failed": n}.  Standard library
only: it runs with Debian's python3 inside a pod's network namespace.
"""
import collections
import json
import socket
import sys


def ask(ip, port, path):
    with socket.create_connection((ip, port), timeout=3) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n\r\n", 1)[-1].decode().strip()


def ask_udp(ip, port):
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET,
                       socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.connect((ip, port))
        sock.send(b"who")
        return sock.recv(100).decode().strip()


def main():
    args = sys.argv[1:]
    udp = args[:1] == ["--udp"]
    if udp:
        args = args[1:]
    ip, port, count = args[0], int(args[1]), int(args[2])
    path = args[3] if len(args) > 3 else "/"
    answers, failed = collections.Counter(), 0
    for _ in range(count):
        try:
            answers[ask_udp(ip, port) if udp else ask(ip, port, path)] += 1
        except OSError:
            failed += 1
    print(json.dumps({"answers": answers, "failed": failed}))


if __name__ == "__main__":
    main()
