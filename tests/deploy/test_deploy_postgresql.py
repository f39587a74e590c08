"""deploy/ in its PostgreSQL mode: several replicas on one shared database. The plain
manifests of deploy/kubernetes/postgresql/ and the chart's render with
database.mode=postgresql validate against the Kubernetes schemas and equal each other;
the Deployment runs the embedded mode's pod with POET_DB from a Secret and no volume,
spread over nodes, under an autoscaler and a disruption budget that keep replicas
serving; the chart refuses what the mode cannot do (several replicas on SQLite)."""

from __future__ import annotations

import copy
import dataclasses
import re

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from poet_grpc.config import Settings, is_postgres_url
from test_deploy import (CHART, DEPLOY, KUBERNETES_VERSIONS, SECCOMP, SEED_RESOURCES, _without_helm_labels, by_kind,
                         manifests, render, validate)

PLAIN = DEPLOY / "kubernetes" / "postgresql"
# kubectl apply -f DIR reads only these: the example Secret must not be one of them.
KUBECTL_EXTENSIONS = (".yaml", ".yml", ".json")
EXAMPLE_SECRET = PLAIN / "poet-database.secret.example"

POSTGRESQL = {"database": {"mode": "postgresql"}}

VARIANTS = {
    "defaults": {},
    "fixed replicas": {"autoscaling": {"enabled": False}, "replicaCount": 5},
    "fixed replicas, default count": {"autoscaling": {"enabled": False}},
    "hard anti-affinity": {"podAntiAffinity": "hard"},
    "no anti-affinity": {"podAntiAffinity": "none"},
    "process sandbox": {"sandbox": {"mode": "process"}},
    "optional objects off": {"serviceMonitor": {"enabled": False}, "networkPolicy": {"enabled": False},
                             "podDisruptionBudget": {"enabled": False}, "autoscaling": {"enabled": False}},
    "everything set": {
        "database": {"postgresql": {"existingSecret": "prod-db", "secretKey": "dsn"}},
        "autoscaling": {"minReplicas": 4, "maxReplicas": 20, "targetCPUUtilizationPercentage": 60},
        "podDisruptionBudget": {"minAvailable": 3},
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["poet"]}]}]}}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "poet"}}}],
        "networkPolicy": {"postgresqlEgress": {"port": 6432, "to": [{"ipBlock": {"cidr": "10.0.12.5/32"}}]}},
        "auth": {"insecure": True},
        "shutdown": {"drainSeconds": 10, "graceSeconds": 20},
    },
}


def _merged(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = _merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def pg(variant: str = "defaults", release: str = "poet") -> list[dict]:
    """The chart's render in postgresql mode with one of VARIANTS."""
    return render(_merged(POSTGRESQL, VARIANTS[variant]), release=release)


def plain() -> list[dict]:
    return [obj for path in sorted(PLAIN.glob("*.yaml")) for obj in yaml.safe_load_all(path.read_text()) if obj]


def pod(objects: list[dict], kind: str = "Deployment") -> dict:
    return by_kind(objects)[kind]["spec"]["template"]["spec"]


def container(objects: list[dict], kind: str = "Deployment") -> dict:
    (only,) = pod(objects, kind)["containers"]
    return only


def env(objects: list[dict]) -> dict[str, dict]:
    return {var["name"]: var for var in container(objects)["env"]}


def render_error(values: dict) -> str:
    with pytest.raises(helm.HelmError) as raised:
        render(values)
    return str(raised.value)


# --- validity -------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_the_chart_lints_without_warnings_in_postgresql_mode(variant):
    report = helm.lint(CHART, values=_merged(POSTGRESQL, VARIANTS[variant]), strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_rendered_in_postgresql_mode_is_valid(variant, version):
    objects = pg(variant)
    kinds = set(by_kind(objects))
    assert {"Deployment", "Service"} <= kinds and "StatefulSet" not in kinds
    for obj in objects:
        validate(obj, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_plain_postgresql_manifest_is_valid(version):
    objects = plain()
    assert set(by_kind(objects)) == {"Deployment", "HorizontalPodAutoscaler", "Service", "PodDisruptionBudget",
                                     "NetworkPolicy", "ServiceMonitor"}
    for obj in objects:
        validate(obj, version)


def test_validation_of_the_new_kinds_can_fail():
    objects = by_kind(plain())
    autoscaler = copy.deepcopy(objects["HorizontalPodAutoscaler"])
    autoscaler["spec"]["targetCPUUtilizationPercentage"] = 70  # autoscaling/v1's field, not v2's
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(autoscaler, KUBERNETES_VERSIONS[0])
    deployment = copy.deepcopy(objects["Deployment"])
    deployment["spec"]["volumeClaimTemplates"] = []  # a StatefulSet's field
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, KUBERNETES_VERSIONS[0])


def test_the_example_secret_is_valid_but_not_applied_with_the_directory():
    assert EXAMPLE_SECRET.suffix not in KUBECTL_EXTENSIONS
    assert sorted(p for p in PLAIN.iterdir() if p.suffix in KUBECTL_EXTENSIONS) == sorted(PLAIN.glob("*.yaml"))
    secret = yaml.safe_load(EXAMPLE_SECRET.read_text())
    for version in KUBERNETES_VERSIONS:
        validate(secret, version)
    ref = env(plain())["POET_DB"]["valueFrom"]["secretKeyRef"]
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == ref["name"]
    url = secret["stringData"][ref["key"]]
    assert is_postgres_url(url)
    assert re.match(r"postgresql://[^:]+:CHANGE-ME@", url)  # a placeholder, never a password
    # Nothing that is applied or rendered holds a URL (and so a password).
    for objects in (plain(), pg("everything set")):
        assert not [s for s in _strings(objects) if is_postgres_url(s)]


def _strings(obj) -> list[str]:
    if isinstance(obj, dict):
        return [s for value in obj.values() for s in _strings(value)]
    if isinstance(obj, list):
        return [s for item in obj for s in _strings(item)]
    return [obj] if isinstance(obj, str) else []


# --- the plain manifests equal the render ---------------------------------------------

def test_the_plain_postgresql_manifests_equal_the_postgresql_render():
    rendered = {(o["kind"], o["metadata"]["name"]): _without_helm_labels(o) for o in pg()}
    manifest = {(o["kind"], o["metadata"]["name"]): o for o in plain()}
    assert sorted(manifest) == sorted(rendered)
    for key, obj in manifest.items():
        assert obj == rendered[key], key


def test_the_default_render_is_still_the_embedded_mode():
    kinds = set(by_kind(render()))
    assert "StatefulSet" in kinds and not kinds & {"Deployment", "HorizontalPodAutoscaler"}
    assert render({"database": {"mode": "sqlite"}, "replicaCount": 1}) == render()


def test_the_deployment_runs_the_embedded_pod_but_for_the_database():
    """Same security, seccomp, probes, resources, drain and grace as the StatefulSet's
    pod: only POET_DB, the data volume and the spreading differ."""
    for deployment, statefulset in ((by_kind(plain())["Deployment"], by_kind(manifests())["StatefulSet"]),
                                    (by_kind(pg())["Deployment"], by_kind(render())["StatefulSet"])):
        ours = copy.deepcopy(deployment["spec"]["template"])
        theirs = copy.deepcopy(statefulset["spec"]["template"])
        assert ours["spec"].pop("affinity")["podAntiAffinity"]
        for template in (ours, theirs):
            (c,) = template["spec"]["containers"]
            c["env"] = [var for var in c["env"] if var["name"] != "POET_DB"]
        (c,) = theirs["spec"]["containers"]
        c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != "data"]
        assert ours == theirs
        assert deployment["spec"]["selector"] == statefulset["spec"]["selector"]


# --- what the objects say -------------------------------------------------------------

@pytest.mark.parametrize("source", ["plain", "render"])
def test_poet_db_comes_from_the_secret_and_no_pod_has_a_data_volume(source):
    objects = plain() if source == "plain" else pg()
    db = env(objects)["POET_DB"]
    assert "value" not in db
    assert db["valueFrom"] == {"secretKeyRef": {"name": "poet-database", "key": "url"}}
    deployment = by_kind(objects)["Deployment"]
    assert "volumeClaimTemplates" not in deployment["spec"]
    volumes = pod(objects)["volumes"]
    assert all(set(v) & {"emptyDir", "secret"} for v in volumes)  # nothing persistent
    assert "data" not in {v["name"] for v in volumes}
    assert "/data" not in {m["mountPath"] for m in container(objects)["volumeMounts"]}
    assert container(objects)["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_secret_name_and_key_are_values():
    db = env(pg("everything set"))["POET_DB"]
    assert db["valueFrom"]["secretKeyRef"] == {"name": "prod-db", "key": "dsn"}


def test_every_poet_variable_set_is_a_setting():
    settings = {f"POET_{field.name.upper()}" for field in dataclasses.fields(Settings)}
    for objects in (plain(), pg("everything set")):
        assert {name for name in env(objects) if name.startswith("POET_")} <= settings


@pytest.mark.parametrize("source", ["plain", "render"])
def test_the_autoscaler_owns_the_replicas_and_the_budget_leaves_two_serving(source):
    objects = by_kind(plain() if source == "plain" else pg())
    deployment, hpa, pdb = objects["Deployment"], objects["HorizontalPodAutoscaler"], objects["PodDisruptionBudget"]
    # A replicas field would be set back by every apply, whatever the autoscaler had scaled to.
    assert "replicas" not in deployment["spec"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"], deployment["kind"], deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] == 10
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    # CPU utilisation is a share of the request: there must be one.
    assert container(list(objects.values()))["resources"] == SEED_RESOURCES
    # At the fewest replicas, a drain still leaves two serving, and is never blocked.
    assert "minAvailable" not in pdb["spec"]
    assert hpa["spec"]["minReplicas"] - pdb["spec"]["maxUnavailable"] >= 2
    assert pdb["spec"]["maxUnavailable"] >= 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"][
        "labels"].items()
    # An update adds pods before it removes any.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_autoscaling_values_reach_the_autoscaler_and_min_available_the_budget():
    objects = by_kind(pg("everything set"))
    hpa, pdb = objects["HorizontalPodAutoscaler"]["spec"], objects["PodDisruptionBudget"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (4, 20)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 60
    assert pdb["minAvailable"] == 3 and "maxUnavailable" not in pdb
    assert hpa["minReplicas"] > pdb["minAvailable"]  # a drain may proceed at the fewest replicas


def test_without_the_autoscaler_replica_count_sets_the_replicas():
    objects = by_kind(pg("fixed replicas"))
    assert "HorizontalPodAutoscaler" not in objects
    assert objects["Deployment"]["spec"]["replicas"] == 5
    assert by_kind(pg("fixed replicas, default count"))["Deployment"]["spec"]["replicas"] == 3
    assert set(by_kind(pg("optional objects off"))) == {"Deployment", "Service"}


@pytest.mark.parametrize("source", ["plain", "render"])
def test_replicas_are_spread_over_nodes(source):
    objects = plain() if source == "plain" else pg()
    (term,) = pod(objects)["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    selector = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
    labels = by_kind(objects)["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    assert selector == by_kind(objects)["Deployment"]["spec"]["selector"]["matchLabels"]


def test_anti_affinity_can_be_required_dropped_or_replaced():
    (term,) = pod(pg("hard anti-affinity"))["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert "affinity" not in pod(pg("no anti-affinity"))
    spec = pod(pg("everything set"))
    assert spec["affinity"] == VARIANTS["everything set"]["affinity"]
    assert spec["topologySpreadConstraints"] == VARIANTS["everything set"]["topologySpreadConstraints"]
    # Another release's pods are not this one's.
    (term,) = pod(pg(release="prod"))["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "prod"


def _egress(objects: list[dict]) -> list[dict]:
    return by_kind(objects)["NetworkPolicy"]["spec"]["egress"]


@pytest.mark.parametrize("source", ["plain", "render"])
def test_network_policy_adds_postgresql_egress_to_the_embedded_rules(source):
    objects, embedded = (plain(), manifests()) if source == "plain" else (pg(), render())
    ours, theirs = _egress(objects), _egress(embedded)
    added = [rule for rule in ours if rule not in theirs]
    assert [rule for rule in ours if rule in theirs] == theirs  # everything the embedded mode allows
    assert added == [{"ports": [{"port": 5432, "protocol": "TCP"}]}]
    assert 5432 not in {p["port"] for rule in theirs for p in rule.get("ports", [])}
    policy, embedded_policy = by_kind(objects)["NetworkPolicy"]["spec"], by_kind(embedded)["NetworkPolicy"]["spec"]
    assert policy["ingress"] == embedded_policy["ingress"] and policy["policyTypes"] == ["Ingress", "Egress"]


def test_postgresql_egress_port_and_peers_are_values():
    rules = [rule for rule in _egress(pg("everything set")) if {"port": 6432, "protocol": "TCP"} in rule["ports"]]
    assert rules == [{"ports": [{"port": 6432, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "10.0.12.5/32"}}]}]
    assert 5432 not in {p["port"] for rule in _egress(pg("everything set")) for p in rule["ports"]}


@pytest.mark.parametrize("source", ["plain", "render"])
def test_service_and_monitor_reach_every_replica(source):
    objects = by_kind(plain() if source == "plain" else pg())
    labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert objects["Service"]["spec"]["selector"].items() <= labels.items()
    assert objects["Service"]["spec"]["type"] == "ClusterIP"
    assert "clusterIP" not in objects["Service"]["spec"]
    monitor = objects["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= objects["Service"]["metadata"]["labels"].items()
    assert [(e["port"], e["path"]) for e in monitor["endpoints"]] == [("http", "/metrics")]


def test_the_sandbox_keeps_its_seccomp_profile_and_the_drain_its_timing():
    objects = plain()
    profile = container(objects)["securityContext"]["seccompProfile"]
    assert profile["type"] == "Localhost" and (SECCOMP / profile["localhostProfile"]).is_file()
    assert pod(objects)["hostUsers"] is False
    readiness = container(objects)["readinessProbe"]
    drain = float(env(objects)["POET_SHUTDOWN_DRAIN_SECONDS"]["value"])
    grace = float(env(objects)["POET_SHUTDOWN_GRACE_SECONDS"]["value"])
    assert drain >= readiness["periodSeconds"] * readiness["failureThreshold"] + readiness["timeoutSeconds"]
    assert pod(objects)["terminationGracePeriodSeconds"] >= drain + grace + 10
    assert pod(pg("everything set"))["terminationGracePeriodSeconds"] == 10 + 20 + 15
    assert "seccompProfile" not in container(pg("process sandbox"))["securityContext"]


def test_another_release_name_names_every_object_and_the_autoscaler_target_after_it():
    objects = by_kind(pg(release="prod"))
    assert {obj["metadata"]["name"] for obj in objects.values()} == {"prod-poet"}
    assert objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == "prod-poet"
    assert objects["Deployment"]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "prod"


# --- what the chart refuses -----------------------------------------------------------

@pytest.mark.parametrize("replicas", [2, 3, 0])
def test_sqlite_mode_refuses_any_other_replica_count_with_a_message(replicas):
    message = render_error({"replicaCount": replicas})
    assert f"replicaCount={replicas}: database.mode=sqlite runs exactly one replica" in message
    assert "database.mode=postgresql" in message  # what to do instead
    render_error({"database": {"mode": "sqlite"}, "replicaCount": replicas})


@pytest.mark.parametrize("values", [
    {"autoscaling": {"enabled": True}},  # sqlite: one writer, nothing to scale
    {"database": {"mode": "postgres"}},
    {"database": {"mode": "postgresql", "postgresql": {"existingSecret": ""}}},
    {"database": {"mode": "postgresql", "postgresql": {"secretKey": "no spaces"}}},
    {"database": {"mode": "postgresql"}, "replicaCount": 5},  # the autoscaler would own the count
    {"database": {"mode": "postgresql"}, "replicaCount": 5, "autoscaling": {"enabled": True}},
    {"database": {"mode": "postgresql"}, "autoscaling": {"minReplicas": 0}},
    {"database": {"mode": "postgresql"}, "podDisruptionBudget": {"maxUnavailable": "150%"}},
    {"database": {"mode": "postgresql"}, "podAntiAffinity": "always"},
    {"database": {"mode": "postgresql"}, "networkPolicy": {"postgresqlEgress": {"port": 70000}}},
])
def test_combinations_outside_the_schema_are_refused(values):
    with pytest.raises(helm.HelmValuesError):
        render(values)


def test_checks_the_schema_cannot_make_fail_with_a_message():
    message = render_error(_merged(POSTGRESQL, {"autoscaling": {"minReplicas": 5, "maxReplicas": 4}}))
    assert "autoscaling.minReplicas (5) is above autoscaling.maxReplicas (4)" in message
    # A budget no eviction can meet at the fewest replicas would block every node drain.
    message = render_error(_merged(POSTGRESQL, {"podDisruptionBudget": {"minAvailable": 3}}))
    assert "podDisruptionBudget.minAvailable=3 with as few as 3 replicas" in message
    message = render_error(_merged(POSTGRESQL, {"autoscaling": {"enabled": False}, "replicaCount": 2,
                                                "podDisruptionBudget": {"minAvailable": 2}}))
    assert "as few as 2 replicas" in message
    # Just under is fine, and so is a percentage or a disabled budget.
    assert by_kind(render(_merged(POSTGRESQL, {"podDisruptionBudget": {"minAvailable": 2}})))[
        "PodDisruptionBudget"]["spec"]["minAvailable"] == 2
    render(_merged(POSTGRESQL, {"podDisruptionBudget": {"minAvailable": "50%"}}))
    render(_merged(POSTGRESQL, {"podDisruptionBudget": {"enabled": False, "minAvailable": 3}}))
