"""Cross-object checks of the SemCLIP manifests that schema validation cannot make.

Usage: check_consistency.py FILE...

Checks that every Service selects the pods of a Deployment and targets named ports they
declare, that every gRPC probe calls a port the container declares, that every HPA scales
an existing Deployment, that every ConfigMap a container reads exists, and that every
environment variable is one the daemons read (SEMCLIP_... or ORT_DYLIB_PATH).
Prints one line per problem and exits 1 when there is any.
"""

import sys

import yaml


def main(paths: list[str]) -> int:
    docs = []
    for path in paths:
        with open(path) as f:
            docs += [(path, d) for d in yaml.safe_load_all(f) if d]

    by_kind: dict[str, dict[str, dict]] = {}
    for _, d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

    problems = []
    deployments = by_kind.get("Deployment", {})
    configmaps = by_kind.get("ConfigMap", {})

    for name, dep in deployments.items():
        spec = dep["spec"]
        labels = spec["template"]["metadata"]["labels"]
        if any(labels.get(k) != v for k, v in spec["selector"]["matchLabels"].items()):
            problems.append(f"deployment/{name}: selector does not match its pod labels")
        for c in spec["template"]["spec"]["containers"]:
            ports = {p["containerPort"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                grpc = c.get(probe, {}).get("grpc")
                if grpc and grpc["port"] not in ports:
                    problems.append(
                        f"deployment/{name}: {probe} calls port {grpc['port']}, "
                        f"which container {c['name']} does not declare"
                    )
            for src in c.get("envFrom", []):
                ref = src.get("configMapRef", {}).get("name")
                if ref and ref not in configmaps:
                    problems.append(f"deployment/{name}: no ConfigMap {ref}")
            keys = [e["name"] for e in c.get("env", [])]
            for src in c.get("envFrom", []):
                ref = src.get("configMapRef", {}).get("name")
                keys += list(configmaps.get(ref, {}).get("data", {}))
            for key in keys:
                if not (key.startswith("SEMCLIP_") or key == "ORT_DYLIB_PATH"):
                    problems.append(f"deployment/{name}: unexpected variable {key}")

    for name, svc in by_kind.get("Service", {}).items():
        selector = svc["spec"]["selector"]
        targets = [
            d
            for d in deployments.values()
            if all(
                d["spec"]["template"]["metadata"]["labels"].get(k) == v
                for k, v in selector.items()
            )
        ]
        if not targets:
            problems.append(f"service/{name}: selects no Deployment's pods")
        for d in targets:
            named = {
                p.get("name")
                for c in d["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports", [])
            }
            for p in svc["spec"]["ports"]:
                if isinstance(p["targetPort"], str) and p["targetPort"] not in named:
                    problems.append(
                        f"service/{name}: targetPort {p['targetPort']} is not a port "
                        f"of deployment/{d['metadata']['name']}"
                    )

    for name, hpa in by_kind.get("HorizontalPodAutoscaler", {}).items():
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["kind"] != "Deployment" or ref["name"] not in deployments:
            problems.append(f"hpa/{name}: scales {ref['kind']}/{ref['name']}, not found")

    for p in problems:
        print(f"FAIL {p}")
    print(f"consistency: {len(docs)} objects, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
