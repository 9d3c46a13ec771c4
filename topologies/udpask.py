"""Ask a UDP server once from inside a pod: IP PORT -> its answer, or refused/timeout.

A connected UDP socket turns an ICMP port unreachable into
ConnectionRefusedError, which is how a client sees a rejected datagram.
Standard library only.
"""
import socket
import sys


def main():
    ip, port = sys.argv[1], int(sys.argv[2])
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    sock.connect((ip, port))
    try:
        sock.send(b"hi")
        print(sock.recv(100).decode().strip())
    except ConnectionRefusedError:
        print("refused")
    except socket.timeout:
        print("timeout")


if __name__ == "__main__":
    main()
