#!/usr/bin/env python3
"""Refuse address ranges that overlap a network this machine already routes.

    check-ranges.py CIDR...   exit 0 if none overlaps a route (other than the default route)
                              of any routing table; else print each clash and exit 1.

The real-node harness puts its node address, pod range and Service range on this machine only;
if one of them is also a real network here, traffic meant for a pod could leave the machine.
"""
import ipaddress
import json
import subprocess
import sys

wanted = [ipaddress.ip_network(arg, strict=False) for arg in sys.argv[1:]]
routes = json.loads(subprocess.run(["ip", "-4", "-json", "route", "show", "table", "all"],
                                   check=True, capture_output=True, text=True).stdout or "[]")
clashes = []
for route in routes:
    dst = route.get("dst", "")
    if dst in ("", "default") or route.get("type") in ("broadcast",):
        continue
    try:
        net = ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False)
    except ValueError:
        continue
    if net.is_loopback:
        continue
    for want in wanted:
        if net.overlaps(want):
            clashes.append(f"{want} overlaps the route {dst} dev {route.get('dev', '?')}")
for clash in clashes:
    print(clash, file=sys.stderr)
sys.exit(1 if clashes else 0)
