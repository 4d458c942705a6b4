#!/usr/bin/env python3
"""Generate cinder_cases.json.gz: scheduler decisions made by Cinder's own code.

Usage: python3 testdata/cindergen.py CINDER_CHECKOUT [SCALE] | gzip -9n > testdata/cinder_cases.json.gz

It loads the scheduler modules of a Cinder checkout (read for commit ab09bc39dbcd) with the
few OpenStack libraries they import replaced by minimal stand-ins (logging, config, stevedore
and oslo.utils' bool_from_string), runs CapacityFilter, CapabilitiesFilter,
AvailabilityZoneFilter and the capacity weighers on seeded random pools, and records what
Cinder decided, or that it raised. TestCinderGolden replays every case.
"""
import importlib
import json
import os
import random
import sys
import types

SRC = sys.argv[1]
SCALE = int(sys.argv[2]) if len(sys.argv) > 2 else 1  # more cases, for a local differential run

# --- stand-ins for the libraries the scheduler modules import ------------------------------
class _Log:
    def __getattr__(self, name):
        return lambda *a, **k: None

oslo_log = types.ModuleType("oslo_log")
oslo_log.log = types.ModuleType("oslo_log.log")
oslo_log.log.getLogger = lambda name=None: _Log()
sys.modules["oslo_log"] = oslo_log
sys.modules["oslo_log.log"] = oslo_log.log

class _Conf:
    def __init__(self):
        self.__dict__["_v"] = {}
    def register_opts(self, opts):
        for o in opts:
            self._v.setdefault(o.name, o.default)
    def import_opt(self, *a, **k):
        pass
    def __getattr__(self, name):
        return self._v[name]
    def __setattr__(self, name, value):
        self._v[name] = value

class _Opt:
    def __init__(self, name, default=None, **k):
        self.name, self.default = name, default

cfg = types.ModuleType("oslo_config.cfg")
cfg.CONF = _Conf()
cfg.FloatOpt = cfg.StrOpt = cfg.ListOpt = cfg.IntOpt = cfg.BoolOpt = _Opt
oslo_config = types.ModuleType("oslo_config")
oslo_config.cfg = cfg
sys.modules["oslo_config"] = oslo_config
sys.modules["oslo_config.cfg"] = cfg

def bool_from_string(subject, strict=False, default=False):
    """Stand-in for oslo_utils.strutils.bool_from_string, as its documentation describes it:
    a bool is itself; anything else, as a trimmed lower-case string, is True for
    1/t/true/on/y/yes, False for 0/f/false/off/n/no, else the default (strict raises)."""
    if isinstance(subject, bool):
        return subject
    word = str(subject).strip().lower()
    if word in {"1", "t", "true", "on", "y", "yes"}:
        return True
    if word in {"0", "f", "false", "off", "n", "no"}:
        return False
    if strict:
        raise ValueError(subject)
    return default

strutils = types.ModuleType("oslo_utils.strutils")
strutils.bool_from_string = bool_from_string
oslo_utils = types.ModuleType("oslo_utils")
oslo_utils.strutils = strutils
sys.modules["oslo_utils"] = oslo_utils
sys.modules["oslo_utils.strutils"] = strutils

stevedore = types.ModuleType("stevedore")
stevedore.extension = types.ModuleType("stevedore.extension")
stevedore.extension.ExtensionManager = lambda *a, **k: None
sys.modules["stevedore"] = stevedore
sys.modules["stevedore.extension"] = stevedore.extension

fields = types.ModuleType("cinder.objects.fields")
fields.VolumeAttachStatus = types.SimpleNamespace(DETACHED="detached", ATTACHED="attached")

# --- Cinder's own scheduler modules, loaded from the checkout ------------------------------
def load(name, path=None):
    path = path or os.path.join(SRC, *name.split(".")) + ".py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod

for pkg in ("cinder", "cinder.scheduler", "cinder.objects"):
    m = types.ModuleType(pkg)
    m.__path__ = []
    sys.modules[pkg] = m
sys.modules["cinder.objects.fields"] = fields
base_handler = load("cinder.scheduler.base_handler")
base_filter = load("cinder.scheduler.base_filter")
base_weight = load("cinder.scheduler.base_weight")
sched_utils = load("cinder.scheduler.sched_utils")
filters = load("cinder.scheduler.filters", os.path.join(SRC, "cinder/scheduler/filters/__init__.py"))
weights = load("cinder.scheduler.weights", os.path.join(SRC, "cinder/scheduler/weights/__init__.py"))
load("cinder.scheduler.filters.extra_specs_ops")
capacity_filter = load("cinder.scheduler.filters.capacity_filter")
capabilities_filter = load("cinder.scheduler.filters.capabilities_filter")
az_filter = load("cinder.scheduler.filters.availability_zone_filter")
capacity_weights = load("cinder.scheduler.weights.capacity")
CONF = cfg.CONF
CONF.register_opts([_Opt("max_over_subscription_ratio", "20.0")])

# --- pool state, as PoolState.update_from_volume_capability builds it ----------------------
def pool_state(name, zone, cap):
    s = types.SimpleNamespace()
    s.host = s.backend_id = name
    s.cluster_name = None
    s.capabilities = cap
    s.service = {"availability_zone": zone}
    s.total_capacity_gb = cap.get("total_capacity_gb", 0)
    s.free_capacity_gb = cap.get("free_capacity_gb", 0)
    s.allocated_capacity_gb = cap.get("allocated_capacity_gb", 0)
    s.reserved_percentage = cap.get("reserved_percentage", 0)
    s.provisioned_capacity_gb = cap.get("provisioned_capacity_gb", s.allocated_capacity_gb)
    s.thin_provisioning_support = cap.get("thin_provisioning_support", False)
    s.thick_provisioning_support = cap.get("thick_provisioning_support", False)
    s.max_over_subscription_ratio = sched_utils.calculate_max_over_subscription_ratio(
        cap, CONF.max_over_subscription_ratio)
    return s

def properties(size, extend, specs, zone=None, zones=None, attached=False):
    vt = {"extra_specs": specs}
    fp = {"request_spec": {"volume_id": "v", "volume_properties": {
        "attach_status": "attached" if attached else "detached"}},
        "volume_type": vt, "resource_type": vt, "size": size}
    if extend:
        fp["size"], fp["new_size"] = 10, 10 + size
        fp["request_spec"]["operation"] = "extend_volume"
    if zones:
        fp["request_spec"]["availability_zones"] = zones
    if zone:
        fp["request_spec"]["resource_properties"] = {"availability_zone": zone}
    return fp

def outcome(fn):
    try:
        return fn()
    except Exception as e:  # Cinder fails the whole request
        return "raises " + type(e).__name__

# --- random reports ------------------------------------------------------------------------
R = random.Random(20260821 + SCALE - 1)

def pick(*xs):
    return R.choice(xs)

def number(lo, hi):
    return pick(R.randint(lo, hi), round(R.uniform(lo, hi), R.randint(0, 4)))

def capacity_report():
    total = pick(number(0, 2000), number(0, 2000), number(0, 2000), number(0, 3), 0, -5,
                 "infinite", "unknown", str(R.randint(1, 500)), None, "MISSING")
    free = pick(number(0, 2000), number(0, 2000), number(0, 50), 0, "infinite", "unknown",
                None, "MISSING")
    cap = {}
    for k, v in (("total_capacity_gb", total), ("free_capacity_gb", free)):
        if v != "MISSING":
            cap[k] = v
    if R.random() < 0.8:
        cap["allocated_capacity_gb"] = number(0, 4000)
    if R.random() < 0.7:
        cap["provisioned_capacity_gb"] = pick(number(0, 40000), number(0, 2000), 0)
    if R.random() < 0.6:
        cap["reserved_percentage"] = pick(0, 0, 5, 10, 33, 100, "10", 2.5)
    if R.random() < 0.85:
        cap["thin_provisioning_support"] = pick(True, True, False, "False", "True", "", 1, 0)
    if R.random() < 0.7:
        cap["max_over_subscription_ratio"] = pick(
            20, 20.0, 1, 1.5, "1.5", "20.0", 0, "0", None, "auto", 0.5, 3, "10", True)
    return cap

PROTOCOLS = [["iSCSI", "iscsi"], ["FC", "fibre_channel", "fc"], "RBD", ["NVMe-oF", "NVMeOF", "nvmeof"], None]
VALUES = [True, False, "True", "False", "true", "<is> True", 1, 0, 1.5, 2, 10, 100, "10", "2.0",
          "abc", "Open Source", "lvmbackend", "lvm", "", None, [1, 2], ["a", "b"], {"x": 1},
          "1.0", "yes", " on ", "x y"]
SPEC_KEYS = ["volume_backend_name", "capabilities:storage_protocol", "multiattach",
             "capabilities:thin_provisioning_support", "QoS_support", "vendor:thing",
             "capabilities:nested:key", "driver_version", "capabilities:replication",
             "custom", "RESKEY:availability_zones", "provisioning:type"]
OPERANDS = ["True", "False", "true", "1", "0", "10", "2", "1.5", "abc", "lvmbackend", "lvm",
            "iSCSI", "iscsi", "FC", "Open", "Open Source", "x", "nan", "inf", "-1", "1e3", "2.0"]
OPERATORS = ["", "", "=", "==", "!=", ">=", "<=", "s==", "s!=", "s<", "s<=", "s>", "s>=",
             "<in>", "<is>", "<or>"]

def spec_value():
    op = R.choice(OPERATORS)
    if op == "<or>":
        n = R.randint(0, 3)
        words = []
        for i in range(n):
            words += ([R.choice(["<or>", "<or>", R.choice(OPERANDS)])] if i else []) + [R.choice(OPERANDS)]
        return " ".join(["<or>"] + words)
    if op == "":
        return R.choice(OPERANDS + ["", "  ", "Open Source", "<is>"])
    return " ".join([op] + [R.choice(OPERANDS) for _ in range(R.randint(0, 2))])

def capabilities_report():
    cap = {"volume_backend_name": pick("lvmbackend", "lvm", None, "LVM"),
           "storage_protocol": R.choice(PROTOCOLS)}
    for k in ("multiattach", "thin_provisioning_support", "QoS_support", "driver_version",
              "replication", "custom", "online_extend_support"):
        if R.random() < 0.6:
            cap[k] = R.choice(VALUES)
    if R.random() < 0.4:
        cap["nested"] = pick({"key": R.choice(VALUES)}, {"other": 1}, "flat", [1])
    return cap

def extra_specs():
    specs = {}
    for _ in range(R.randint(0, 3)):
        specs[R.choice(SPEC_KEYS)] = spec_value()
    return specs

cases = {"capacity": [], "capabilities": [], "place": [], "round": []}

for i in range(2000 * SCALE):
    cap = capacity_report()
    size = pick(0, 1, 1, 5, 10, 100, 500, 2000)
    extend = R.random() < 0.2
    thick = R.random() < 0.3
    auto = R.random() < 0.15
    CONF.max_over_subscription_ratio = "auto" if auto else "20.0"
    specs = {"provisioning:type": "thick"} if thick else pick({}, {"provisioning:type": "thin"})
    def run():
        st = pool_state("h@b#p", "nova", cap)
        return capacity_filter.CapacityFilter().backend_passes(st, properties(size, extend, specs))
    cases["capacity"].append({"caps": cap, "size": size, "extend": extend, "thick": thick,
                              "auto": auto, "want": outcome(run)})

for i in range(2000 * SCALE):
    cap = capabilities_report()
    specs = extra_specs()
    extend = R.random() < 0.15
    attached = R.random() < 0.5
    def run():
        st = pool_state("h@b#p", "nova", cap)
        return capabilities_filter.CapabilitiesFilter().backend_passes(
            st, properties(1, extend, specs, attached=attached))
    cases["capabilities"].append({"caps": cap, "specs": specs, "extend": extend,
                                  "attached": attached, "want": outcome(run)})

WEIGHERS = {"CapacityWeigher": capacity_weights.CapacityWeigher,
            "AllocatedCapacityWeigher": capacity_weights.AllocatedCapacityWeigher}

def well_formed_report():
    inf = R.random() < 0.15
    cap = {"total_capacity_gb": pick(number(1, 5000), "infinite", "unknown") if inf else number(1, 5000),
           "free_capacity_gb": pick(number(0, 5000), "infinite", "unknown") if inf else number(0, 5000),
           "allocated_capacity_gb": pick(number(0, 3000), 0),
           "reserved_percentage": pick(0, 0, 5, 10),
           "thin_provisioning_support": pick(True, False),
           "storage_protocol": R.choice(PROTOCOLS[:3]),
           "volume_backend_name": pick("lvmbackend", "lvmbackend", "other")}
    if R.random() < 0.6:
        cap["provisioned_capacity_gb"] = pick(number(0, 20000), number(0, 3000))
    if R.random() < 0.5:
        cap["max_over_subscription_ratio"] = pick(1, 1.5, 10, 20, "auto", "5.0")
    return cap

for i in range(500 * SCALE):
    n = R.randint(2, 8)
    pools = []
    for j in range(n):
        pools.append({"name": "host%d@backend#pool%d" % (j % 3, j),
                      "zone": pick("nova", "az1", "az2"), "caps": well_formed_report()})
        if j and R.random() < 0.2:  # exact ties
            pools[-1]["caps"] = dict(pools[R.randrange(j)]["caps"])
    size = pick(1, 10, 100, 1000, 1, 10, 1)
    thick = R.random() < 0.3
    specs = {"provisioning:type": "thick"} if thick else {}
    if R.random() < 0.5:
        specs["volume_backend_name"] = "lvmbackend"
    if R.random() < 0.2:
        specs["capabilities:storage_protocol"] = pick("<in> iSCSI", "FC", "<or> RBD <or> FC")
    zones = pick(None, None, None, None, ["az1"], ["az1", "az2"])
    zone = pick(None, None, None, None, "nova", "az2")
    if zones:
        specs["RESKEY:availability_zones"] = ",".join(zones)
    weighers = pick(["CapacityWeigher"], ["CapacityWeigher"], ["AllocatedCapacityWeigher"],
                    ["CapacityWeigher", "AllocatedCapacityWeigher"])
    mult = {"CapacityWeigher": pick(1.0, 1.0, -1.0, 2.5, 0.0, -0.5),
            "AllocatedCapacityWeigher": pick(-1.0, 1.0)}
    auto = R.random() < 0.1
    CONF.max_over_subscription_ratio = "auto" if auto else "20.0"
    CONF.capacity_weight_multiplier = mult["CapacityWeigher"]
    CONF.allocated_capacity_weight_multiplier = mult["AllocatedCapacityWeigher"]
    def run():
        states = [pool_state(p["name"], p["zone"], p["caps"]) for p in pools]
        fp = properties(size, False, specs, zone=zone, zones=zones)
        for f in (az_filter.AvailabilityZoneFilter, capacity_filter.CapacityFilter,
                  capabilities_filter.CapabilitiesFilter):
            states = list(f().filter_all(states, fp))
        if not states:
            return []
        h = object.__new__(weights.OrderedHostWeightHandler)
        ranked = h.get_weighed_objects([WEIGHERS[w] for w in weighers], states, fp)
        return [[w.obj.host, float(w.weight)] for w in ranked]
    cases["place"].append({"pools": pools, "size": size, "specs": specs, "zone": zone or "",
                           "weighers": weighers, "multipliers": {w: mult[w] for w in weighers},
                           "auto": auto, "want": outcome(run)})

for i in range(1000 * SCALE):
    x = pick(R.uniform(-1000, 1000), R.randint(-100000, 100000) / 1000.0,
             R.randint(-100000, 100000) / 8.0, R.uniform(0, 1e12), R.uniform(0, 2),
             R.randint(0, 10**6) / 200.0 + 0.005)
    cases["round"].append([x, round(x, 2)])

json.dump(cases, sys.stdout, sort_keys=True, separators=(",", ":"))
sys.stdout.write("\n")
