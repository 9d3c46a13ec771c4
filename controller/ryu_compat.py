"""Make Ryu 4.34 import under Python 3.11 with eventlet 0.33.

``ryu-manager`` imports ``ryu.app.wsgi`` before it loads any application,
and that module does ``from eventlet.wsgi import ALREADY_HANDLED``.  eventlet
removed the name in 0.30.3 (it became ``WSGI_LOCAL.already_handled``), while
the first eventlet that runs on Python 3.11 is 0.33.  Ryu is unmaintained, so
we supply the name ourselves.

The package's ``nsx_proxy_ryu_compat.pth`` calls :func:`install` at
interpreter start.  It registers a meta-path finder that waits for
``eventlet.wsgi`` to be imported and then adds the missing attribute: nothing
is imported eagerly, so other programs in the venv are not slowed down or
monkey-patched.  Ryu only uses the value as an opaque sentinel returned from
a WSGI app, which eventlet 0.33 never checks, so any unique object works.
"""
import importlib.abc
import importlib.machinery
import sys

_TARGET = "eventlet.wsgi"


def patch_eventlet_wsgi(module) -> None:
    """Add ``ALREADY_HANDLED`` to an imported ``eventlet.wsgi`` if absent."""
    if not hasattr(module, "ALREADY_HANDLED"):
        module.ALREADY_HANDLED = object()


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        patch_eventlet_wsgi(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def install() -> None:
    """Idempotently arrange for ``eventlet.wsgi`` to carry ALREADY_HANDLED."""
    if _TARGET in sys.modules:
        patch_eventlet_wsgi(sys.modules[_TARGET])
        return
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
