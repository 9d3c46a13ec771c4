"""Hold one TCP connection open and ping over it on demand (lab and tests).

Reads lines on stdin; for each, sends it over the connection and prints the
server's answer (``<pod name> <line>``), or ``ERROR <reason>`` if the
connection broke.  Standard library only, runs in a pod's namespace.
"""
import socket
import sys


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    sock = socket.create_connection((host, port), timeout=5)
    reader = sock.makefile("r")
    print("connected", flush=True)
    for line in sys.stdin:
        try:
            sock.sendall(line.encode())
            answer = reader.readline().strip()
            print(answer or "ERROR closed", flush=True)
        except OSError as exc:
            print(f"ERROR {exc}", flush=True)


if __name__ == "__main__":
    main()
