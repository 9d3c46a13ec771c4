"""A Service's cluster IPs, allocated as kube-apiserver allocates them in a
(possibly) dual-stack cluster.

The service ranges are ``--service-cluster-ip-range``: one CIDR, or one of
each family (the first one's family is the cluster's primary).  A Service
asks with ``ipFamilyPolicy`` (SingleStack by default, PreferDualStack,
RequireDualStack), ``ipFamilies`` and ``clusterIPs``; it gets
``clusterIPs`` of the families it asked for, ``clusterIP`` = the first, and
``ipFamilies`` / ``ipFamilyPolicy`` written back.  Addresses it had are
kept across updates.  What the real API server refuses comes back as
(field, message) causes of a 422.
"""
import ipaddress
from typing import Dict, List, Tuple

FAMILIES = {4: "IPv4", 6: "IPv6"}
POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")


def _family(ip: str):
    try:
        return FAMILIES[ipaddress.ip_address(ip).version]
    except ValueError:
        return None


class ClusterIPs:
    def __init__(self, service_cidrs: str):
        nets = [ipaddress.ip_network(c.strip()) for c in service_cidrs.split(",") if c.strip()]
        self.nets = {FAMILIES[n.version]: n for n in nets}       # primary family first
        if len(self.nets) != len(nets):
            raise ValueError(f"service ranges {service_cidrs!r}: at most one per family")
        self.ips: Dict[str, str] = {}        # ip -> "ns/name"

    def free(self, family):
        net = self.nets[family]
        # the range's first address is the kubernetes service in a real
        # cluster: kept out of the pool; hosts() of an IPv6 /64 is huge, so
        # walk lazily
        for host in net.hosts():
            ip = str(host)
            if host != net.network_address + 1 and ip not in self.ips:
                return ip
        return None

    def claim(self, spec, old_spec, owner) -> Tuple[Dict[str, str], List[tuple]]:
        """Fill ``spec``'s cluster IP fields; ({ip: owner} to hold, causes)."""
        if spec.get("type") == "ExternalName" or spec.get("clusterIP") == "None":
            return {}, []
        causes = []
        old = list(old_spec.get("clusterIPs") or
                   ([old_spec["clusterIP"]] if old_spec.get("clusterIP") else []))
        asked = list(spec.get("clusterIPs") or
                     ([spec["clusterIP"]] if spec.get("clusterIP") else []))
        if spec.get("clusterIP") and asked and spec["clusterIP"] != asked[0]:
            causes.append(("spec.clusterIPs[0]", f'Invalid value: "{asked[0]}": must '
                           f"match clusterIP {spec['clusterIP']}"))
        if old and not asked:
            asked = old                                   # kept across updates
        elif old and asked[0] != old[0]:
            causes.append(("spec.clusterIPs[0]", f'Invalid value: ["{asked[0]}"]: '
                           "may not change once set"))
        policy = spec.get("ipFamilyPolicy") or "SingleStack"
        if policy not in POLICIES:
            causes.append(("spec.ipFamilyPolicy", f'Unsupported value: "{policy}": '
                           f"supported values: {', '.join(map(repr, POLICIES))}"))
            return {}, causes
        families = self._families(spec, asked, policy, causes)
        if causes:
            return {}, causes
        ips = []
        for i, family in enumerate(families):
            ip = asked[i] if i < len(asked) else next(
                (o for o in old if _family(o) == family), None) or self.free(family)
            if ip is None:
                causes.append(("spec.clusterIPs", f"failed to allocate a {family} IP: "
                               "range is full"))
            elif ipaddress.ip_address(ip) not in self.nets[family]:
                causes.append(("spec.clusterIPs", f'Invalid value: ["{ip}"]: failed to '
                               f"allocate IP {ip}: the provided IP ({ip}) is not in the "
                               f"valid range. The range of valid IPs is {self.nets[family]}"))
            elif self.ips.get(ip, owner) != owner:
                causes.append(("spec.clusterIPs", f'Invalid value: ["{ip}"]: failed to '
                               f"allocate IP {ip}: provided IP is already allocated"))
            ips.append(ip)
        if causes:
            return {}, causes
        spec.update(clusterIP=ips[0], clusterIPs=ips, ipFamilies=families,
                    ipFamilyPolicy=policy)
        return {ip: owner for ip in ips}, []

    def _families(self, spec, asked, policy, causes) -> List[str]:
        """The families the Service gets, in order; appends causes instead."""
        from_ips = [_family(ip) for ip in asked]
        for i, fam in enumerate(from_ips):
            if fam is None:
                causes.append((f"spec.clusterIPs[{i}]",
                               f'Invalid value: "{asked[i]}": must be a valid IP address'))
        families = list(spec.get("ipFamilies") or ()) or [f for f in from_ips if f]
        if from_ips and families[:len(from_ips)] != from_ips and not causes:
            causes.append(("spec.ipFamilies", "Invalid value: must match the families "
                           f"of clusterIPs {asked}"))
        if not families:
            families = [next(iter(self.nets))]
        for fam in families:
            if fam not in FAMILIES.values():
                causes.append(("spec.ipFamilies", f'Unsupported value: "{fam}": '
                               'supported values: "IPv4", "IPv6"'))
            elif fam not in self.nets:
                causes.append(("spec.ipFamilies", f'Invalid value: "{fam}": not configured '
                               "on this cluster"))
        if len(set(families)) != len(families) or len(families) > 2:
            causes.append(("spec.ipFamilies", f"Invalid value: {families}: at most one "
                           "of each family"))
        if causes:
            return families
        if policy == "SingleStack" and len(families) > 1:
            causes.append(("spec.ipFamilyPolicy", "Invalid value: \"SingleStack\": must be "
                           "RequireDualStack or PreferDualStack when multiple IP families "
                           "are specified"))
        elif policy != "SingleStack" and len(families) == 1:
            other = [f for f in self.nets if f != families[0]]
            if other:
                families.append(other[0])
            elif policy == "RequireDualStack":
                causes.append(("spec.ipFamilyPolicy", 'Invalid value: "RequireDualStack": '
                               "this cluster is not configured for dual-stack services"))
        return families
