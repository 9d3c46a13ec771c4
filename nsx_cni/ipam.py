"""Delegating addresses to an IPAM plugin (``host-local``), the way the spec
says: the same command and environment, the network config on stdin, the
plugin found in CNI_PATH.  An error it answers is passed on as it is."""
import json
import os
import subprocess

from nsx_cni.spec import INTERNAL, INVALID_CONFIG, IO_FAILURE, CniError, Request

TIMEOUT = 30


def find_plugin(name: str, path) -> str:
    for folder in path:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CniError(INVALID_CONFIG, f"IPAM plugin {name!r} not found in CNI_PATH "
                   f"({':'.join(path) or 'empty'})")


def delegate(req: Request, command: str, config: dict, env) -> dict:
    """Run the IPAM plugin for ``command``; its result (``{}`` for DEL and CHECK)."""
    plugin = find_plugin(config["ipam"]["type"], req.path)
    try:
        proc = subprocess.run([plugin], input=json.dumps(config).encode(),
                              env=dict(env, CNI_COMMAND=command),
                              capture_output=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CniError(IO_FAILURE, f"IPAM plugin {plugin}: {exc}") from None
    out = proc.stdout.decode("utf-8", errors="replace").strip()
    try:
        answer = json.loads(out) if out else {}
    except ValueError:
        answer = None
    if proc.returncode != 0:
        if isinstance(answer, dict) and isinstance(answer.get("code"), int):
            raise CniError(answer["code"], f"IPAM ({config['ipam']['type']}): "
                           f"{answer.get('msg', '')}", str(answer.get("details", "")))
        err = proc.stderr.decode("utf-8", errors="replace").strip()
        raise CniError(INTERNAL, f"IPAM plugin {plugin} failed (exit {proc.returncode})",
                       (err or out)[:500])
    if not isinstance(answer, dict):
        raise CniError(INTERNAL, f"IPAM plugin {plugin} answered no JSON object", out[:500])
    return answer
