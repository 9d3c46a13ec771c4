"""Run the lab's API server on its own: python -m topologies.apiserver --kubeconfig F."""
import argparse
import logging

from topologies.apiserver.server import ApiServer
from topologies.waiting import until_stopped


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--kubeconfig", help="write a kubeconfig for this server here")
    parser.add_argument("--bookmark-interval", type=float, default=5.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    server = ApiServer(port=args.port, bookmark_interval=args.bookmark_interval).start()
    if args.kubeconfig:
        server.kubeconfig(args.kubeconfig)
        print(f"kubeconfig written to {args.kubeconfig}", flush=True)
    until_stopped()
    server.stop()


if __name__ == "__main__":
    main()
