"""PNG charts of a benchmark run (matplotlib: the ``bench`` extra only).

* ``cold-sync.png``: cold sync against the number of services, ours and the
  ``ovs-ofctl bundle`` floor;
* ``rss.png``: the controller's RSS against the number of services;
* ``connections.png``: new connections/s through a VIP against the number of
  services, for OVS (this proxy), kube-proxy's iptables and nftables modes.
"""
import os


def write(core_rows, dataplane_rows, out_dir):
    """Write the charts into ``out_dir``; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")                     # no display: files only
    from matplotlib import pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    paths = []

    def save(fig, ax, name, ylabel):
        ax.set_xscale("log")
        ax.set_xlabel("services")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        path = os.path.join(out_dir, name)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)

    sizes = [r[0] for r in core_rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(sizes, [r[2] for r in core_rows], "o-", label="nsx-proxy cold sync")
    ax.plot(sizes, [r[3] for r in core_rows], "s--", label="ovs-ofctl bundle (floor)")
    ax.set_yscale("log")
    save(fig, ax, "cold-sync.png", "seconds")

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(sizes, [r[7] for r in core_rows], "o-", label="controller RSS")
    save(fig, ax, "rss.png", "MB")

    sizes = sorted(dataplane_rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    for case, style in (("ovs vip", "o-"), ("iptables vip", "s--"), ("nftables vip", "^-.")):
        ax.plot(sizes, [dataplane_rows[n][case]["cps"] for n in sizes], style,
                label=case.replace(" vip", "").replace("ovs", "OVS (nsx-proxy)"))
    save(fig, ax, "connections.png", "new connections/s through a VIP")
    return paths
