#!/usr/bin/python3
"""Checks packaging/kubernetes/*.yaml: they parse, hold the objects
docs/OPERATIONS.md ("Kubernetes") describes, and agree with each other and
with `tallyd --help`: every flag the container passes exists (or is in the
allowlist below, with the branch that adds it), every port a flag binds is a
containerPort, the Services target named ports that exist with the right
protocol, the probes hit /healthz (liveness) and /readyz (readiness) on the
--http port, the
keyring Secret is mounted where --keyring points, the rules ConfigMap where
--rules points, the state volume at --state-dir, and --join is the headless
Service by DNS.

usage: kubernetes_test.py TALLYD MANIFEST_DIR
Uses Debian's python3-yaml (/usr/bin/python3)."""
import glob
import os
import re
import subprocess
import sys

import yaml

# Flags other branches add; remove an entry once `tallyd --help` lists it.
ALLOWLIST = {}

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


def port_of(value):
    return int(value.rsplit(":", 1)[1])


def main():
    tallyd, manifest_dir = sys.argv[1], sys.argv[2]
    help_text = subprocess.run([tallyd, "--help"], check=True, capture_output=True,
                               text=True).stdout
    known = set(re.findall(r"--[a-z][a-z0-9-]*", help_text))

    docs = []
    for path in sorted(glob.glob(os.path.join(manifest_dir, "*.yaml"))):
        with open(path) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in docs:
        check("apiVersion" in d and "kind" in d and "name" in d.get("metadata", {}),
              f"object without apiVersion/kind/name: {d}")
        by_kind.setdefault(d["kind"], []).append(d)
    for kind in ("StatefulSet", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"):
        check(kind in by_kind, f"no {kind}")
    if failures:
        return

    sts = by_kind["StatefulSet"][0]
    pod = sts["spec"]["template"]["spec"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    check(sts["spec"]["selector"]["matchLabels"].items() <= labels.items(),
          "StatefulSet selector does not match its pod labels")
    container = next(c for c in pod["containers"] if c["name"] == "tallyd")

    flags = {}
    for arg in container["args"]:
        check(arg.startswith("--") and "=" in arg, f"arg not --flag=value: {arg}")
        name, value = arg.split("=", 1)
        flags[name] = value
        check(name in known or name in ALLOWLIST,
              f"{name} is not a tallyd flag (tallyd --help) and not allowlisted")
    for name in ("--udp", "--gossip", "--advertise", "--http", "--grpc", "--join",
                 "--keyring", "--rules",
                 "--state-dir", "--node-id"):
        check(name in flags, f"the container does not pass {name}")
        flags.setdefault(name, ":0")
    for name in ALLOWLIST:
        check(name not in known, f"{name} is in tallyd --help now: drop it from ALLOWLIST")

    ports = {p["name"]: p for p in container["ports"]}
    by_number = {(p["containerPort"], p.get("protocol", "TCP")) for p in ports.values()}
    check((port_of(flags["--udp"]), "UDP") in by_number, "--udp port is no UDP containerPort")
    gossip = port_of(flags["--gossip"])
    check((gossip, "UDP") in by_number and (gossip, "TCP") in by_number,
          "--gossip port needs both a UDP and a TCP containerPort")
    check(port_of(flags["--advertise"]) == gossip, "--advertise port != --gossip port")
    http = port_of(flags["--http"])
    check((http, "TCP") in by_number, "--http port is no TCP containerPort")
    check((port_of(flags["--grpc"]), "TCP") in by_number,
          "--grpc port is no TCP containerPort")

    # Probes on the HTTP port, by name or number: liveness on /healthz (the
    # process serves), readiness on /readyz (owning keys, joined); both are
    # served by the HTTP door (daemon/rls/http_routes.h).
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path, f"{probe} path should be {path}")
        p = get.get("port")
        check(p == http or (p in ports and ports[p]["containerPort"] == http),
              f"{probe} port {p} is not the --http port")

    # Services: headless peers service named by --join dns: and serviceName.
    services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
    join = flags["--join"]
    check(join.startswith("dns:"), "--join should be dns:SERVICE")
    peers = services.get(join[4:].split(":")[0].split(".")[0])
    check(peers is not None, f"--join {join} names no Service")
    check(sts["spec"]["serviceName"] in services, "serviceName is no Service")
    if peers:
        check(peers["spec"].get("clusterIP") == "None", "the peers Service is not headless")
        check(peers["spec"].get("publishNotReadyAddresses") is True,
              "warming members must be found: publishNotReadyAddresses: true")
    for s in services.values():
        check(s["spec"]["selector"].items() <= labels.items(),
              f"Service {s['metadata']['name']} selects no pod")
        for p in s["spec"]["ports"]:
            target = ports.get(p["targetPort"])
            check(target is not None, f"Service port {p['name']} targets unknown {p['targetPort']}")
            if target:
                check(target.get("protocol", "TCP") == p.get("protocol", "TCP"),
                      f"Service port {p['name']} protocol differs from its target")

    # Volumes: the keyring Secret at --keyring, the rules ConfigMap at --rules,
    # the claim at --state-dir.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    secrets = {s["metadata"]["name"] for s in by_kind["Secret"]}
    maps = {m["metadata"]["name"] for m in by_kind["ConfigMap"]}
    keyring_volume = next((n for n, v in volumes.items() if "secret" in v), None)
    check(keyring_volume and volumes[keyring_volume]["secret"]["secretName"] in secrets,
          "no volume from the keyring Secret")
    if keyring_volume:
        check(flags["--keyring"].startswith(mounts[keyring_volume] + "/"),
              "--keyring is not inside the Secret's mount")
    rules_volume = next((n for n, v in volumes.items() if "configMap" in v), None)
    check(rules_volume and volumes[rules_volume]["configMap"]["name"] in maps,
          "no volume from the rules ConfigMap")
    if rules_volume:
        check(flags["--rules"] == mounts[rules_volume],
              "--rules is not the ConfigMap's mount (a directory, so updates are followed)")
    claims = {c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates", [])}
    state = [n for n in claims if n in mounts]
    check(state and mounts[state[0]] == flags["--state-dir"],
          "--state-dir is not a volumeClaimTemplate mount (snapshots must survive the pod)")

    pdb = by_kind["PodDisruptionBudget"][0]
    check(pdb["spec"]["selector"]["matchLabels"].items() <= labels.items(),
          "PodDisruptionBudget selects no pod")
    check(pdb["spec"].get("maxUnavailable") == 1, "PodDisruptionBudget should allow one away")
    check(pod.get("terminationGracePeriodSeconds", 30) >= 10,
          "too little time for leave + final snapshot")


if __name__ == "__main__":
    main()
    for f in failures:
        print("FAIL:", f)
    print("PASS" if not failures else f"{len(failures)} failures")
    sys.exit(1 if failures else 0)
