"""A small Kubernetes API server for the lab: the stand-in for a control plane.

It speaks the real REST protocol (paths, JSON, list/watch with
resourceVersions, bookmarks, 410 Gone, merge patches, the status
subresource) for the handful of resources the proxy and the lab use, and
runs the two control loops the proxy depends on: ClusterIP/nodePort
allocation and the EndpointSlice controller.  The official Python client
and kubectl work against it.  It is not a product: no auth, no admission,
no persistence beyond the process (a restart of the HTTP side keeps the
store, like an API server restarting in front of the same etcd).
"""
from topologies.apiserver.server import ApiServer  # noqa: F401
