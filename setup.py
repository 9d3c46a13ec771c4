"""Packaging shim: everything is in setup.cfg except the .pth file below.

Ryu 4.34's ``ryu-manager`` imports ``ryu.app.wsgi``, which imports
``eventlet.wsgi.ALREADY_HANDLED`` - a name eventlet removed before it
supported Python 3.11.  The fix has to run before ``ryu-manager`` imports
anything, so the wheel carries a one-line ``.pth`` file that installs a tiny
import hook (controller/ryu_compat.py).  The hook only acts when eventlet.wsgi
is imported; every other interpreter start pays for one small import.
"""
import os

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop

PTH_NAME = "nsx_proxy_ryu_compat.pth"
PTH_LINE = "import controller.ryu_compat; controller.ryu_compat.install()\n"


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        target = os.path.join(self.build_lib, PTH_NAME)
        with open(target, "w") as pth:
            pth.write(PTH_LINE)

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [
            os.path.join(self.build_lib, PTH_NAME)]


class DevelopWithPth(develop):
    """``pip install -e`` (legacy develop mode): put the .pth in site-packages."""

    def run(self):
        super().run()
        if not self.uninstall:
            with open(os.path.join(self.install_dir, PTH_NAME), "w") as pth:
                pth.write(PTH_LINE)


setup(cmdclass={"build_py": BuildPyWithPth, "develop": DevelopWithPth})
