"""Install (or remove) the plugin and its conflist on a node, as Antrea's
install-cni init container does: ``python -m nsx_cni.install --bin-dir
/host/opt/cni/bin --conf-dir /host/etc/cni/net.d``.

The plugin goes in as one file, a zipapp of ``nsx_cni`` and the one module
of ours it reads (``controller/bridges.py``): the node runs it with its own
``/usr/bin/python3`` (3.7 or later, standard library only; ``--python``
names another), not the agent image's.  ``-IS``: no site-packages, no
environment, no ``.pth`` files - the interpreter starts in 8 ms instead of
40, which is most of an ADD when ten pods start at once.
Every file is written beside its target and renamed over it, so a runtime
never executes or reads half a file.
"""
import argparse
import json
import os
import py_compile
import shutil
import sys
import tempfile
import zipapp

from nsx_cni.spec import PLUGIN_TYPE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFLIST = "10-nsx-proxy.conflist"
NETWORK = "nsx-proxy"
SOURCES = ["nsx_cni/__init__.py", "nsx_cni/spec.py", "nsx_cni/ipam.py", "nsx_cni/links.py",
           "nsx_cni/ovsdb.py", "nsx_cni/plugin.py", "controller/__init__.py",
           "controller/bridges.py"]
# What our conflist needs besides our plugin: host-local for addresses, and
# loopback, which runtimes run for every sandbox's lo.
STANDARD_PLUGINS = ("host-local", "loopback")
DEFAULT_PYTHON = "/usr/bin/python3"


def conflist(mtu=None, node_name=None, ipam_data_dir=None) -> dict:
    plugin = {"type": PLUGIN_TYPE, "ipam": {"type": "host-local"}}
    if mtu:
        plugin["mtu"] = mtu
    if node_name:
        plugin["nodeName"] = node_name
    if ipam_data_dir:
        plugin["ipam"]["dataDir"] = ipam_data_dir
    return {"cniVersion": "1.0.0", "name": NETWORK, "plugins": [plugin]}


def _replace(path: str, write, mode=0o644) -> None:
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".nsx-proxy-")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def build_plugin(fh, python=DEFAULT_PYTHON) -> None:
    with tempfile.TemporaryDirectory() as stage:
        for rel in SOURCES:
            os.makedirs(os.path.join(stage, os.path.dirname(rel)), exist_ok=True)
            shutil.copy(os.path.join(REPO, rel), os.path.join(stage, rel))
            # zipimport cannot cache bytecode, so it would compile every module
            # on every call (35 ms of an ADD): ship it, beside the source, in
            # the legacy name zipimport reads.  A node whose Python differs
            # from the image's finds the magic number wrong and uses the source.
            py_compile.compile(os.path.join(stage, rel), cfile=os.path.join(stage, rel + "c"),
                               doraise=True)
        zipapp.create_archive(stage, fh, interpreter=f"{python} -IS",
                              main="nsx_cni.plugin:main")


def install(bin_dir, conf_dir, plugins_from=None, python=DEFAULT_PYTHON, **conf) -> list:
    """Install; the paths of the standard plugins copied in (the ones a node
    lacked)."""
    os.makedirs(bin_dir, exist_ok=True)
    os.makedirs(conf_dir, exist_ok=True)
    _replace(os.path.join(bin_dir, PLUGIN_TYPE), lambda fh: build_plugin(fh, python), 0o755)
    copied = []
    for name in STANDARD_PLUGINS if plugins_from else ():
        target = os.path.join(bin_dir, name)
        if not os.path.exists(target):
            with open(os.path.join(plugins_from, name), "rb") as src:
                _replace(target, lambda fh: shutil.copyfileobj(src, fh), 0o755)
            copied.append(target)
    text = (json.dumps(conflist(**conf), indent=2) + "\n").encode()
    _replace(os.path.join(conf_dir, CONFLIST), lambda fh: fh.write(text))
    return copied


def uninstall(bin_dir, conf_dir) -> None:
    """The plugin and our conflist (host-local and loopback stay: other
    networks use them)."""
    for path in (os.path.join(bin_dir, PLUGIN_TYPE), os.path.join(conf_dir, CONFLIST)):
        if os.path.exists(path):
            os.unlink(path)


def parser() -> argparse.ArgumentParser:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--bin-dir", default="/opt/cni/bin")
    args.add_argument("--conf-dir", default="/etc/cni/net.d")
    args.add_argument("--mtu", type=int, help="the pods' MTU (default: the kernel's)")
    args.add_argument("--node-name", default=os.environ.get("NODE_NAME"),
                      help="pick the bridge of this node (default $NODE_NAME)")
    args.add_argument("--plugins-from", help="copy host-local and loopback from this "
                      "folder into --bin-dir where the node lacks them")
    args.add_argument("--ipam-data-dir", help="host-local's dataDir (default its own: "
                      "/var/lib/cni/networks)")
    args.add_argument("--python", default=DEFAULT_PYTHON,
                      help="the node's Python 3 that runs the plugin")
    args.add_argument("--uninstall", action="store_true")
    return args


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.uninstall:
        uninstall(args.bin_dir, args.conf_dir)
        print(f"removed {PLUGIN_TYPE} from {args.bin_dir} and {CONFLIST} from {args.conf_dir}")
        return 0
    install(args.bin_dir, args.conf_dir, args.plugins_from, args.python, mtu=args.mtu,
            node_name=args.node_name, ipam_data_dir=args.ipam_data_dir)
    print(f"installed {args.bin_dir}/{PLUGIN_TYPE} and {args.conf_dir}/{CONFLIST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
