"""Open many short connections to one frontend and count who answered.

    python3 spread.py IP PORT COUNT [PATH]

Each connection sends ``GET PATH`` (default ``/``) and reads the one-line
body; prints JSON: {"answers": {body: count}, "failed": n}.  Standard library
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


def main():
    ip, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    path = sys.argv[4] if len(sys.argv) > 4 else "/"
    answers, failed = collections.Counter(), 0
    for _ in range(count):
        try:
            answers[ask(ip, port, path)] += 1
        except OSError:
            failed += 1
    print(json.dumps({"answers": answers, "failed": failed}))


if __name__ == "__main__":
    main()
