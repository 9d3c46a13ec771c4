"""Ask a UDP server once from inside a pod: IP (IPv4 or IPv6) PORT [TIMEOUT [SPORT]] -> its
answer, or refused/timeout.  A fixed SPORT reuses one conntrack entry.

A connected UDP socket turns an ICMP port unreachable into
ConnectionRefusedError, which is how a client sees a rejected datagram.
Standard library only.
"""
import socket
import sys


def main():
    ip, port = sys.argv[1], int(sys.argv[2])
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    v6 = ":" in ip
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    if len(sys.argv) > 4:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::" if v6 else "0.0.0.0", int(sys.argv[4])))
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
