#!/usr/bin/python3
"""Generate cinder_reports.json.gz: what Cinder's own code makes of drivers' capability reports.

Usage (needs Cinder importable, e.g. Debian's python3-cinder, 2:21.3.1 when this was written):

    /usr/bin/python3 functions/store/testdata/cinder_reports.py | gzip -9n > functions/store/testdata/cinder_reports.json.gz

Each case is a set of backends, each with the raw report its driver sends (get_volume_stats():
backend-level keys and "pools"), and requests to place. For every backend the report goes
through the same steps as in Basalt:

1. What the Basalt agent adds in the driver's stead: volume_backend_name from the backend's
   configuration, and location_info "fake:host@backend:pool" in every pool that has none.
2. Cinder's volume manager, its own code: VolumeManager._report_driver_status merges
   extra_capabilities, sets allocated_capacity_gb (0: no volumes yet, like Basalt's empty
   ledger), cacheable for FC/iSCSI/NVMe-oF backends, filter_function and goodness_function.
3. Cinder's scheduler, its own code: HostManager.update_service_capabilities and
   get_all_backend_states (BackendState/PoolState.update_from_volume_capability build the
   pools), then FilterScheduler._get_weighted_candidates with the default filters
   (AvailabilityZoneFilter, CapacityFilter, CapabilitiesFilter) and weigher (CapacityWeigher).
   The services come from a stand-in for the database (objects.ServiceList.get_all), sorted by
   host as Basalt lists them.

Recorded: each pool's capabilities as the scheduler holds them (HostManager.get_pools, less the
timestamp), and for each request the ranking [pool, weight] (empty: no valid backend). Where
Cinder raises (the whole request fails), "raises" names the exception, "raising" the pools that
raise on their own, and "want" is Cinder's ranking of the other pools (null if it still raises).

Shapes: provisioned_capacity_gb is a non-negative number or missing, because Basalt's pool
listing raises it to the ledger's allocated capacity (store.Pools); pool_name is always a
string (Cinder fails every request on a pool without one; Basalt skips that pool).
"""
import copy
import datetime
import json
import logging
import random
import sys
from unittest import mock

from cinder import objects

objects.register_all()

from cinder import context as cinder_context  # noqa: E402
from cinder import version as cinder_version  # noqa: E402
from cinder.scheduler import filter_scheduler  # noqa: E402
from cinder.scheduler import host_manager  # noqa: E402
from cinder.scheduler import scheduler_options  # noqa: E402
from cinder.volume import manager as volume_manager  # noqa: E402
from oslo_config import cfg  # noqa: E402

CONF = cfg.CONF
CONF([], project="cinder")
logging.disable(logging.CRITICAL)  # Cinder logs every rejection
TIMESTAMP = datetime.datetime(2026, 1, 1)


# --- stand-ins for the driver, the database and the clock ---------------------------------
class Driver:
    """A driver whose get_volume_stats returns a fixed report."""
    initialized = True

    class configuration:
        config_group = "backend"

        @staticmethod
        def safe_get(key):
            return None

    def __init__(self, stats):
        self.stats = stats

    def get_volume_stats(self, refresh=False):
        return copy.deepcopy(self.stats)

    def get_filter_function(self):
        return None

    def get_goodness_function(self):
        return None


class Service(dict):
    """A cinder-volume service row: up, enabled, not clustered."""

    def __init__(self, host, zone):
        super().__init__(host=host, availability_zone=zone, cluster_name=None, binary="cinder-volume")
        self.host = host
        self.cluster_name = None
        self.is_up = True
        self.service_topic_queue = host
        self.availability_zone = zone


def manager_report(stats, extra):
    """What VolumeManager._report_driver_status sends to the scheduler."""
    m = object.__new__(volume_manager.VolumeManager)
    m.service_uuid = "00000000-0000-0000-0000-000000000000"
    m.driver = Driver(stats)
    m.extra_capabilities = copy.deepcopy(extra)
    m.stats = {"allocated_capacity_gb": 0, "pools": {}}
    sent = []
    m.update_service_capabilities = sent.append
    m._report_driver_status(None)
    return sent[0]


def agent_stats(b):
    """The driver's report with what the Basalt agent adds in the driver's stead."""
    stats = copy.deepcopy(b["stats"])
    stats["volume_backend_name"] = b["volume_backend_name"]
    name = "%s@%s" % (b["host"], b["backend"])
    for p in stats.get("pools") or []:
        p.setdefault("location_info", "fake:%s:%s" % (name, p["pool_name"]))
    return stats


def jsonable(v):
    return json.loads(json.dumps(v, default=str))


def run_case(case):
    backends = sorted(case["backends"], key=lambda b: "%s@%s" % (b["host"], b["backend"]))
    services = [Service("%s@%s" % (b["host"], b["backend"]), b["zone"]) for b in backends]
    out = {"pools": {}, "requests": []}
    with mock.patch.object(objects.ServiceList, "get_all", return_value=mock.Mock(objects=services)):
        hm = host_manager.HostManager()
        sched = object.__new__(filter_scheduler.FilterScheduler)
        sched.host_manager = hm
        sched.options = scheduler_options.SchedulerOptions()
        sched.max_attempts = sched._max_attempts()
        for b, svc in zip(backends, services):
            rep = manager_report(agent_stats(b), b.get("extra_capabilities", {}))
            hm.update_service_capabilities("volume", svc.host, rep, None, TIMESTAMP)
        hm.backend_state_map = {}  # build the map afresh, in service order
        ctx = cinder_context.get_admin_context()
        for p in hm.get_pools(ctx):
            caps = dict(p["capabilities"])
            caps.pop("timestamp", None)
            out["pools"][p["name"]] = jsonable(caps)
        all_pools = list(hm.get_all_backend_states(ctx))

        def place(req, pools):
            spec = {"volume_id": "v", "volume_type": {"extra_specs": dict(req["specs"])},
                    "volume_properties": {"size": req["size"], "availability_zone": req.get("zone") or None,
                                          "attach_status": "attached" if req.get("attached") else "detached"}}
            fp = {}
            if req.get("extend"):
                spec["operation"] = "extend_volume"
                spec["volume_properties"]["size"] = 10
                fp["new_size"] = 10 + req["size"]
            zones = [z for z in req["specs"].get("RESKEY:availability_zones", "").split(",") if z]
            if zones:
                spec["availability_zones"] = zones
            spec["resource_properties"] = dict(spec["volume_properties"])
            with mock.patch.object(hm, "get_all_backend_states", return_value=pools):
                ranked = sched._get_weighted_candidates(ctx, spec, fp)
            return [[w.obj.host, float(w.weight)] for w in ranked]

        for req in case["requests"]:
            rec = dict(req)
            try:
                rec["want"] = place(req, all_pools)
            except Exception as e:  # Cinder fails the whole request
                rec["raises"] = type(e).__name__
                raising = []
                for p in all_pools:
                    try:
                        place(req, [p])
                    except Exception:
                        raising.append(p.host)
                rec["raising"] = raising
                try:
                    rec["want"] = place(req, [p for p in all_pools if p.host not in raising])
                except Exception:
                    rec["want"] = None
            out["requests"].append(rec)
    return out


# --- report shapes real drivers send ---------------------------------------------------------
def lvm_pool(name, total, free, thin=True, **kw):
    """A pool as Cinder's LVM driver reports it (lvm.py _update_volume_stats)."""
    p = {"pool_name": name, "total_capacity_gb": total, "free_capacity_gb": free,
         "reserved_percentage": 0, "QoS_support": False, "provisioned_capacity_gb": round(total - free, 2),
         "max_over_subscription_ratio": "20.0", "thin_provisioning_support": thin,
         "thick_provisioning_support": not thin, "total_volumes": 3, "filter_function": None,
         "goodness_function": None, "multiattach": True, "backend_state": "up"}
    p.update(kw)
    return p


def lvm_backend(protocol, pools, **kw):
    s = {"vendor_name": "Open Source", "driver_version": "3.0.0", "storage_protocol": protocol,
         "pools": pools, "shared_targets": False, "sparse_copy_volume": True}
    s.update(kw)
    return s


def backend(host, name, zone, vbn, stats, **kw):
    b = {"host": host, "backend": name, "zone": zone, "volume_backend_name": vbn, "stats": stats}
    b.update(kw)
    return b


def req(size=1, specs=None, zone="", extend=False, attached=False):
    return {"size": size, "specs": specs or {}, "zone": zone, "extend": extend, "attached": attached}


CASES = [
    {"name": "LVM over iSCSI and iscsi: every variant matches either spelling",
     "backends": [
         backend("node1", "lvm1", "nova", "lvmdriver-1", lvm_backend("iSCSI", [lvm_pool("lvmdriver-1", 28.5, 28.4)])),
         backend("node2", "lvm2", "nova", "lvmdriver-2", lvm_backend("iscsi", [lvm_pool("lvmdriver-2", 100, 40, thin=False)])),
         backend("node3", "nfs", "nova", "nfs-1", lvm_backend("nfs", [lvm_pool("share1", 500, 250.5)])),
     ],
     "requests": [req(1), req(1, {"capabilities:storage_protocol": "<in> iSCSI"}),
                  req(1, {"capabilities:storage_protocol": "<in> iscsi"}),
                  req(1, {"storage_protocol": "iSCSI"}), req(1, {"storage_protocol": "iscsi"}),
                  req(1, {"storage_protocol": "<in> NFS"}), req(1, {"storage_protocol": "<or> nfs <or> iscsi"}),
                  req(1, {"storage_protocol": "s== iSCSI"}), req(1, {"cacheable": "<is> True"}),
                  req(30, {"provisioning:type": "thick"}), req(2, {"volume_backend_name": "lvmdriver-2"}),
                  req(1, {"multiattach": "<is> True", "capabilities:thin_provisioning_support": "<is> True"})]},
    {"name": "Ceph RBD: unknown and infinite capacities, string ratio, several pools",
     "backends": [
         backend("ceph", "rbd", "nova", "ceph", {
             "vendor_name": "Open Source", "driver_version": "1.2.0", "storage_protocol": "ceph",
             "replication_enabled": False, "pools": [
                 {"pool_name": "volumes", "total_capacity_gb": "unknown", "free_capacity_gb": "unknown",
                  "reserved_percentage": 0, "multiattach": True, "thin_provisioning_support": True,
                  "max_over_subscription_ratio": "20.0", "backend_state": "up"},
                 {"pool_name": "fast", "total_capacity_gb": 27.6, "free_capacity_gb": "infinite",
                  "reserved_percentage": 0, "multiattach": True, "thin_provisioning_support": True,
                  "provisioned_capacity_gb": 12, "backend_state": "up"},
                 {"pool_name": "reserved", "total_capacity_gb": "infinite", "free_capacity_gb": 10,
                  "reserved_percentage": 5, "thin_provisioning_support": True}]}),
         backend("node1", "lvm", "nova", "lvm", lvm_backend("iSCSI", [lvm_pool("lvm", 100, 60)])),
     ],
     "requests": [req(1), req(50), req(1, {"capabilities:replication_enabled": "<is> False"}),
                  req(1, {"storage_protocol": "ceph"}), req(1, {"multiattach": "<is> True"}),
                  req(5, {"provisioning:type": "thick"})]},
    {"name": "Legacy driver without pools: the backend is its own pool",
     "backends": [
         backend("old", "legacy", "nova", "legacy", {
             "vendor_name": "Acme", "driver_version": "0.9", "storage_protocol": "FC",
             "total_capacity_gb": 200, "free_capacity_gb": 150, "reserved_percentage": 10,
             "QoS_support": True, "thin_provisioning_support": False, "thick_provisioning_support": True}),
         backend("node1", "lvm", "nova", "lvm", lvm_backend("iSCSI", [lvm_pool("lvm", 100, 90)])),
     ],
     "requests": [req(1), req(100), req(1, {"capabilities:storage_protocol": "<in> fibre_channel"}),
                  req(1, {"QoS_support": "<is> True"}), req(1, {"storage_protocol": "<or> fc <or> FC"}),
                  req(1, {"cacheable": "<is> True"})]},
    {"name": "Backend-level keys other than the four never reach the pools",
     "backends": [
         backend("array", "b", "nova", "array", {
             "vendor_name": "Acme", "driver_version": "2.1", "storage_protocol": "iSCSI",
             "online_extend_support": False, "QoS_support": True, "multiattach": True,
             "thin_provisioning_support": True, "replication_enabled": True, "custom": "gold",
             "pools": [{"pool_name": "p1", "total_capacity_gb": 1000, "free_capacity_gb": 900},
                       {"pool_name": "p2", "total_capacity_gb": 1000, "free_capacity_gb": 500,
                        "online_extend_support": False, "multiattach": False, "QoS_support": True}]}),
     ],
     "requests": [req(1), req(5, extend=True, attached=True), req(5, extend=True, attached=False),
                  req(1, {"QoS_support": "<is> True"}), req(1, {"multiattach": "<is> True"}),
                  req(1, {"multiattach": "<is> False"}), req(1, {"capabilities:replication_enabled": "<is> True"}),
                  req(1, {"custom": "gold"}), req(1, {"capabilities:thin_provisioning_support": "<is> False"}),
                  req(1, {"vendor_name": "Acme"}), req(1, {"driver_version": ">= 2"})]},
    {"name": "Missing keys stay missing: no zero, no false in their place",
     "backends": [
         backend("min", "b", "nova", "minimal", {
             "pools": [{"pool_name": "bare", "total_capacity_gb": 100, "free_capacity_gb": 80},
                       {"pool_name": "nofree", "total_capacity_gb": 100},
                       {"pool_name": "nototal", "free_capacity_gb": 100},
                       {"pool_name": "withthin", "total_capacity_gb": 100, "free_capacity_gb": 80,
                        "thin_provisioning_support": True, "provisioned_capacity_gb": 150}]}),
     ],
     "requests": [req(1), req(0), req(1, {"multiattach": "<is> False"}), req(1, {"multiattach": "<is> True"}),
                  req(1, {"capabilities:thin_provisioning_support": "<is> False"}),
                  req(1, {"storage_protocol": "<is> False"}), req(1, {"vendor_name": "s!= x"}),
                  req(1, {"capabilities:total_volumes": "== 0"}), req(1, {"QoS_support": "<is> False"}),
                  req(90)]},
    {"name": "String numbers and strings where booleans belong",
     "backends": [
         backend("str", "b", "nova", "strings", {
             "vendor_name": "Acme", "driver_version": "1", "storage_protocol": "iSCSI",
             "pools": [{"pool_name": "s1", "total_capacity_gb": "500", "free_capacity_gb": 250.5,
                        "reserved_percentage": "10", "max_over_subscription_ratio": "1.5",
                        "thin_provisioning_support": "True", "multiattach": "True", "QoS_support": "False"},
                       {"pool_name": "s2", "total_capacity_gb": "200.5", "free_capacity_gb": 200,
                        "thin_provisioning_support": "False", "max_over_subscription_ratio": "10",
                        "provisioned_capacity_gb": 0},
                       {"pool_name": "s3", "total_capacity_gb": 300, "free_capacity_gb": 100,
                        "thin_provisioning_support": "", "max_over_subscription_ratio": "auto",
                        "provisioned_capacity_gb": 600}]}),
     ],
     "requests": [req(1), req(100), req(300), req(1, {"multiattach": "<is> True"}),
                  req(1, {"QoS_support": "<is> False"}), req(1, {"capabilities:thin_provisioning_support": "<is> True"}),
                  req(1, {"capabilities:total_capacity_gb": ">= 300"}), req(50, {"provisioning:type": "thick"})]},
    {"name": "Nulls",
     "backends": [
         backend("nul", "b", "nova", "nulls", {
             "vendor_name": None, "driver_version": None, "storage_protocol": None,
             "pools": [{"pool_name": "n1", "total_capacity_gb": 100, "free_capacity_gb": 50,
                        "max_over_subscription_ratio": None, "multiattach": None, "thin_provisioning_support": True,
                        "vendor_name": None, "storage_protocol": ""},
                       {"pool_name": "n2", "total_capacity_gb": 100, "free_capacity_gb": None},
                       {"pool_name": "n3", "total_capacity_gb": None, "free_capacity_gb": 100},
                       {"pool_name": "n4", "total_capacity_gb": 100, "free_capacity_gb": 100,
                        "reserved_percentage": None}]}),
         backend("ok", "b", "nova", "nulls", lvm_backend("iSCSI", [lvm_pool("fine", 50, 10)])),
     ],
     "requests": [req(1), req(1, {"multiattach": "<is> False"}), req(1, {"storage_protocol": "<in> iSCSI"}),
                  req(1, {"vendor_name": "s!= Acme"}), req(20)]},
    {"name": "Pool-level storage_protocol wins; NVMe-oF and FC variants",
     "backends": [
         backend("mixed", "b", "nova", "mixed", {
             "vendor_name": "Acme", "driver_version": "4", "storage_protocol": "NVMeOF",
             "pools": [{"pool_name": "nvme", "total_capacity_gb": 100, "free_capacity_gb": 100},
                       {"pool_name": "fc", "total_capacity_gb": 100, "free_capacity_gb": 90, "storage_protocol": "fc"},
                       {"pool_name": "empty", "total_capacity_gb": 100, "free_capacity_gb": 80, "storage_protocol": ""},
                       {"pool_name": "rbd", "total_capacity_gb": 100, "free_capacity_gb": 70, "storage_protocol": "RBD"}]}),
         backend("tcp", "b", "nova", "tcp", lvm_backend("nvmeof", [lvm_pool("t", 100, 20)])),
     ],
     "requests": [req(1), req(1, {"storage_protocol": "<in> NVMe-oF"}), req(1, {"storage_protocol": "nvmeof"}),
                  req(1, {"capabilities:storage_protocol": "<in> FC"}),
                  req(1, {"storage_protocol": "<or> fibre_channel <or> RBD"}),
                  req(1, {"storage_protocol": "<in> RB"}), req(1, {"cacheable": "<is> True"})]},
    {"name": "Zones and several hosts",
     "backends": [
         backend("h1", "b1", "az1", "lvm", lvm_backend("iSCSI", [lvm_pool("p", 100, 90), lvm_pool("q", 100, 10)])),
         backend("h2", "b1", "az2", "lvm", lvm_backend("iSCSI", [lvm_pool("p", 100, 50)])),
         backend("h3", "b1", "nova", "lvm", lvm_backend("iSCSI", [lvm_pool("p", 100, 70)])),
     ],
     "requests": [req(1), req(1, zone="az1"), req(1, zone="az2"), req(1, zone="nowhere"),
                  req(1, {"RESKEY:availability_zones": "az2,nova"}), req(1, {"RESKEY:availability_zones": "az1"}, zone="az2"),
                  req(60, zone="az1")]},
    {"name": "extra_capabilities merged into every pool; duplicate pool names",
     "backends": [
         backend("x", "b", "nova", "extra", lvm_backend("iSCSI", [
             lvm_pool("a", 100, 90, multiattach=False), lvm_pool("b", 100, 40), lvm_pool("a", 100, 30)]),
             extra_capabilities={"multiattach": True, "tier": "gold", "cacheable": False}),
         backend("y", "b", "nova", "extra", lvm_backend("iSCSI", [lvm_pool("c", 100, 95)]),
                 extra_capabilities={"tier": "silver"}),
     ],
     "requests": [req(1), req(1, {"tier": "gold"}), req(1, {"capabilities:tier": "<or> silver <or> gold"}),
                  req(1, {"multiattach": "<is> True"}), req(1, {"cacheable": "<is> True"})]},
]


# --- seeded random reports -------------------------------------------------------------------
R = random.Random(20260822)


def pick(*xs):
    return R.choice(xs)


def number(lo, hi):
    return pick(R.randint(lo, hi), round(R.uniform(lo, hi), R.randint(0, 2)))


MISSING = object()
PROTOCOLS = ["iSCSI", "iscsi", "FC", "fc", "fibre_channel", "NFS", "nfs", "NVMe-oF", "NVMeOF", "nvmeof",
             "ceph", "RBD", "iSER", "", None]
POOL_KEYS = {
    "total_capacity_gb": lambda: None if R.random() < 0.03 else pick(
        number(1, 2000), number(1, 2000), "infinite", "unknown", str(R.randint(1, 900)), 0),
    "free_capacity_gb": lambda: pick(number(0, 2000), number(0, 500), "infinite", "unknown", None, 0),
    "provisioned_capacity_gb": lambda: pick(number(0, 4000), 0),
    "reserved_percentage": lambda: None if R.random() < 0.03 else pick(0, 0, 5, 10, "10"),
    "max_over_subscription_ratio": lambda: pick(1, 1.5, 20, "20.0", "auto", 0, None, "2"),
    "thin_provisioning_support": lambda: pick(True, False, "True", "False", "", None),
    "thick_provisioning_support": lambda: pick(True, False),
    "multiattach": lambda: pick(True, False, "True", None),
    "QoS_support": lambda: pick(True, False, "False"),
    "online_extend_support": lambda: pick(True, False, "False"),
    "storage_protocol": lambda: R.choice(PROTOCOLS),
    "vendor_name": lambda: pick("Open Source", "Acme", "", None),
    "volume_backend_name": lambda: pick("lvm", "other", "", None),
    "replication_enabled": lambda: pick(True, False),
    "allocated_capacity_gb": lambda: number(0, 100),
}
SPECS = [
    ("capabilities:storage_protocol", ["<in> iSCSI", "<in> iscsi", "<in> FC", "<in> fc", "<in> NFS", "<in> NVMe-oF",
                                       "<in> nvmeof", "iSCSI", "<or> iscsi <or> RBD", "s== FC", "ceph"]),
    ("storage_protocol", ["<in> iSCSI", "nfs", "<or> FC <or> NVMeOF"]),
    ("multiattach", ["<is> True", "<is> False"]),
    ("capabilities:thin_provisioning_support", ["<is> True", "<is> False"]),
    ("QoS_support", ["<is> True", "<is> False"]),
    ("capabilities:replication_enabled", ["<is> True", "<is> False"]),
    ("volume_backend_name", ["lvm", "other", "rand"]),
    ("vendor_name", ["Open Source", "s!= Acme"]),
    ("cacheable", ["<is> True", "<is> False"]),
    ("provisioning:type", ["thick", "thin"]),
    ("capabilities:total_capacity_gb", [">= 100", "<= 500"]),
]


def random_pool(name):
    p = {"pool_name": name}
    for k, gen in POOL_KEYS.items():
        if R.random() < (0.85 if k in ("total_capacity_gb", "free_capacity_gb") else 0.45):
            p[k] = gen()
    return p


def random_case(i):
    backends = []
    for h in range(R.randint(1, 3)):
        for b in range(R.randint(1, 2)):
            stats = {}
            for k in ("vendor_name", "storage_protocol", "online_extend_support", "multiattach", "QoS_support",
                      "thin_provisioning_support", "replication_enabled"):
                if R.random() < (0.8 if k in ("vendor_name", "storage_protocol") else 0.3):
                    stats[k] = POOL_KEYS[k]()
            if R.random() < 0.7:
                stats["driver_version"] = pick("1.0", "2.3.1", None)
            if R.random() < 0.1:  # a legacy driver: the backend is its pool
                stats.update(random_pool("ignored"))
                del stats["pool_name"]
            else:
                stats["pools"] = [random_pool("p%d" % j) for j in range(R.randint(1, 4))]
            extra = {}
            if R.random() < 0.15:
                extra = pick({"multiattach": True}, {"tier": "gold"}, {"storage_protocol": "iscsi"})
            backends.append(backend("host%d" % h, "b%d" % b, pick("nova", "nova", "az1"), pick("lvm", "other", "rand"),
                                    stats, extra_capabilities=extra))
    requests = []
    for _ in range(R.randint(3, 6)):
        specs = {}
        for _ in range(R.randint(0, 2)):
            k, vals = R.choice(SPECS)
            specs[k] = R.choice(vals)
        extend = R.random() < 0.15
        requests.append(req(pick(1, 1, 10, 100, 1000), specs, zone=pick("", "", "", "nova", "az1"),
                            extend=extend, attached=extend and R.random() < 0.7))
    return {"name": "random %d" % i, "backends": backends, "requests": requests}


CASES += [random_case(i) for i in range(60)]

out = {"cinder": cinder_version.version_string(), "cases": []}
for case in CASES:
    rec = copy.deepcopy(case)
    rec.update(run_case(case))
    out["cases"].append(rec)
json.dump(out, sys.stdout, sort_keys=True, indent=1)
sys.stdout.write("\n")
