"""The official client, loading only what runs (nsx_proxy/kube_client.py)."""
import subprocess
import sys

PROBE = """
import sys
import nsx_proxy.kube_source
loaded = [m for m in sys.modules if m.startswith("kubernetes.")]
models = [m for m in loaded if m.startswith("kubernetes.client.models.")]
from nsx_proxy.kube_client import ApiException, client, load_config
import kubernetes
assert "kubernetes.config.kube_config" not in sys.modules     # nor google-auth, oauthlib
assert client.CoreV1Api.__module__ == "kubernetes.client.api.core_v1_api"
assert client.V1Lease.__module__ == "kubernetes.client.models.v1_lease"
assert client.ApiClient.__module__ == "kubernetes.client.api_client"
assert issubclass(ApiException, Exception)
assert kubernetes.config.load_kube_config.__module__ == "kubernetes.config.kube_config"
assert kubernetes.__version__
try:
    client.NoSuchThing
except AttributeError as exc:
    assert "NoSuchThing" in str(exc)
else:
    raise AssertionError("an unknown name resolved")
print(len(loaded), len(models))
"""


def test_the_client_loads_only_the_classes_the_proxy_uses():
    """Eagerly, `import kubernetes` loads about 1,000 of its modules (all 623
    models, and the kubeconfig loader's auth plugins); the proxy's source
    needs a few dozen, and the names it uses still resolve to the client's
    own classes."""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True).stdout.split()
    loaded, models = int(out[0]), int(out[1])
    assert models <= 2 and loaded < 60, (loaded, models)
