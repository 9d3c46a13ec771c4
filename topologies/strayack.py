"""Send three TCP ACK segments: SRC DST DPORT [SPORT [SEQ]].

With SPORT of a live connection and a SEQ far outside its window, this is
the out-of-window segment conntrack marks invalid (kube-proxy's INVALID
drop case).  Run inside a pod: raw socket, standard library only; the
checksum is right, so only conntrack can object to it.
"""
import socket
import struct
import sys


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def main():
    src, dst, dport = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sport = int(sys.argv[4]) if len(sys.argv) > 4 else 41000
    seq = int(sys.argv[5], 0) if len(sys.argv) > 5 else 1
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, 1, 5 << 4, 0x10, 1024, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, 20)
    header = header[:16] + struct.pack("!H", checksum(pseudo + header)) + header[18:]
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    for _ in range(3):
        sock.sendto(header, (dst, 0))


if __name__ == "__main__":
    main()
