"""nsx-proxy-cni: the CNI plugin that attaches pods to a node's OVS bridge.

It leaves every port the way the README's "OVSDB conventions" say, so the
agent finds the pods it serves in OVSDB and nowhere else.
"""
