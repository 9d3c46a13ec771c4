"""Kubernetes exec probe: ``python3 -m controller.probe /healthz`` (or /readyz).

The agent's status endpoint listens on 127.0.0.1 only, which a kubelet's
httpGet probe cannot reach from outside the pod's network namespace; this
runs inside the container instead.  The port is the ``status_port`` of the
agent's config file ($NSX_PROXY_CONFIG, default /etc/nsx-proxy/nsx-proxy.conf).
Exit 0 on HTTP 200, 1 otherwise, printing the endpoint's reasons.
"""
import os
import sys
import urllib.error
import urllib.request

from controller.cli import status_url

DEFAULT_CONFIG = "/etc/nsx-proxy/nsx-proxy.conf"


def main(argv=None):
    path = (argv or sys.argv[1:] or ["/healthz"])[0]
    url = status_url(os.environ.get("NSX_PROXY_CONFIG", DEFAULT_CONFIG)) + path
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            print(resp.read().decode(), end="")
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.read().decode(), end="")
    except OSError as exc:
        print(f"{url}: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
