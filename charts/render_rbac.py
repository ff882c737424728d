"""Print the chart's RBAC objects (Role, ClusterRole and their bindings) as a JSON
list, for the Rust tests that load them into the fake API server.

    python3 charts/render_rbac.py NAMESPACE RELEASE [VALUES_JSON]

Rendered with the chart's minimal values, like `test_chart.py`'s installs, and
VALUES_JSON (an object, e.g. `{"operator": {"watchNamespaces": ["*"]}}`) over them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import helm_python as helm
import yaml

CHART = Path(__file__).resolve().parent / "jarvis"
RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
MINIMAL = {
    "database": {"url": "postgres://jarvis:pw@db:5432/jarvis"},
    "router": {"storage": "s3://jarvis-files"},
}


def merged(base: dict, over: dict) -> dict:
    """`base` with `over`'s values, maps merged key by key."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def rbac(namespace: str, release: str, values: dict | None = None) -> list[dict]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(
            merged(MINIMAL, values or {}), name=release, namespace=namespace, is_install=True
        )
    return [
        doc
        for path, text in sorted(manifests.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc and doc.get("kind") in RBAC_KINDS
    ]


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: render_rbac.py NAMESPACE RELEASE [VALUES_JSON]")
    values = json.loads(sys.argv[3]) if len(sys.argv) == 4 else {}
    json.dump(rbac(sys.argv[1], sys.argv[2], values), sys.stdout)
