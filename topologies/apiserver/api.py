"""The verbs: create, get, list, update, patch, delete, over the store.

No HTTP here (server.py maps requests onto these), so the semantics can be
read in one place: optimistic concurrency on ``metadata.resourceVersion``,
the main resource ignoring status and the status subresource ignoring the
rest, Service allocation, graceful deletion of bound pods.
"""
import copy
import json

from topologies.apiserver import endpointslices, errors, kinds
from topologies.apiserver.store import Store, now

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def json_patch(target, ops):
    """RFC 6902 JSON patch: add, remove, replace (what kubectl and clients send)."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1]
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if op["op"] == "add":
                parent.insert(index, op["value"])
            elif op["op"] == "remove":
                del parent[index]
            else:
                parent[index] = op["value"]
        elif op["op"] in ("add", "replace"):
            parent[last] = op["value"]
        elif op["op"] == "remove":
            parent.pop(last, None)
        else:
            raise errors.ApiError(400, "BadRequest", f"unsupported JSON patch op {op['op']!r}")
    return doc


class Api:
    # kube-apiserver's --service-cluster-ip-range of a dual-stack cluster:
    # IPv4 primary, so a Service that asks for nothing stays IPv4 only
    def __init__(self, service_cidr="10.96.0.0/12,fd00:96::/112", history=20000):
        self.store = Store(history=history)
        self.allocator = kinds.Allocator(service_cidr)
        self.store.after_write.append(endpointslices.after_write)
        for ns in SYSTEM_NAMESPACES:
            self.store.commit("namespaces", "ADDED", {
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})

    # --- helpers -------------------------------------------------------------
    def _check_namespace(self, res, ns):
        if res.namespaced and (None, ns) not in self.store.objects["namespaces"]:
            raise errors.not_found("namespaces", ns)

    @staticmethod
    def _stamp(res, obj):
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        return obj

    def _admit(self, res, ns, obj, old):
        """Defaults, validation and allocation for one write; may raise 422."""
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            meta["namespace"] = ns
        if res.name == "services":
            spec = obj.setdefault("spec", {})
            kinds.validate_service_ports(meta["name"], spec)
            self.allocator.claim(meta["name"], f"{ns}/{meta['name']}", spec,
                                 (old or {}).get("spec"))
        if res.name == "pods":
            obj.setdefault("status", {}).setdefault("phase", "Pending")

    # --- verbs ---------------------------------------------------------------
    def create(self, res, ns, obj):
        if not isinstance(obj, dict):
            raise errors.ApiError(400, "BadRequest", "the body must be a JSON object")
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + format(self.store.rv + 1, "05x")
        if not meta.get("name"):
            raise errors.invalid(res.kind, "", [("metadata.name", "Required value: name or "
                                                 "generateName is required")])
        for key in ("resourceVersion", "uid", "deletionTimestamp"):
            meta.pop(key, None)
        with self.store.cond:
            self._check_namespace(res, ns)
            if (ns if res.namespaced else None, meta["name"]) in self.store.objects[res.name]:
                raise errors.already_exists(res.name, meta["name"])
            self._admit(res, ns, obj, None)
            return self._stamp(res, self.store.commit(res.name, "ADDED", obj))

    def get(self, res, ns, name):
        return self._stamp(res, self.store.get(res.name, ns if res.namespaced else None, name))

    def update(self, res, ns, name, obj, subresource=None):
        with self.store.cond:
            key = ns if res.namespaced else None
            old = self.store.objects[res.name].get((key, name))
            if old is None:
                raise errors.not_found(res.name, name)
            meta = obj.setdefault("metadata", {})
            if meta.get("name", name) != name:
                raise errors.ApiError(400, "BadRequest", "the name of the object "
                                      f"({meta['name']}) does not match the name on the URL")
            if meta.get("resourceVersion") not in (None, "", old["metadata"]["resourceVersion"]):
                raise errors.conflict(res.name, name)
            new = copy.deepcopy(old)
            if subresource == "status":
                new["status"] = obj.get("status", {})
            else:
                for field, value in obj.items():
                    if field not in ("status", "metadata", "apiVersion", "kind"):
                        new[field] = value
                for field in ("labels", "annotations", "finalizers", "ownerReferences"):
                    if field in meta:
                        new["metadata"][field] = meta[field]
                    else:
                        new["metadata"].pop(field, None)
                if res.status and "status" not in old:
                    new["status"] = obj.get("status", {})
                self._admit(res, ns, new, old)
            if new == old:
                return self._stamp(res, copy.deepcopy(old))     # no-op: no new version
            result = self.store.commit(res.name, "MODIFIED", new)
            if res.name == "pods" and result["metadata"].get("deletionTimestamp") \
                    and result["metadata"].get("deletionGracePeriodSeconds") == 0:
                self.store.commit(res.name, "DELETED", copy.deepcopy(result))
            return self._stamp(res, result)

    def patch(self, res, ns, name, content_type, body, subresource=None):
        with self.store.cond:
            current = self.get(res, ns, name)
            try:
                patch = json.loads(body or b"null")
            except ValueError as exc:
                raise errors.ApiError(400, "BadRequest", f"invalid JSON patch: {exc}") from None
            if content_type.startswith("application/json-patch+json"):
                merged = json_patch(current, patch)
            elif content_type.startswith(("application/merge-patch+json",
                                          "application/strategic-merge-patch+json")):
                # A strategic merge patch is applied as a merge patch: lists are
                # replaced, not merged by key (enough for labels, specs, status).
                merged = merge_patch(current, patch)
            else:
                raise errors.ApiError(415, "UnsupportedMediaType",
                                      f"the body of the request was in an unknown format - "
                                      f"accepted media types include: application/json-patch+json, "
                                      f"application/merge-patch+json, "
                                      f"application/strategic-merge-patch+json")
            # The merge keeps the current resourceVersion unless the patch
            # names one: then, as in the real API server, it is a precondition
            # (409 Conflict if the object moved on), which update() checks.
            return self.update(res, ns, name, merged, subresource)

    def delete(self, res, ns, name, grace=None):
        with self.store.cond:
            key = ns if res.namespaced else None
            old = self.store.objects[res.name].get((key, name))
            if old is None:
                raise errors.not_found(res.name, name)
            if res.name == "pods" and (old.get("spec") or {}).get("nodeName") and grace != 0:
                if old["metadata"].get("deletionTimestamp"):
                    return self._stamp(res, copy.deepcopy(old))
                pod = copy.deepcopy(old)
                pod["metadata"]["deletionTimestamp"] = now()
                pod["metadata"]["deletionGracePeriodSeconds"] = grace if grace is not None \
                    else pod["spec"].get("terminationGracePeriodSeconds", 30)
                return self._stamp(res, self.store.commit(res.name, "MODIFIED", pod))
            if res.name == "namespaces":
                for other in kinds.RESOURCES.values():
                    if other.namespaced:
                        for obj in list(self.store.peek(other.name, name)):
                            self._remove(other, copy.deepcopy(obj))
            return self._remove(res, copy.deepcopy(old))

    def _remove(self, res, obj):
        if res.name == "services":
            meta = obj["metadata"]
            self.allocator.release(f"{meta['namespace']}/{meta['name']}")
        return self._stamp(res, self.store.commit(res.name, "DELETED", obj))
