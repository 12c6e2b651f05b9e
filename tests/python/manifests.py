"""Checks the rendered production manifests for what a security review asked of them.

Reads `kubectl kustomize deploy/kubernetes/overlays/production` on stdin and fails (exit 1,
naming each problem) unless: no pod mounts a service-account token; every Deployment has a
PodDisruptionBudget selecting its pods; a NetworkPolicy selects every Deployment's pods, the
gateway's included; and credentials reach containers as files, not environment variables
(only the public OIDC settings of crm-auth may be env vars).
"""

import sys

import yaml

PUBLIC_SECRET_KEYS = {("crm-auth", "jwks-url"), ("crm-auth", "issuer"), ("crm-auth", "audience")}


def selects(selector, labels):
    """Whether a selector of matchLabels picks pods with `labels` (an empty selector, or one
    with expressions this check does not evaluate, counts as not selecting)."""
    selector = selector or {}
    match = selector.get("matchLabels") or {}
    if not match or selector.get("matchExpressions"):
        return False
    return all(labels.get(k) == v for k, v in match.items())


def main():
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    problems = []
    workloads = [d for d in docs if d["kind"] in ("Deployment", "Job")]
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    if not workloads:
        problems.append("no workloads rendered")
    for w in workloads:
        name = f'{w["kind"]}/{w["metadata"]["name"]}'
        template = w["spec"]["template"]
        spec = template["spec"]
        labels = template["metadata"].get("labels", {})
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name} mounts a service-account token")
        for container in spec["containers"] + spec.get("initContainers", []):
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    problems.append(f'{name}: the whole secret {source["secretRef"]["name"]} in the environment')
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref and (ref["name"], ref["key"]) not in PUBLIC_SECRET_KEYS:
                    problems.append(f'{name}: secret {ref["name"]}/{ref["key"]} in env var {env["name"]}')
        if w["kind"] == "Deployment":
            if not any(selects(p["spec"].get("selector"), labels) for p in pdbs):
                problems.append(f"{name} has no PodDisruptionBudget")
            if not any(selects(p["spec"].get("podSelector"), labels) for p in policies):
                problems.append(f"{name} has no NetworkPolicy of its own")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"{len(workloads)} workloads, {len(pdbs)} disruption budgets, {len(policies)} network policies: ok")


if __name__ == "__main__":
    main()
