"""The lab's pod workload: say who you are, over TCP and UDP.

IPv4 and, where the pod has it, IPv6.  TCP: an HTTP GET gets ``<pod
name>`` as the body (so ``curl`` shows which backend answered), ``GET /ip``
the client address the server sees, ``GET /local`` the server address the
client reached; any other line gets
``<pod name> <line>`` back, line by
line, for as long as the client keeps the connection (tests use this to
hold an established connection across changes).  UDP: every datagram is
answered with ``<pod name>``.

Standard library only: it runs with Debian's python3 inside the pod's
network namespace.
"""
import argparse
import socket
import socketserver
import threading


def make_tcp_handler(name: str):
    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            first = self.rfile.readline()
            if first.startswith(b"GET ") or first.startswith(b"HEAD "):
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                # GET /ip: the client address this server sees (source NAT checks);
                # GET /local: the address the client reached (which of a host's
                # many addresses - the endpoints of a selectorless service)
                path = first.split()[1] if len(first.split()) > 1 else b"/"
                body = (f"{self.client_address[0]}\n" if path == b"/ip"
                        else f"{self.connection.getsockname()[0]}\n" if path == b"/local"
                        else f"{name}\n").encode()
                self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                                 % (len(body), body))
                return
            line = first
            while line:
                self.wfile.write(f"{name} {line.decode(errors='replace').strip()}\n"
                                 .encode())
                self.wfile.flush()
                line = self.rfile.readline()
    return Handler


class ThreadingTCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class ThreadingTCPServer6(ThreadingTCPServer):
    """The same on IPv6 only (an IPv4 client keeps its plain address on the
    IPv4 socket, where /ip shows it as it always did)."""
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


def listeners(ports, handler):
    """A TCP server per port and family; IPv6 only where the pod has it."""
    servers = [ThreadingTCPServer(("0.0.0.0", p), handler) for p in ports]
    for p in ports:
        try:
            servers.append(ThreadingTCPServer6(("::", p), handler))
        except OSError:
            pass                          # no IPv6 in this namespace
    return servers


def udp_sockets(port):
    out = []
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
        except OSError:
            if family == socket.AF_INET:
                raise
            continue                      # no IPv6 in this namespace
        out.append(sock)
    return out


def serve_udp(name: str, sock):
    while True:
        _, peer = sock.recvfrom(2048)
        sock.sendto(name.encode(), peer)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--tcp", type=int, action="append", default=[])
    parser.add_argument("--udp", type=int, action="append", default=[])
    args = parser.parse_args(argv)
    for server in listeners(args.tcp, make_tcp_handler(args.name)):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    for port in args.udp:
        for sock in udp_sockets(port):
            threading.Thread(target=serve_udp, args=(args.name, sock), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
