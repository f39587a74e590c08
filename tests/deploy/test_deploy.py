"""deploy/: the Helm chart lints and renders, every object it renders (with its defaults
and with other values) and every plain manifest validates against the Kubernetes schemas,
the plain manifests equal the chart's default render, and the objects say what the
service needs (uid, probes on the right ports, drain timing, the sandbox's
requirements). Also the Dockerfile (hadolint) and .dockerignore."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from poet_grpc.api.server import SERVICE_NAME
from poet_grpc.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "poet"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
SECCOMP = DEPLOY / "seccomp"

# The chart's floor (its kubeVersion: user namespaces on by default) and the newest
# schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.33.0", kubernetes_validate.latest_version() + ".0")

# kubernetes-validate has no schema for this CRD: a small one of the fields used.
SERVICE_MONITOR_SCHEMA = json.loads((Path(__file__).parent / "servicemonitor.schema.json").read_text())

# Labels only Helm adds; everything else must be equal in both.
HELM_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")

SEED_RESOURCES = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}}

VARIANTS = {
    "defaults": {},
    "process sandbox": {"sandbox": {"mode": "process"}},
    "grpc probes": {"probes": {"readiness": {"type": "grpc"}}},
    "http probes": {"probes": {"startup": {"type": "http"}, "liveness": {"type": "http"}}},
    "https probes": {"probes": {"startup": {"type": "http", "scheme": "HTTPS"},
                                "liveness": {"type": "http", "scheme": "HTTPS"},
                                "readiness": {"scheme": "HTTPS"}}},
    "optional objects off": {"serviceMonitor": {"enabled": False}, "networkPolicy": {"enabled": False},
                             "podDisruptionBudget": {"enabled": False}},
    "everything set": {
        "image": {"repository": "registry.example/poet-grpc", "tag": "1.2.3"},
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
        "persistence": {"size": "50Gi", "storageClassName": "fast"},
        "auth": {"insecure": True},
        "sandbox": {"appArmorProfile": {"type": "Localhost", "localhostProfile": "poet-sandbox"}},
        "shutdown": {"drainSeconds": 10, "graceSeconds": 20},
        "env": [{"name": "POET_GEMINI_API_KEY",
                 "valueFrom": {"secretKeyRef": {"name": "poet-gemini", "key": "api-key"}}}],
        "extraVolumes": [{"name": "sinks", "configMap": {"name": "poet-sinks"}}],
        "extraVolumeMounts": [{"name": "sinks", "mountPath": "/etc/poet/sinks", "readOnly": True}],
        "networkPolicy": {"ingressFrom": [{"podSelector": {"matchLabels": {"role": "agent"}}}], "httpsEgress": False,
                          "extraEgress": [{"ports": [{"port": 5000, "protocol": "TCP"}]}]},
        "serviceMonitor": {"labels": {"release": "prometheus"}, "interval": "15s"},
    },
}


def render(values: dict | None = None, release: str = "poet") -> list[dict]:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values or {}, name=release, namespace="poet", is_install=True)
    return [obj for text in rendered.values() for obj in yaml.safe_load_all(text) if obj]


def manifests() -> list[dict]:
    return [obj for path in MANIFESTS for obj in yaml.safe_load_all(path.read_text()) if obj]


def by_kind(objects: list[dict]) -> dict[str, dict]:
    kinds = [obj["kind"] for obj in objects]
    assert len(kinds) == len(set(kinds)), kinds  # one object of each kind here
    return {obj["kind"]: obj for obj in objects}


def container(objects: list[dict]) -> dict:
    (only,) = by_kind(objects)["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    return only


def env(objects: list[dict]) -> dict[str, str]:
    return {var["name"]: var.get("value") for var in container(objects)["env"]}


def validate(obj: dict, version: str) -> None:
    if obj["kind"] == "ServiceMonitor":
        jsonschema.validate(obj, SERVICE_MONITOR_SCHEMA)
    else:
        kubernetes_validate.validate(obj, version, strict=True)


def dockerfile_uid_gid() -> tuple[int, int]:
    (user,) = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    uid, _, gid = user.partition(":")
    return int(uid), int(gid or uid)


# --- the chart ------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_the_chart_lints_without_warnings(variant):
    report = helm.lint(CHART, values=VARIANTS[variant], strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", [{"sandbox": {"mode": "unconfined"}}, {"probes": {"readiness": {"type": "tcp"}}},
                                    {"shutdown": {"drainSeconds": -1}}])
def test_values_outside_the_schema_are_refused(values):
    with pytest.raises(helm.HelmValuesError):
        render(values)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_object_is_valid(variant, version):
    objects = render(VARIANTS[variant])
    assert {"StatefulSet", "Service"} <= set(by_kind(objects))
    for obj in objects:
        validate(obj, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_plain_manifest_is_valid(version):
    objects = manifests()
    assert set(by_kind(objects)) == {"StatefulSet", "Service", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"}
    for obj in objects:
        validate(obj, version)


def test_validation_can_fail():
    """Strict validation refuses a misspelt field, and the ServiceMonitor schema a bad endpoint."""
    statefulset = copy.deepcopy(by_kind(manifests())["StatefulSet"])
    container(([statefulset]))["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(statefulset, KUBERNETES_VERSIONS[0])
    monitor = copy.deepcopy(by_kind(manifests())["ServiceMonitor"])
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor, KUBERNETES_VERSIONS[0])


def _without_helm_labels(obj):
    if isinstance(obj, dict):
        return {key: _without_helm_labels(value) for key, value in obj.items()
                if not (key in HELM_LABELS and isinstance(value, str))}
    if isinstance(obj, list):
        return [_without_helm_labels(item) for item in obj]
    return obj


def test_the_plain_manifests_equal_the_default_render():
    rendered = {(o["kind"], o["metadata"]["name"]): _without_helm_labels(o) for o in render()}
    plain = {(o["kind"], o["metadata"]["name"]): o for o in manifests()}
    assert sorted(plain) == sorted(rendered)
    for key, obj in plain.items():
        assert obj == rendered[key], key


def test_another_release_name_names_every_object_after_it():
    objects = by_kind(render(release="prod"))
    assert {obj["metadata"]["name"] for obj in objects.values()} == {"prod-poet"}
    selector = {"app.kubernetes.io/name": "poet", "app.kubernetes.io/instance": "prod"}
    assert objects["StatefulSet"]["spec"]["selector"]["matchLabels"] == selector
    assert objects["Service"]["spec"]["selector"] == selector


# --- what the objects say (the plain manifests equal the default render) ---------------

def test_one_writer_with_its_sqlite_file_on_a_claimed_volume():
    objects = render()
    statefulset = by_kind(objects)["StatefulSet"]
    assert statefulset["spec"]["replicas"] == 1
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    mounts = {m["name"]: m["mountPath"] for m in container(objects)["volumeMounts"]}
    assert env(objects)["POET_DB"].startswith(mounts[claim["metadata"]["name"]] + "/")


def test_security_context_matches_the_dockerfile_user_and_locks_the_container_down():
    objects = render()
    pod = by_kind(objects)["StatefulSet"]["spec"]["template"]["spec"]
    uid, gid = dockerfile_uid_gid()
    assert uid >= 1000
    assert pod["securityContext"]["runAsUser"] == uid and pod["securityContext"]["runAsGroup"] == gid
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["hostUsers"] is False and pod["automountServiceAccountToken"] is False
    # Service links would add POET_PORT... variables beside the settings.
    assert pod["enableServiceLinks"] is False
    security = container(objects)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in security and "add" not in security["capabilities"]
    tmp = next(m for m in container(objects)["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])


def test_the_sandbox_defaults_to_namespaces_with_the_seccomp_profile_it_needs():
    objects = render()
    assert env(objects)["POET_SANDBOX"] == "namespaces"
    profile = container(objects)["securityContext"]["seccompProfile"]
    assert profile["type"] == "Localhost"
    assert (SECCOMP / profile["localhostProfile"]).is_file()


def test_the_process_sandbox_runs_under_the_runtime_default_seccomp_profile():
    objects = render(VARIANTS["process sandbox"])
    assert env(objects)["POET_SANDBOX"] == "process"
    assert "seccompProfile" not in container(objects)["securityContext"]  # the pod's RuntimeDefault applies
    assert by_kind(objects)["StatefulSet"]["spec"]["template"]["spec"]["securityContext"]["seccompProfile"] == {
        "type": "RuntimeDefault"}


def _sandbox_syscalls() -> set[str]:
    """The syscalls poet_grpc/sandbox makes through libc, and those it makes by number."""
    source = (ROOT / "poet_grpc" / "sandbox" / "_zygote.py").read_text()
    called = set(re.findall(r"_libc\.(\w+)\(", source)) - {"syscall"}
    by_number = {name.removeprefix("SYS_").lower() for name in re.findall(r"^(SYS_\w+) = \d+", source, re.MULTILINE)}
    assert {"unshare", "mount", "pivot_root", "umount2"} <= called and by_number
    return called | by_number


def test_the_seccomp_profile_allows_what_the_sandbox_calls_and_refuses_escape_tools():
    profile = json.loads((SECCOMP / "poet-sandbox.json").read_text())
    denied = {name for rule in profile["syscalls"] if rule["action"] != "SCMP_ACT_ALLOW" for name in rule["names"]}
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    assert _sandbox_syscalls().isdisjoint(denied)
    assert {"ptrace", "bpf", "keyctl", "kexec_load", "init_module", "userfaultfd", "io_uring_setup", "setns"} <= denied


def test_resources_are_the_seeds():
    assert container(render())["resources"] == SEED_RESOURCES
    assert container(render(VARIANTS["everything set"]))["resources"] == VARIANTS["everything set"]["resources"]


def _port(c: dict, reference) -> int:
    """A container port by number or by name."""
    if isinstance(reference, int):
        assert reference in {p["containerPort"] for p in c["ports"]}
        return reference
    return next(p["containerPort"] for p in c["ports"] if p["name"] == reference)


def test_probes_ask_grpc_health_on_50051_and_readiness_on_the_gateway():
    c = container(render())
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"grpc": 50051, "http": 8080}
    for probe in ("startupProbe", "livenessProbe"):
        assert _port(c, c[probe]["grpc"]["port"]) == 50051
        assert c[probe]["grpc"]["service"] == ""  # the server as a whole
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert _port(c, c["readinessProbe"]["httpGet"]["port"]) == 8080
    # The readiness probe answers within the storage check's bound (0.8 s) plus the hop.
    assert c["readinessProbe"]["timeoutSeconds"] >= 1


def test_probe_types_can_be_switched_per_probe():
    c = container(render(VARIANTS["grpc probes"]))
    assert c["readinessProbe"]["grpc"] == {"port": 50051, "service": SERVICE_NAME}
    c = container(render(VARIANTS["http probes"]))
    for probe in ("startupProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health/live" and _port(c, c[probe]["httpGet"]["port"]) == 8080
        assert "scheme" not in c[probe]["httpGet"]  # HTTP
    c = container(render(VARIANTS["https probes"]))  # with POET_TLS_CERT: the kubelet's gRPC probe has no TLS
    assert {c[probe]["httpGet"]["scheme"] for probe in ("startupProbe", "livenessProbe", "readinessProbe")} == {"HTTPS"}


@pytest.mark.parametrize("variant", ["defaults", "everything set"])
def test_the_drain_covers_readiness_detection_and_fits_the_termination_grace(variant):
    objects = render(VARIANTS[variant])
    pod = by_kind(objects)["StatefulSet"]["spec"]["template"]["spec"]
    readiness = container(objects)["readinessProbe"]
    drain = float(env(objects)["POET_SHUTDOWN_DRAIN_SECONDS"])
    grace = float(env(objects)["POET_SHUTDOWN_GRACE_SECONDS"])
    assert drain >= readiness["periodSeconds"] * readiness["failureThreshold"] + readiness["timeoutSeconds"]
    # Then gRPC drains for `grace`, Envoy gets up to 5 s, and the store closes: all before SIGKILL.
    assert pod["terminationGracePeriodSeconds"] >= drain + grace + 10


def test_the_drain_default_of_the_service_is_the_deployed_one():
    assert Settings().shutdown_drain_seconds == float(env(render())["POET_SHUTDOWN_DRAIN_SECONDS"])


def test_every_poet_variable_set_is_a_setting():
    settings = {f"POET_{field.name.upper()}" for field in dataclasses.fields(Settings)}
    for variant in ("defaults", "everything set"):
        assert {name for name in env(render(VARIANTS[variant])) if name.startswith("POET_")} <= settings


def test_auth_file_from_a_secret_or_insecure_when_asked():
    objects = render()
    volumes = by_kind(objects)["StatefulSet"]["spec"]["template"]["spec"]["volumes"]
    auth = next(v for v in volumes if v["name"] == "auth")
    mount = next(m for m in container(objects)["volumeMounts"] if m["name"] == "auth")
    assert auth["secret"]["secretName"] == "poet-auth" and mount["readOnly"] is True
    assert env(objects)["POET_AUTH_FILE"].startswith(mount["mountPath"] + "/")
    assert "POET_INSECURE" not in env(objects)
    objects = render(VARIANTS["everything set"])
    assert env(objects)["POET_INSECURE"] == "true" and "POET_AUTH_FILE" not in env(objects)
    assert "auth" not in {m["name"] for m in container(objects)["volumeMounts"]}


def test_values_reach_the_objects():
    objects = by_kind(render(VARIANTS["everything set"]))
    c = container(list(objects.values()))
    assert c["image"] == "registry.example/poet-grpc:1.2.3"
    assert c["securityContext"]["appArmorProfile"] == {"type": "Localhost", "localhostProfile": "poet-sandbox"}
    assert {"name": "sinks", "mountPath": "/etc/poet/sinks", "readOnly": True} in c["volumeMounts"]
    assert "POET_GEMINI_API_KEY" in {var["name"] for var in c["env"]}
    (claim,) = objects["StatefulSet"]["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi" and claim["spec"]["storageClassName"] == "fast"
    assert objects["StatefulSet"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 10 + 20 + 15
    assert objects["ServiceMonitor"]["metadata"]["labels"]["release"] == "prometheus"
    egress_ports = [p["port"] for rule in objects["NetworkPolicy"]["spec"]["egress"] for p in rule.get("ports", [])]
    assert 443 not in egress_ports and 5000 in egress_ports
    ingress_from = VARIANTS["everything set"]["networkPolicy"]["ingressFrom"]
    assert objects["NetworkPolicy"]["spec"]["ingress"][0]["from"] == ingress_from
    assert "ServiceMonitor" not in by_kind(render(VARIANTS["optional objects off"]))
    assert set(by_kind(render(VARIANTS["optional objects off"]))) == {"StatefulSet", "Service"}


def test_service_pdb_and_monitor_select_the_pod_and_its_ports():
    objects = by_kind(render())
    pod_labels = objects["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    c = container(list(objects.values()))
    service = objects["Service"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert {(p["port"], _port(c, p["targetPort"])) for p in service["spec"]["ports"]} == {(50051, 50051), (8080, 8080)}
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    monitor = objects["ServiceMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    scraped = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    assert _port(c, scraped["targetPort"]) == 8080 and endpoint["path"] == "/metrics"


def test_network_policy_opens_the_two_ports_metrics_and_dns():
    policy = by_kind(render())["NetworkPolicy"]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    ingress = [{p["port"] for p in rule["ports"]} for rule in policy["ingress"]]
    assert ingress[0] == {50051, 8080} and "from" not in policy["ingress"][0]
    metrics = policy["ingress"][1]
    assert {p["port"] for p in metrics["ports"]} == {8080} and metrics["from"]
    assert set().union(*ingress) == {50051, 8080}
    dns = policy["egress"][0]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")} and dns["to"]


# --- the image ------------------------------------------------------------------------

def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def _dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path, or one of its parent folders, decides."""
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").strip("/")
        regex = re.escape(glob).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negated
    return excluded


def test_dockerignore_sends_only_what_the_dockerfile_copies():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copied = [source for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")
              for source in line.split()[1:-1]]
    assert copied
    for source in copied:
        assert not _dockerignore_excludes(patterns, source), source
    for path in ("poet_grpc/config.py", "gateway/openapi.json", "pyproject.toml"):
        assert not _dockerignore_excludes(patterns, path), path
    for path in (".git/HEAD", ".venv/bin/python", "node_modules/x/index.js", "poet.db", "poet.db-wal",
                 "tests/unit/test_config.py", "deploy/kubernetes/service.yaml", "poet_grpc/__pycache__/config.pyc",
                 "poet_grpc/api/__pycache__/server.cpython-311.pyc", ".pytest_cache/v/x"):
        assert _dockerignore_excludes(patterns, path), path
