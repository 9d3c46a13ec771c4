"""Send COUNT TCP SYNs as fast as possible: SRC DST DPORT COUNT (raw socket).

For the rate-limit test of rejected connections; run inside a pod.
"""
import socket
import struct
import sys

from strayack import checksum


def main():
    src, dst, dport, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, 20)
    for i in range(count):
        sport = 20000 + i % 40000
        header = struct.pack("!HHIIBBHHH", sport, dport, i, 0, 5 << 4, 0x02, 1024, 0, 0)
        header = header[:16] + struct.pack("!H", checksum(pseudo + header)) + header[18:]
        sock.sendto(header, (dst, 0))


if __name__ == "__main__":
    main()
