"""The official Kubernetes client, loading only what the proxy runs.

Every module here that talks to the API imports the client from this one.
The reason is the client's package ``__init__`` files: ``import kubernetes``
imports 1,000 modules, among them every generated API class and all 623
model classes. The proxy uses a handful: ``ApiClient``, ``Configuration``,
``CoreV1Api``, ``DiscoveryV1Api``, ``CoordinationV1Api``, the exceptions,
the watch's line reader and the leader election. That eager import was about
25 MB and 150 ms of every agent's start.

So, before anything imports ``kubernetes``, its five package modules
(``kubernetes``, ``.client``, ``.client.api``, ``.client.models`` and
``.config``) are put in ``sys.modules`` as empty packages over the
installed files. A name such as ``client.CoreV1Api`` is imported when first
used, from the module the real ``__init__`` would have imported it from.
That mapping is read from the installed ``__init__`` (its ``from ... import``
statements, parsed), so it follows the client's version. ``load_config``
imports only the loader that runs: in a pod, the kubeconfig loader and its
auth plugins (google-auth, oauthlib) stay out. Nothing else of the client
is changed; code in a package ``__init__`` besides its imports (such as
``kubernetes.config.load_config``) is not available.

The client offers no lazy mode, and no well-kept library does this for an
arbitrary package's ``__init__``; the standard library's ``LazyLoader``
defers one module's code, not the ``from X import Y`` lines of a package.
Hence this module.
"""
import ast
import importlib
import importlib.util
import os
import re
import sys
import types

_VERSION = re.compile(r"^__version__ = ['\"]([^'\"]+)['\"]", re.M)
# the package modules whose __init__ imports everything, as (name, folder);
# kubernetes.config's brings google-auth, oauthlib and cryptography (150
# modules) for kubeconfig auth plugins an in-cluster agent never uses
_PACKAGES = (("kubernetes", ""), ("kubernetes.client", "client"),
             ("kubernetes.client.api", os.path.join("client", "api")),
             ("kubernetes.client.models", os.path.join("client", "models")),
             ("kubernetes.config", "config"))


def _origins(name, text):
    """{attribute: (module, its name there)} from the package's ``from X
    import a`` lines; (submodule, None) for ``from . import a``."""
    out = {}
    for node in ast.parse(text).body:
        if not isinstance(node, ast.ImportFrom):
            continue
        module = node.module if not node.level else \
            ".".join(p for p in (name, node.module) if p)
        for alias in node.names:
            if node.level and node.module is None:          # from . import sub
                out[alias.asname or alias.name] = (f"{name}.{alias.name}", None)
            else:
                out[alias.asname or alias.name] = (module, alias.name)
    return out


def _lazy_package(name, folder):
    """A package module over ``folder`` whose names load on first use."""
    init = os.path.join(folder, "__init__.py")
    with open(init) as fh:
        text = fh.read()
    origin = _origins(name, text)
    mod = types.ModuleType(name)
    mod.__file__, mod.__path__, mod.__package__ = init, [folder], name
    mod.__spec__ = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[folder])
    version = _VERSION.search(text)
    if version:
        mod.__version__ = version.group(1)

    def __getattr__(attr):             # PEP 562: only for names not set yet
        if attr.startswith("__"):
            raise AttributeError(attr)
        if attr in origin:
            module, there = origin[attr]
            value = importlib.import_module(module)
            if there is not None:
                value = getattr(value, there)
        else:                          # a subpackage or module: kubernetes.config, ...
            try:
                value = importlib.import_module(f"{name}.{attr}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{name}.{attr}":
                    raise
                raise AttributeError(f"module {name!r} has no attribute {attr!r}") from None
        setattr(mod, attr, value)
        return value
    mod.__getattr__ = __getattr__
    return mod


def _install():
    if "kubernetes" in sys.modules:    # imported already (a test, a tool): keep it
        return
    spec = importlib.util.find_spec("kubernetes")
    root = os.path.dirname(spec.origin)
    for name, sub in _PACKAGES:
        sys.modules[name] = _lazy_package(name, os.path.join(root, sub))


_install()

from kubernetes import client  # noqa: E402  (after the packages are in place)
from kubernetes.client.exceptions import ApiException  # noqa: E402
from kubernetes.watch.watch import iter_resp_lines  # noqa: E402

__all__ = ["client", "load_config", "ApiException", "iter_resp_lines"]


def load_config(kubeconfig, configuration) -> None:
    """Fill ``configuration`` as kubectl would: in-cluster when the pod's
    environment says so and no kubeconfig is given, else from the kubeconfig
    (``kubeconfig``, else ``KUBECONFIG`` / ``~/.kube/config``).  Only the loader
    that runs is imported."""
    if not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
        from kubernetes.config.incluster_config import load_incluster_config
        load_incluster_config(client_configuration=configuration)
    else:
        from kubernetes.config.kube_config import load_kube_config
        load_kube_config(config_file=kubeconfig, client_configuration=configuration)
