"""Tests of the Helm chart `charts/jarvis`, rendered offline by Helm 4's own engine.

`helm-python-sdk` embeds Helm (no helm binary, no cluster): the chart is linted and
rendered with the values of three installs (the minimum, every secret given as a
value, and `jarvis/ci/production-values.yaml`), and every rendered object is checked
against what the chart promises: restricted pods, least-privilege RBAC, secrets only
through `secretKeyRef`, the operator's view of the router matching the router, and
clear failures when required values are missing. `kubernetes-validate` checks every
object against the Kubernetes API schemas (strict: unknown fields fail), like kubeconform.

Run: python3 -m unittest discover -s charts -p 'test_*.py'
"""

from __future__ import annotations

import json
import re
import unittest
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

CHARTS = Path(__file__).resolve().parent
CHART = CHARTS / "jarvis"
REPO = CHARTS.parent
RELEASE = "prod"
# Resource names start with `<release>-jarvis` (just `jarvis` for a release named so).
PREFIX = "prod-jarvis"
NAMESPACE = "jarvis-prod"

MINIMAL = {
    "database": {"url": "postgres://jarvis:pw-database-0001@db:5432/jarvis"},
    "router": {"storage": "s3://jarvis-files"},
}

# Every secret as a value: each must reach the pods only through the chart's Secret.
SECRET_VALUES = {
    "database": {"url": "postgres://jarvis:pw-database-0001@db:5432/jarvis"},
    "anthropic": {"apiKey": "sk-ant-test-secret-0002"},
    "auth": {"jwtSecret": "jwt-secret-value-0003"},
    "supabase": {"url": "https://proj.supabase.co", "jwtSecret": "supabase-jwt-0004"},
    "stripe": {"secretKey": "sk_live_secret_0005", "webhookSecret": "whsec_secret_0006"},
    "s3": {"accessKeyId": "AKIASECRET0007", "secretAccessKey": "aws-secret-key-0008"},
    "redis": {"url": "redis://:redis-password-0009@redis:6379"},
    "tts": {"engine": "openai", "apiKey": "tts-api-key-0010"},
    "metrics": {"token": "metrics-token-0011"},
    "router": {"storage": "s3://jarvis-files"},
}
SECRET_STRINGS = [
    "pw-database-0001",
    "sk-ant-test-secret-0002",
    "jwt-secret-value-0003",
    "supabase-jwt-0004",
    "sk_live_secret_0005",
    "whsec_secret_0006",
    "AKIASECRET0007",
    "aws-secret-key-0008",
    "redis-password-0009",
    "tts-api-key-0010",
    "metrics-token-0011",
]
# The router variables that hold secrets.
SECRET_ENV = {
    "DATABASE_URL",
    "ANTHROPIC_API_KEY",
    "JARVIS_JWT_SECRET",
    "SUPABASE_JWT_SECRET",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "JARVIS_REDIS_URL",
    "JARVIS_TTS_API_KEY",
    "JARVIS_METRICS_TOKEN",
}

# Least privilege, as (scope, apiGroup, resource, verb, resourceName or None).
WORKSPACES = "jarvisworkspaces"
CLUSTER_KINDS = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace"}
def operator_rules(scope: str) -> set[tuple]:
    """The operator's rights on workspaces and their children in `scope`."""
    return (
    {(scope, "jarvis.dev", WORKSPACES, v, None) for v in ("get", "list", "watch", "patch", "update")}
    | {(scope, "jarvis.dev", f"{WORKSPACES}/status", v, None) for v in ("get", "patch", "update")}
    | {(scope, "jarvis.dev", f"{WORKSPACES}/scale", v, None) for v in ("get", "patch", "update")}
    | {(scope, "jarvis.dev", f"{WORKSPACES}/finalizers", "update", None)}
    | {
        (scope, group, resource, verb, None)
        for group, resource in (
            ("", "pods"),
            ("", "services"),
            ("", "persistentvolumeclaims"),
            ("networking.k8s.io", "networkpolicies"),
        )
        for verb in ("get", "list", "watch", "create", "patch", "delete")
    }
    | {(scope, group, "events", v, None) for group in ("", "events.k8s.io") for v in ("create", "patch")}
    # Each warm pool pod's claim Secret (never read back).
    | {(scope, "", "secrets", "create", None)}
    )


LEADER_RULES = {(NAMESPACE, "coordination.k8s.io", "leases", "create", None)} | {
    (NAMESPACE, "coordination.k8s.io", "leases", v, "jarvis-operator") for v in ("get", "update", "patch")
}
# By default the operator manages its release namespace only.
OPERATOR_RULES = operator_rules(NAMESPACE) | LEADER_RULES
# The router creates, reads and watches workspaces (never deletes nor scales one down),
# scales them up, reports activity in their status, claims a start by creating or
# replacing the token Secret, and reads a pod's IP; with a warm pool it lists the
# pool's pods, claims one by patching its labels, and deletes one that refused its claim.
ROUTER_RULES = (
    {(NAMESPACE, "jarvis.dev", WORKSPACES, v, None) for v in ("get", "list", "watch", "create")}
    | {(NAMESPACE, "jarvis.dev", f"{WORKSPACES}/status", "patch", None)}
    | {(NAMESPACE, "jarvis.dev", f"{WORKSPACES}/scale", "patch", None)}
    | {(NAMESPACE, "", "secrets", v, None) for v in ("get", "create", "update")}
    | {(NAMESPACE, "", "pods", v, None) for v in ("get", "list", "patch", "delete")}
)


def render(values: dict) -> tuple[list[dict], str]:
    """The rendered objects and NOTES.txt of an install with `values`."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects, notes = [], ""
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects, notes


def production_values() -> dict:
    return yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())


def env_names_read_by(crate: str) -> set[str]:
    """Every `env = "NAME"` of a crate's clap configuration."""
    names = set()
    for source in (REPO / crate / "src").rglob("*.rs"):
        names |= set(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', source.read_text()))
    return names


class Install:
    """Lookups over one rendered install."""

    def __init__(self, values: dict):
        self.values = values
        self.objects, self.notes = render(values)

    def all(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str) -> dict:
        found = [o for o in self.all(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def deployment(self, component: str) -> dict:
        return self.one("Deployment", f"{PREFIX}-{component}")

    def container(self, component: str) -> dict:
        containers = self.deployment(component)["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        return containers[0]

    def env(self, component: str) -> dict[str, dict]:
        entries = self.container(component)["env"]
        names = [e["name"] for e in entries]
        assert len(names) == len(set(names)), f"duplicate env in {component}: {names}"
        return {e["name"]: e for e in entries}

    def rules_of(self, service_account: str) -> set[tuple]:
        """Every (scope, group, resource, verb, name) bound to a ServiceAccount."""
        granted = set()
        for binding_kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
            for binding in self.all(binding_kind):
                subjects = binding.get("subjects") or []
                if not any(
                    s["kind"] == "ServiceAccount"
                    and s["name"] == service_account
                    and s["namespace"] == NAMESPACE
                    for s in subjects
                ):
                    continue
                ref_kind = binding["roleRef"]["kind"]
                # A RoleBinding may bind a ClusterRole: its rules then apply in the
                # binding's namespace only.
                assert ref_kind == role_kind or binding_kind == "RoleBinding"
                role = self.one(ref_kind, binding["roleRef"]["name"])
                scope = (
                    binding["metadata"]["namespace"] if binding_kind == "RoleBinding" else "cluster"
                )
                for rule in role["rules"]:
                    names = rule.get("resourceNames") or [None]
                    for group in rule["apiGroups"]:
                        for resource in rule["resources"]:
                            for verb in rule["verbs"]:
                                for name in names:
                                    granted.add((scope, group, resource, verb, name))
        return granted


class ChartTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.minimal = Install(MINIMAL)
        cls.inline = Install(SECRET_VALUES)
        cls.production = Install(production_values())
        cls.installs = {"minimal": cls.minimal, "inline": cls.inline, "production": cls.production}

    def test_chart_lints_without_warnings(self):
        for values in (MINIMAL, SECRET_VALUES, production_values()):
            report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
            self.assertEqual(report["errors"], [])
            problems = [m for m in report["messages"] if m["severity"] >= 2]
            self.assertEqual(problems, [], report)

    def test_chart_is_helm_v2_with_the_crd(self):
        with helm.Chart.load(CHART) as chart:
            self.assertEqual(chart.metadata["apiVersion"], "v2")
            crds = chart.crds
        self.assertEqual([c["filename"] for c in crds], ["jarvis/crds/jarvisworkspace.yaml"])
        crd = yaml.safe_load(crds[0]["data"])
        self.assertEqual(crd["kind"], "CustomResourceDefinition")
        self.assertEqual(crd["metadata"]["name"], "jarvisworkspaces.jarvis.dev")
        # The chart's copy is the generated one.
        self.assertEqual(
            (CHART / "crds" / "jarvisworkspace.yaml").read_text(),
            (REPO / "crds" / "jarvisworkspace.yaml").read_text(),
            "charts/jarvis/crds/ is stale: cp crds/jarvisworkspace.yaml charts/jarvis/crds/",
        )

    def test_objects_match_the_kubernetes_schemas(self):
        # The chart's lowest kubeVersion and the newest schemas the package ships.
        versions = ("1.27", kubernetes_validate.latest_version())
        with helm.Chart.load(CHART) as chart:
            crds = [yaml.safe_load(c["data"]) for c in chart.crds]
        for label, install in self.installs.items():
            for obj in install.objects + crds:
                for version in versions:
                    with self.subTest(install=label, kind=obj["kind"], name=obj["metadata"]["name"], version=version):
                        kubernetes_validate.validate(obj, version, strict=True)

    def test_pods_run_restricted(self):
        for label, install in self.installs.items():
            for component in ("router", "operator"):
                with self.subTest(install=label, component=component):
                    pod = install.deployment(component)["spec"]["template"]["spec"]
                    self.assertTrue(pod["securityContext"]["runAsNonRoot"])
                    self.assertNotEqual(pod["securityContext"]["runAsUser"], 0)
                    self.assertEqual(pod["securityContext"]["seccompProfile"], {"type": "RuntimeDefault"})
                    for key in ("hostNetwork", "hostPID", "hostIPC"):
                        self.assertNotIn(key, pod)
                    for container in pod["containers"] + pod.get("initContainers", []):
                        sc = container["securityContext"]
                        self.assertTrue(sc["runAsNonRoot"])
                        self.assertTrue(sc["readOnlyRootFilesystem"])
                        self.assertFalse(sc["allowPrivilegeEscalation"])
                        self.assertFalse(sc.get("privileged", False))
                        self.assertEqual(sc["capabilities"], {"drop": ["ALL"]})
                        self.assertEqual(sc["seccompProfile"], {"type": "RuntimeDefault"})

    def test_router_and_operator_mount_their_own_tokens_only(self):
        install = self.minimal
        for component in ("router", "operator"):
            pod = install.deployment(component)["spec"]["template"]["spec"]
            self.assertEqual(pod["serviceAccountName"], f"{PREFIX}-{component}")
            self.assertIs(pod["automountServiceAccountToken"], True)
            account = install.one("ServiceAccount", f"{PREFIX}-{component}")
            self.assertIs(account["automountServiceAccountToken"], False)

    def test_rbac_is_exactly_least_privilege(self):
        for label, install in self.installs.items():
            with self.subTest(install=label):
                operator = install.rules_of(f"{PREFIX}-operator")
                router = install.rules_of(f"{PREFIX}-router")
                self.assertEqual(operator, OPERATOR_RULES, sorted(operator ^ OPERATOR_RULES, key=str))
                self.assertEqual(router, ROUTER_RULES, sorted(router ^ ROUTER_RULES, key=str))
                self.assertFalse(
                    [r for r in operator if r[2] == "secrets" and r[3] in ("get", "list", "watch")],
                    "the operator must not read secrets",
                )
                for kind in ("Role", "ClusterRole"):
                    for role in install.all(kind):
                        for rule in role["rules"]:
                            for field in ("apiGroups", "resources", "verbs"):
                                self.assertNotIn("*", rule[field], role["metadata"]["name"])

    def test_the_operator_manages_the_namespaces_it_is_given_only(self):
        env = self.minimal.env("operator")
        self.assertEqual(env["WATCH_NAMESPACE"]["value"], NAMESPACE)
        teams = Install({**MINIMAL, "operator": {"watchNamespaces": ["team-a", "team-b"]}})
        self.assertEqual(teams.env("operator")["WATCH_NAMESPACE"]["value"], "team-a,team-b")
        self.assertEqual(
            teams.rules_of(f"{PREFIX}-operator"),
            operator_rules("team-a") | operator_rules("team-b") | LEADER_RULES,
        )
        self.assertEqual(teams.all("ClusterRoleBinding"), [])
        everywhere = Install({**MINIMAL, "operator": {"watchNamespaces": ["*"]}})
        self.assertEqual(everywhere.env("operator")["WATCH_NAMESPACE"]["value"], "*")
        self.assertEqual(
            everywhere.rules_of(f"{PREFIX}-operator"), operator_rules("cluster") | LEADER_RULES
        )
        with self.assertRaises(Exception):
            Install({**MINIMAL, "operator": {"watchNamespaces": ["*", "team-a"]}})

    def test_a_warm_pool_watching_every_namespace_is_kept_where_the_routers_claim(self):
        pool = {"sandbox": {"warmPool": 2}}
        everywhere = Install({**MINIMAL, **pool, "operator": {"watchNamespaces": ["*"]}})
        env = everywhere.env("operator")
        router_namespace = everywhere.env("router")["JARVIS_KUBE_NAMESPACE"]["value"]
        self.assertEqual(router_namespace, NAMESPACE)
        self.assertEqual(env["JARVIS_WARM_POOL"]["value"], "2")
        self.assertEqual(env["JARVIS_WARM_POOL_NAMESPACES"]["value"], router_namespace)
        # What the pool does there (pods listed, watched, created and deleted; claim
        # Secrets created; its NetworkPolicy applied) the ClusterRoleBinding allows,
        # and nothing more than without a pool.
        granted = everywhere.rules_of(f"{PREFIX}-operator")
        self.assertEqual(granted, operator_rules("cluster") | LEADER_RULES)
        pool_rights = {("", "pods", v) for v in ("list", "watch", "create", "delete")} | {
            ("", "secrets", "create"),
        } | {("networking.k8s.io", "networkpolicies", v) for v in ("get", "create", "patch")}
        for group, resource, verb in pool_rights:
            self.assertIn(("cluster", group, resource, verb, None), granted)
        # Named namespaces keep a pool each: nothing to name. No pool: nothing either.
        teams = Install({**MINIMAL, **pool, "operator": {"watchNamespaces": ["team-a", "team-b"]}})
        self.assertEqual(teams.env("operator")["JARVIS_WARM_POOL_NAMESPACES"]["value"], "")
        self.assertEqual(self.minimal.env("operator")["JARVIS_WARM_POOL_NAMESPACES"]["value"], "")
        no_pool = Install({**MINIMAL, "operator": {"watchNamespaces": ["*"]}})
        self.assertEqual(no_pool.env("operator")["JARVIS_WARM_POOL_NAMESPACES"]["value"], "")

    def test_releases_in_two_namespaces_share_no_object(self):
        def names(namespace: str) -> set[tuple]:
            with helm.Chart.load(CHART) as chart:
                manifests = chart.render(MINIMAL, name=RELEASE, namespace=namespace, is_install=True)
            objects = [
                doc
                for path, text in manifests.items()
                if not path.endswith("NOTES.txt")
                for doc in yaml.safe_load_all(text)
                if doc
            ]
            found = set()
            for o in objects:
                # Namespaced objects without a namespace land in the release's.
                ns = o["metadata"].get("namespace", namespace if o["kind"] not in CLUSTER_KINDS else None)
                found.add((o["kind"], ns, o["metadata"]["name"]))
                if o["kind"] in CLUSTER_KINDS:
                    self.assertIn(namespace, o["metadata"]["name"], o["kind"])
            return found

        staging, production = names("staging"), names("production")
        self.assertTrue(staging and production)
        self.assertEqual(staging & production, set())

    def test_operator_sees_the_router_as_it_is(self):
        for label, install in self.installs.items():
            with self.subTest(install=label):
                env = install.env("operator")
                router = install.deployment("router")
                service = install.one("Service", f"{PREFIX}-router")
                selector = router["spec"]["selector"]["matchLabels"]
                pod_labels = router["spec"]["template"]["metadata"]["labels"]
                labels = dict(
                    pair.split("=", 1) for pair in env["JARVIS_ROUTER_POD_LABELS"]["value"].split(",")
                )
                self.assertEqual(labels, selector)
                self.assertLessEqual(labels.items(), pod_labels.items())
                self.assertEqual(env["JARVIS_ROUTER_SERVICE"]["value"], service["metadata"]["name"])
                self.assertEqual(env["JARVIS_ROUTER_NAMESPACE"]["value"], NAMESPACE)
                # Sandbox policies allow egress to router pods on this port, the
                # pods' gateway URL: the Service port, the container port and the
                # router's sandbox listener must all be it, and not the public port.
                port = int(env["JARVIS_ROUTER_PORT"]["value"])
                self.assertEqual(port, 8081)
                # Pods' `--egress-proxy` is the Service on this port: the egress
                # proxy's listener and container port, which sandbox pods may reach.
                egress = int(env["JARVIS_ROUTER_EGRESS_PORT"]["value"])
                self.assertEqual(egress, 8082)
                self.assertEqual(service["spec"]["ports"], [
                    {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
                    {"name": "sandbox", "port": port, "targetPort": "sandbox", "protocol": "TCP", "appProtocol": "http"},
                    {"name": "egress", "port": egress, "targetPort": "egress", "protocol": "TCP"},
                ])
                self.assertEqual(
                    install.container("router")["ports"],
                    [
                        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                        {"name": "sandbox", "containerPort": port, "protocol": "TCP"},
                        {"name": "egress", "containerPort": egress, "protocol": "TCP"},
                    ],
                )
                router_env = install.env("router")
                self.assertEqual(router_env["JARVIS_SANDBOX_LISTEN"]["value"], f"0.0.0.0:{port}")
                self.assertEqual(router_env["JARVIS_EGRESS_LISTEN"]["value"], f"0.0.0.0:{egress}")
                self.assertEqual(router_env["JARVIS_LISTEN"]["value"], "0.0.0.0:8080")

    def test_router_service_selects_the_router_pods_only(self):
        install = self.minimal
        selector = install.one("Service", f"{PREFIX}-router")["spec"]["selector"]
        router_labels = install.deployment("router")["spec"]["template"]["metadata"]["labels"]
        operator_labels = install.deployment("operator")["spec"]["template"]["metadata"]["labels"]
        self.assertLessEqual(selector.items(), router_labels.items())
        self.assertFalse(selector.items() <= operator_labels.items())
        self.assertEqual(selector, install.deployment("router")["spec"]["selector"]["matchLabels"])

    def test_operator_env_sets_every_setting_it_reads(self):
        read = env_names_read_by("operator")
        env = self.production.env("operator")
        self.assertEqual(set(env) - {"RUST_LOG"}, read)
        self.assertEqual(env["JARVIS_OPERATOR_LEADER_ELECT"]["value"], "true")
        self.assertEqual(env["POD_NAME"]["valueFrom"], {"fieldRef": {"fieldPath": "metadata.name"}})
        self.assertEqual(env["POD_NAMESPACE"]["valueFrom"], {"fieldRef": {"fieldPath": "metadata.namespace"}})
        self.assertEqual(env["JARVIS_SANDBOX_RUNTIME_CLASS"]["value"], "gvisor")
        self.assertEqual(env["JARVIS_SANDBOX_IMAGE"]["value"], "registry.example.com/jarvis/sandbox:1.2.3")
        self.assertEqual(env["JARVIS_SANDBOX_CLAUDE_BIN"]["value"], "/usr/local/bin/claude")
        self.assertEqual(env["JARVIS_OPERATOR_LISTEN"]["value"], "0.0.0.0:9090")
        self.assertEqual(self.minimal.env("operator")["JARVIS_SANDBOX_RUNTIME_CLASS"]["value"], "")

    def test_router_env_names_are_read_by_the_router(self):
        # AWS_* are read by the S3 client; JARVIS_ALLOWED_ORIGINS by the /ws origin
        # check, which lands with issue 4's proxy.
        known = env_names_read_by("router") | {
            "RUST_LOG",
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "JARVIS_ALLOWED_ORIGINS",
        }
        for label, install in self.installs.items():
            with self.subTest(install=label):
                env = install.env("router")
                self.assertLessEqual(set(env), known)
                self.assertEqual(env["JARVIS_BACKEND"]["value"], "kubernetes")
                self.assertEqual(env["JARVIS_KUBE_NAMESPACE"]["value"], NAMESPACE)
                self.assertEqual(env["JARVIS_LISTEN"]["value"], "0.0.0.0:8080")
                self.assertEqual(env["JARVIS_STORAGE"]["value"], "s3://jarvis-files")

    def test_secrets_reach_pods_only_through_secret_key_refs(self):
        install = self.inline
        env = install.env("router")
        secret = install.one("Secret", f"{PREFIX}-router")
        self.assertEqual(set(SECRET_ENV) & set(env), SECRET_ENV)
        for name in SECRET_ENV:
            ref = env[name]["valueFrom"]["secretKeyRef"]
            self.assertEqual(ref["name"], secret["metadata"]["name"])
            self.assertIn(ref["key"], secret["data"])
        for label, each in self.installs.items():
            for component in ("router", "operator"):
                for entry in each.env(component).values():
                    if "value" in entry:
                        self.assertNotIn(entry["name"], SECRET_ENV, f"{label}: {entry}")
                        for text in SECRET_STRINGS:
                            self.assertNotIn(text, entry["value"], f"{label}: {entry['name']}")
            for text in SECRET_STRINGS:
                self.assertNotIn(text, each.notes, f"{label}: NOTES.txt shows a secret")
                for obj in each.objects:
                    if obj["kind"] != "Secret":
                        self.assertNotIn(text, yaml.safe_dump(obj), f"{label}: {obj['kind']}")

    def test_existing_secrets_are_referenced_and_not_copied(self):
        install = self.production
        self.assertEqual(install.all("Secret"), [])
        env = install.env("router")
        refs = {name: env[name]["valueFrom"]["secretKeyRef"] for name in SECRET_ENV}
        self.assertEqual(refs["DATABASE_URL"], {"name": "jarvis-db", "key": "url"})
        self.assertEqual(refs["ANTHROPIC_API_KEY"], {"name": "jarvis-model", "key": "api-key"})
        self.assertEqual(refs["JARVIS_JWT_SECRET"], {"name": "jarvis-auth", "key": "jwt-secret"})
        self.assertEqual(refs["SUPABASE_JWT_SECRET"], {"name": "jarvis-auth", "key": "supabase-jwt-secret"})
        self.assertEqual(refs["STRIPE_SECRET_KEY"], {"name": "jarvis-stripe", "key": "stripe-secret-key"})
        self.assertEqual(refs["STRIPE_WEBHOOK_SECRET"], {"name": "jarvis-stripe", "key": "stripe-webhook-secret"})
        self.assertEqual(refs["AWS_ACCESS_KEY_ID"], {"name": "jarvis-s3", "key": "aws-access-key-id"})
        self.assertEqual(refs["AWS_SECRET_ACCESS_KEY"], {"name": "jarvis-s3", "key": "aws-secret-access-key"})
        self.assertEqual(refs["JARVIS_REDIS_URL"], {"name": "jarvis-redis", "key": "url"})
        self.assertEqual(refs["JARVIS_TTS_API_KEY"], {"name": "jarvis-tts", "key": "tts-api-key"})
        self.assertEqual(refs["JARVIS_METRICS_TOKEN"], {"name": "jarvis-metrics", "key": "token"})
        self.assertEqual(env["JARVIS_TTS_ENGINE"]["value"], "elevenlabs")
        self.assertEqual(env["SUPABASE_URL"]["value"], "https://abcdefgh.supabase.co")
        self.assertEqual(env["AWS_ENDPOINT_URL"]["value"], "https://abcdefgh.supabase.co/storage/v1/s3")

    def test_plans_and_prices_reach_the_router(self):
        env = self.production.env("router")
        self.assertEqual(
            json.loads(env["JARVIS_PLANS"]["value"]),
            {"pro": {"monthly_tokens": 5000000}, "enterprise": {"monthly_tokens": None, "max_concurrent_turns": 16}},
        )
        self.assertEqual(env["STRIPE_PRICE_PRO"]["value"], "price_1ProMonthly")
        self.assertEqual(env["STRIPE_PRICE_ENTERPRISE"]["value"], "price_1EnterpriseMonthly")

    def test_optional_settings_stay_unset_by_default(self):
        env = self.minimal.env("router")
        self.assertEqual(env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"], f"{PREFIX}-router")
        for name in SECRET_ENV - {"DATABASE_URL"} | {
            "SUPABASE_URL",
            "JARVIS_ALLOWED_ORIGINS",
            "AWS_ENDPOINT_URL",
            "JARVIS_PLANS",
            "STRIPE_PRICE_PRO",
            "STRIPE_PRICE_ENTERPRISE",
        }:
            self.assertNotIn(name, env)
        self.assertEqual(self.minimal.one("Secret", f"{PREFIX}-router")["data"].keys(), {"database-url"})

    def test_probes_resources_and_metrics_annotations(self):
        router = self.production.container("router")
        self.assertEqual(router["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "http"})
        self.assertEqual(router["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "http"})
        self.assertEqual(router["resources"], production_values()["router"]["resources"])
        operator = self.production.container("operator")
        self.assertEqual(operator["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "metrics"})
        for component, port in (("router", "8080"), ("operator", "9090")):
            annotations = self.minimal.deployment(component)["spec"]["template"]["metadata"]["annotations"]
            self.assertEqual(annotations["prometheus.io/scrape"], "true")
            self.assertEqual(annotations["prometheus.io/port"], port)
        self.assertEqual(self.minimal.deployment("operator")["spec"]["replicas"], 2)
        self.assertEqual(self.production.deployment("router")["spec"]["replicas"], 3)

    def test_two_routers_by_default_and_a_drain_leaves_one(self):
        for label, install in self.installs.items():
            with self.subTest(install=label):
                router = install.deployment("router")
                budget = install.one("PodDisruptionBudget", f"{PREFIX}-router")["spec"]
                self.assertEqual(budget["minAvailable"], 1)
                self.assertEqual(budget["selector"]["matchLabels"], router["spec"]["selector"]["matchLabels"])
        self.assertEqual(self.minimal.deployment("router")["spec"]["replicas"], 2)
        # One router: a budget of one would block every drain.
        single = Install({**MINIMAL, "router": {**MINIMAL["router"], "replicas": 1}})
        self.assertEqual(single.deployment("router")["spec"]["replicas"], 1)
        self.assertEqual(single.all("PodDisruptionBudget"), [])

    def test_ingress_with_tls_sends_everything_to_the_router(self):
        self.assertEqual(self.minimal.all("Ingress"), [])
        ingress = self.production.one("Ingress", f"{PREFIX}-router")
        spec = ingress["spec"]
        self.assertEqual(spec["ingressClassName"], "nginx")
        self.assertEqual(spec["tls"], [{"hosts": ["jarvis.example.org"], "secretName": "jarvis-example-org-tls"}])
        (rule,) = spec["rules"]
        self.assertEqual(rule["host"], "jarvis.example.org")
        # One Prefix path `/`: /ws (the WebSocket), /api and /v1 included.
        self.assertEqual(rule["http"]["paths"], [{
            "path": "/",
            "pathType": "Prefix",
            "backend": {"service": {"name": f"{PREFIX}-router", "port": {"name": "http"}}},
        }])
        self.assertEqual(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"], "3600")
        env = self.production.env("router")
        self.assertEqual(env["JARVIS_ALLOWED_ORIGINS"]["value"], "https://jarvis.example.org")

    def test_network_policies(self):
        sandbox = {"app.kubernetes.io/name": "jarvis-sandbox", "app.kubernetes.io/managed-by": "jarvis-operator"}
        # The labels the operator puts on sandbox pods (operator/src/controller/build.rs).
        build = (REPO / "operator/src/controller/build.rs").read_text()
        self.assertIn('pub const MANAGED_BY: &str = "jarvis-operator";', build)
        self.assertIn('pub const SANDBOX_APP: &str = "jarvis-sandbox";', build)
        # Default: router reachable by anyone on 8080 and by sandbox pods only on 8081,
        # egress open; operator to DNS + API only.
        sandbox_rule = {
            "ports": [{"protocol": "TCP", "port": 8081}, {"protocol": "TCP", "port": 8082}],
            "from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": sandbox}}],
        }
        router = self.minimal.one("NetworkPolicy", f"{PREFIX}-router")["spec"]
        self.assertEqual(router["podSelector"]["matchLabels"],
                         self.minimal.deployment("router")["spec"]["selector"]["matchLabels"])
        self.assertEqual(router["ingress"], [{"ports": [{"protocol": "TCP", "port": 8080}]}, sandbox_rule])
        self.assertEqual(router["egress"], [{}])
        operator = self.minimal.one("NetworkPolicy", f"{PREFIX}-operator")["spec"]
        self.assertEqual(sorted(operator["policyTypes"]), ["Egress", "Ingress"])
        dns, api = operator["egress"]
        self.assertEqual({p["port"] for p in dns["ports"]}, {53})
        self.assertEqual({p["port"] for p in api["ports"]}, {443, 6443})
        self.assertEqual(operator["ingress"], [{"ports": [{"protocol": "TCP", "port": 9090}]}])
        # Locked down: the ingress controller on 8080 and sandboxes on 8081 in, listed egress out.
        router = self.production.one("NetworkPolicy", f"{PREFIX}-router")["spec"]
        self.assertEqual(router["ingress"], [
            {
                "ports": [{"protocol": "TCP", "port": 8080}],
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
            },
            sandbox_rule,
        ])
        self.assertNotIn({}, router["egress"])
        ports = {p["port"] for rule in router["egress"] for p in rule.get("ports", [])}
        self.assertLessEqual({53, 443, 5432, 6379, 7070}, ports)
        api = self.production.one("NetworkPolicy", f"{PREFIX}-operator")["spec"]["egress"][1]
        self.assertEqual(api, {"to": [{"ipBlock": {"cidr": "10.96.0.1/32"}}], "ports": [{"protocol": "TCP", "port": 443}]})
        no_policies = Install({**MINIMAL, "networkPolicy": {"enabled": False}})
        self.assertEqual(no_policies.all("NetworkPolicy"), [])

    def test_missing_required_values_fail_with_a_clear_message(self):
        cases = [
            ({"router": {"storage": "s3://b"}}, "database.url or database.existingSecret is required"),
            ({"database": {"url": "postgres://db/jarvis"}}, "router.storage is required"),
            ({**MINIMAL, "ingress": {"enabled": True, "host": ""}}, "ingress.host is required"),
            ({**MINIMAL, "sandbox": {"uid": 0}}, "sandbox.uid must be a non-root uid"),
        ]
        for values, message in cases:
            with self.subTest(message=message):
                with self.assertRaises(helm.HelmError) as caught:
                    render(values)
                self.assertIn(message, str(caught.exception))
        # Supabase's two URLs as values: the pooler's and the direct one, both in the Secret.
        objects, _ = render(
            {
                "database": {"url": "postgres://p@pooler:6543/postgres", "directUrl": "postgres://p@direct:5432/postgres"},
                "router": {"storage": "s3://b"},
            }
        )
        secret = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-router"))
        self.assertEqual(secret["data"].keys(), {"database-url", "database-direct-url"})
        deployment = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-router"))
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        self.assertEqual(env["DATABASE_DIRECT_URL"]["valueFrom"]["secretKeyRef"]["key"], "database-direct-url")
        # An existing Secret stands in for the URL.
        objects, _ = render({"database": {"existingSecret": "db"}, "router": {"storage": "s3://b"}})
        self.assertTrue(any(o["kind"] == "Deployment" for o in objects))

    def test_readme_install_example_renders(self):
        readme = (REPO / "README.md").read_text()
        example = re.search(r"cat > values.yaml <<'YAML'\n(.*?)\nYAML", readme, re.S)
        self.assertIsNotNone(example, "README.md lost its values.yaml example")
        install = Install(yaml.safe_load(example.group(1)))
        env = install.env("router")
        self.assertEqual(env["DATABASE_URL"]["valueFrom"]["secretKeyRef"], {"name": "jarvis-db", "key": "database-url"})
        self.assertEqual(
            env["DATABASE_DIRECT_URL"]["valueFrom"]["secretKeyRef"], {"name": "jarvis-db", "key": "database-direct-url"}
        )
        self.assertEqual(install.all("Secret"), [])
        self.assertEqual(len(install.all("Ingress")), 1)


if __name__ == "__main__":
    unittest.main()
