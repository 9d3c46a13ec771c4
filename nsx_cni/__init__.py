"""nsx-proxy-cni: the CNI plugin that attaches pods to a node's OVS bridge.

It leaves every port the way docs/ovsdb.md  say, so the
agent finds the pods it serves in OVSDB and nowhere else.
"""
