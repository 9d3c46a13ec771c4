"""Random raw API objects - valid, odd and broken - for the fuzz and encoder
tests (seeded: the same seed gives the same objects)."""
from nsx_proxy import translate


ODD = [None, "", 0, -1, 65536, "80", [], {}, True, "x" * 300, 3.5]


def pick(rnd, good, bad=ODD, p_bad=0.15):
    return rnd.choice(bad) if rnd.random() < p_bad else rnd.choice(good)


def ip(rnd, net="10.96"):
    return f"{net}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"


def service(rnd, i):
    ports = []
    for k in range(rnd.choice([0, 1, 1, 2, 3])):
        ports.append({"name": pick(rnd, [f"p{k}", "http", "dns"]),
                      "protocol": pick(rnd, ["TCP", "UDP", "SCTP"], ["ICMP", "tcp", 7, None]),
                      "port": pick(rnd, [80, 53, 443, 8080, 1, 65535]),
                      "targetPort": pick(rnd, [8080, "http", "dns", 5353],
                                         [0, 70000, "bad name!", None, []]),
                      "nodePort": pick(rnd, [None, 30000 + i % 2000], [29999, 40000, "x"])})
    spec = {"type": pick(rnd, ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
                         ["Bogus", None, 5]),
            "clusterIP": pick(rnd, [ip(rnd), ip(rnd), "None"], ["300.1.1.1", "fd00::1", 42]),
            "ports": pick(rnd, [ports], [None, "ports", [None]])}
    if rnd.random() < 0.3:
        spec["externalIPs"] = pick(rnd, [[ip(rnd, "198.51")], [ip(rnd, "198.51"), "nope"]])
    if rnd.random() < 0.3:
        spec["sessionAffinity"] = pick(rnd, ["ClientIP", "None"], ["Sticky"])
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": pick(
            rnd, [1, 600, 65535, 65536, 86400], [0, 86401, "x", -1])}}
    for field, values in (("externalTrafficPolicy", ["Cluster", "Local"]),
                          ("internalTrafficPolicy", ["Cluster", "Local"]),
                          ("loadBalancerSourceRanges", [["203.0.113.0/24"]])):
        if rnd.random() < 0.2:
            spec[field] = pick(rnd, values, ["Everywhere", ["10.0.0.0/33"], 3])
    meta = {"namespace": pick(rnd, ["default", "team"], [None]), "name": f"s{i}",
            "resourceVersion": "1"}
    out = {"metadata": meta, "spec": spec}
    if rnd.random() < 0.1:
        out["status"] = {"loadBalancer": {"ingress": pick(rnd, [[{"ip": ip(rnd, "198.51")}]],
                                                          [[{"ip": "x"}], "x"])}}
    return out


def endpoint_slice(rnd, i, services):
    svc = rnd.choice(services)["metadata"]
    eps = []
    for _ in range(rnd.choice([0, 1, 3, 8])):
        eps.append({"addresses": pick(rnd, [[ip(rnd, "10.1")]], [[], ["fd00::2"], ["x"], None]),
                    "conditions": {"ready": pick(rnd, [True, False, None], ["yes"]),
                                   "serving": pick(rnd, [True, False, None]),
                                   "terminating": pick(rnd, [False, True, None])},
                    "nodeName": pick(rnd, ["node1", "node2", None], [7]),
                    "hints": pick(rnd, [None, {"forZones": [{"name": "zone-1"}]}],
                                  [{"forZones": "zone"}])})
    return {"metadata": {"namespace": svc.get("namespace") or "default",
                         "name": f"sl{i}", "resourceVersion": "1",
                         "labels": {translate.SERVICE_NAME_LABEL: svc["name"]}},
            "addressType": pick(rnd, ["IPv4"], ["IPv6", "FQDN", None]),
            "ports": pick(rnd, [[{"name": "http", "port": 8080, "protocol": "TCP"},
                                 {"name": "dns", "port": 5353, "protocol": "UDP"}]],
                          [[{"name": "http", "port": 0}], None, [{"port": "x"}]]),
            "endpoints": pick(rnd, [eps], [None, "eps"])}


def node(rnd, i):
    return {"metadata": {"name": f"node{i}", "resourceVersion": "1",
                         "labels": {"topology.kubernetes.io/zone": f"zone-{i}"}},
            "spec": {"podCIDR": pick(rnd, [f"10.1.{i}.0/24"], ["10.1.0.0/33", "x", None])},
            "status": {"addresses": pick(rnd, [[{"type": "InternalIP",
                                                  "address": f"192.168.100.{i}"}]],
                                         [[], [{"type": "InternalIP", "address": "x"}]])}}


def pod(rnd, i):
    return {"metadata": {"namespace": "default", "name": f"pod{i}", "resourceVersion": "1",
                         "annotations": {translate.FLOATING_IP_ANNOTATION: pick(
                             rnd, [ip(rnd, "198.51"), "198.51.100.77"], ["x", "fd00::9"])}},
            "spec": {"nodeName": pick(rnd, ["node1", "node2"], [None])},
            "status": {"podIP": pick(rnd, [ip(rnd, "10.1")], ["x", None])}}
