"""KubeRay manifests: valid against KubeRay's own CRDs, able to scale, running the real entrypoint in an
image that the Dockerfile builds, with Ray's token auth on and no port reachable from outside Kubernetes.

The CRDs are vendored from a named KubeRay release (tests/data/kuberay/<version>/, see its README). An
unknown field is an error here, since Kubernetes drops it silently. Beyond the schemas, the rules that no
schema states: a group that may scale needs the autoscaler, and the job's model actors must fit a worker
that exists or that the autoscaler can add.
"""

from __future__ import annotations

import copy
import re
import shlex
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.structural_schema import load_crds, validate_object

ROOT = Path(__file__).resolve().parents[1]
KUBERAY = "v1.6.2"
CRDS = ROOT / "tests" / "data" / "kuberay" / KUBERAY
MANIFESTS = ["rayjob.yaml", "raycronjob.yaml"]


@cache
def _schemas() -> dict:
    return load_crds(CRDS)


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / "k8s" / name).read_text())


def _job_spec(doc: dict) -> dict:
    return doc["spec"]["jobTemplate"] if doc["kind"] == "RayCronJob" else doc["spec"]


def _quantity(value) -> float:
    """A Kubernetes quantity ("500m", "8", "32Gi") as a number (cores, bytes, devices)."""
    units = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    number, unit = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value)).groups()
    return float(number) * units[unit]


def _capacity(group: dict) -> dict[str, float]:
    """What one pod of a group offers Ray: CPUs, GPUs, memory (rayStartParams over container limits)."""
    limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
    params = group.get("rayStartParams") or {}
    return {
        "CPU": float(params.get("num-cpus", _quantity(limits.get("cpu", 0)))),
        "GPU": float(params.get("num-gpus", _quantity(limits.get("nvidia.com/gpu", 0)))),
        "memory": _quantity(limits.get("memory", 0)),
    }


def scaling_problems(doc: dict) -> list[str]:
    """The semantic rules no CRD schema states, for a RayJob or RayCronJob whose entrypoint runs
    jobs/restore_bucket.py with a spec."""
    from jobs.restore_bucket import parse_args
    from pipeline.spec import load_spec

    job = _job_spec(doc)
    cluster = job["rayClusterSpec"]
    autoscaling = cluster.get("enableInTreeAutoscaling") is True
    problems = []
    for group in cluster["workerGroupSpecs"]:
        lo, hi = group.get("minReplicas", 0), group.get("maxReplicas", 2**31 - 1)
        replicas = group.get("replicas", lo)
        if hi > lo and not autoscaling:
            problems.append(
                f"worker group {group['groupName']} may scale ({lo}..{hi}) but enableInTreeAutoscaling is not "
                "true: KubeRay keeps it at `replicas` and never adds a worker"
            )
        if not lo <= replicas <= hi:
            problems.append(f"worker group {group['groupName']}: replicas {replicas} is outside {lo}..{hi}")

    # The job's model actors need a node that has (or can get) the resources of one actor; the CPU
    # stages (read, decode, encode, write) need CPUs beside them.
    argv = shlex.split(job["entrypoint"])
    res = load_spec(ROOT / parse_args(argv[2:]).spec).resources
    actor = {"CPU": res.cpus_per_actor, "GPU": res.gpus_per_actor, "memory": res.memory_per_actor_gb * 2**30}
    nodes = [("head", cluster["headGroupSpec"], 1)] + [
        (g["groupName"], g, g["maxReplicas"] if autoscaling else g.get("replicas", g.get("minReplicas", 0)))
        for g in cluster["workerGroupSpecs"]
    ]
    reachable = [(name, _capacity(g)) for name, g, count in nodes if count > 0]
    fitting = [name for name, cap in reachable if all(cap[k] >= v for k, v in actor.items())]
    if not fitting:
        problems.append(
            f"no node that exists or that the autoscaler may add fits one model actor ({actor}): the run would "
            "wait for resources until its deadline"
        )
    elif not any(cap["CPU"] - actor["CPU"] >= 1 for name, cap in reachable if name in fitting):
        problems.append(f"the nodes fitting a model actor ({fitting}) leave no CPU for reading and encoding")
    return problems


# Service types that open a port beyond the Kubernetes cluster (ClusterIP, KubeRay's default, does not).
EXPOSING = {"NodePort", "LoadBalancer"}


def _walk(obj, path: str = ""):
    """``(dotted path, value)`` of every key and list item under ``obj``."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        where = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key
        yield where, value
        yield from _walk(value, where)


def security_problems(doc: dict) -> list[str]:
    """What would let another host in: token auth not on (``authOptions.mode`` or a container's
    ``RAY_AUTH_MODE``), or the dashboard, job API or GCS reachable from outside Kubernetes (a NodePort or
    LoadBalancer service, an ingress, host ports or the host's network). Each problem names its key."""
    base = "spec.jobTemplate.rayClusterSpec" if doc["kind"] == "RayCronJob" else "spec.rayClusterSpec"
    mode = (_job_spec(doc)["rayClusterSpec"].get("authOptions") or {}).get("mode")
    problems = []
    if mode != "token":
        problems.append(f"{base}.authOptions.mode: expected token, but got {mode!r} instead")
    for path, value in _walk(doc):
        key = path.rsplit(".", 1)[-1]
        if (key == "serviceType" or (key == "type" and ".headService." in path)) and value in EXPOSING:
            problems.append(f"{path}: {value} exposes the head's ports beyond the cluster; use kubectl port-forward")
        elif key == "enableIngress" and value is True:
            problems.append(f"{path}: an ingress exposes the dashboard and job API beyond the cluster")
        elif (key == "hostNetwork" and value is True) or key == "hostPort":
            problems.append(f"{path}: the pod's ports would be open on the node's own address")
        elif key.endswith("]") and isinstance(value, dict) and value.get("name") == "RAY_AUTH_MODE":
            if value.get("value") != "token":
                problems.append(f"{path}.value: RAY_AUTH_MODE {value.get('value')!r} turns token auth off")
        elif key == "runtimeEnvYAML":  # the job's own environment
            mode = ((yaml.safe_load(value) or {}).get("env_vars") or {}).get("RAY_AUTH_MODE", "token")
            if mode != "token":
                problems.append(f"{path}: env_vars.RAY_AUTH_MODE {mode!r} turns token auth off for the job")
    return problems


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_keeps_token_auth_and_exposes_no_port(name):
    assert security_problems(_load(name)) == []


def test_the_security_checks_catch_what_kubernetes_would_let_through():
    """Each of these is a valid object for KubeRay's CRDs, and each is refused here with its key."""

    def head(doc):
        return doc["spec"]["rayClusterSpec"]["headGroupSpec"]

    def container(doc):
        return head(doc)["template"]["spec"]["containers"][0]

    cases = {
        "spec.rayClusterSpec.authOptions.mode": lambda d: d["spec"]["rayClusterSpec"]["authOptions"].update(
            mode="disabled"
        ),
        "spec.rayClusterSpec.authOptions.mode: expected token, but got None": lambda d: d["spec"]["rayClusterSpec"].pop(
            "authOptions"
        ),
        "spec.rayClusterSpec.headGroupSpec.serviceType": lambda d: head(d).update(serviceType="LoadBalancer"),
        "spec.rayClusterSpec.headGroupSpec.headService.spec.type": lambda d: head(d).update(
            headService={"spec": {"type": "NodePort"}}
        ),
        "spec.rayClusterSpec.headGroupSpec.enableIngress": lambda d: head(d).update(enableIngress=True),
        "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].ports[1].hostPort": lambda d: container(d)[
            "ports"
        ][1].update(hostPort=8265),
        "spec.rayClusterSpec.workerGroupSpecs[0].template.spec.hostNetwork": lambda d: d["spec"]["rayClusterSpec"][
            "workerGroupSpecs"
        ][0]["template"]["spec"].update(hostNetwork=True),
        "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].env[1].value": lambda d: container(d)[
            "env"
        ].append({"name": "RAY_AUTH_MODE", "value": "disabled"}),
        "spec.runtimeEnvYAML": lambda d: d["spec"].update(runtimeEnvYAML="env_vars:\n  RAY_AUTH_MODE: disabled\n"),
    }
    for key, change in cases.items():
        bad = copy.deepcopy(_load("rayjob.yaml"))
        change(bad)
        assert validate_object(bad, _schemas()) == [], key
        problems = security_problems(bad)
        assert len(problems) == 1 and problems[0].startswith(key), (key, problems)


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_is_valid_against_kuberays_crds(name):
    assert validate_object(_load(name), _schemas()) == []


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_can_scale_and_runs_the_real_entrypoint(name):
    doc = _load(name)
    assert scaling_problems(doc) == []
    job = _job_spec(doc)
    if doc["kind"] == "RayCronJob":
        assert len(doc["spec"]["schedule"].split()) == 5
    argv = shlex.split(job["entrypoint"])
    assert argv[:2] == ["python", "jobs/restore_bucket.py"]
    from jobs.restore_bucket import parse_args

    args = parse_args(argv[2:])  # flags it accepts, and a spec that exists in the image's working dir
    assert (ROOT / args.spec).exists() and not args.spec.is_absolute()
    assert "secret" not in (ROOT / "k8s" / name).read_text().lower()


def test_the_checks_catch_what_kubernetes_would_let_through():
    doc = _load("raycronjob.yaml")
    cluster = _job_spec(doc)["rayClusterSpec"]
    typo = copy.deepcopy(doc)
    _job_spec(typo)["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplica"] = 4
    _job_spec(typo)["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] = 3
    errors = validate_object(typo, _schemas())
    assert any("workerGroupSpecs[0].maxReplica: unknown field" in e for e in errors), errors
    assert any("containers[0].image: expected string" in e for e in errors), errors

    # The defect of issue 14: a group from 0 to 4 without the autoscaler never gets a worker.
    fixed = copy.deepcopy(doc)
    del _job_spec(fixed)["rayClusterSpec"]["enableInTreeAutoscaling"]
    problems = scaling_problems(fixed)
    assert any("enableInTreeAutoscaling is not true" in p for p in problems)
    assert any("no node that exists or that the autoscaler may add" in p for p in problems)
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # why: the head takes no work

    small = copy.deepcopy(doc)
    limits = _job_spec(small)["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    limits["resources"]["limits"]["nvidia.com/gpu"] = "0"
    assert any("fits one model actor" in p for p in scaling_problems(small))


def test_manifests_run_the_image_the_dockerfile_builds():
    """One image everywhere, built FROM Ray's GPU image of the manifests' rayVersion, which the project's
    Ray requirement accepts; the README says how to build and push that very tag."""
    from packaging.requirements import Requirement

    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(
        r"^FROM\s+rayproject/ray:(\d+\.\d+\.\d+)(-py3\d+)?-gpu(@sha256:[0-9a-f]{64})?\s*$", dockerfile, re.M
    )
    assert base, "the Dockerfile must build on rayproject/ray:<version>[-pyXY]-gpu"
    images, versions = set(), set()
    for name in MANIFESTS:
        cluster = _job_spec(_load(name))["rayClusterSpec"]
        versions.add(cluster["rayVersion"])
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            images.update(c["image"] for c in group["template"]["spec"]["containers"])
    assert versions == {base.group(1)}
    assert len(images) == 1
    (image,) = images
    assert not image.endswith(":latest"), "a moving tag: pods of one cluster could run different code"
    readme = (ROOT / "README.md").read_text()
    assert f"docker build -t {image} ." in readme and f"docker push {image}" in readme
    pyproject = (ROOT / "pyproject.toml").read_text()
    ray_req = Requirement(re.search(r'"(ray\[[^"]+)"', pyproject).group(1))
    assert ray_req.specifier.contains(base.group(1))
    assert "pip install" in dockerfile and "'.[pipeline]'" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"!dgunet", "!pipeline", "!jobs", "!pyproject.toml", "!README.md"} <= set(ignored)


def test_vendored_crds_name_their_release():
    readme = (CRDS.parent / "README.md").read_text()
    assert KUBERAY in readme
    for name in ("ray.io_rayjobs.yaml", "ray.io_rayclusters.yaml", "ray.io_raycronjobs.yaml"):
        assert (CRDS / name).exists() and name in readme


APP = {"app.kubernetes.io/name": "dgunet-restore"}  # the Ray pods' label, which the NetworkPolicy selects
POLICY = "networkpolicy.yaml"


def _groups(doc: dict):
    """``(dotted path, group)`` of the head group and each worker group."""
    base = "spec.jobTemplate.rayClusterSpec" if doc["kind"] == "RayCronJob" else "spec.rayClusterSpec"
    cluster = _job_spec(doc)["rayClusterSpec"]
    yield f"{base}.headGroupSpec", cluster["headGroupSpec"]
    for i, group in enumerate(cluster["workerGroupSpecs"]):
        yield f"{base}.workerGroupSpecs[{i}]", group


def hardening_problems(doc: dict) -> list[str]:
    """What would let a process in a Ray pod do more than Ray needs: a pod that may run as root, a container
    that may gain privileges or capabilities or write its root filesystem (Ray gets an emptyDir at /tmp), a
    pod without the label the NetworkPolicy selects. Each problem names its key."""
    problems = []
    for where, group in _groups(doc):
        template = group["template"]
        labels = (template.get("metadata") or {}).get("labels") or {}
        if any(labels.get(k) != v for k, v in APP.items()):
            problems.append(f"{where}.template.metadata.labels: expected {APP}, so that the NetworkPolicy applies")
        pod = template["spec"]
        if (pod.get("securityContext") or {}).get("runAsNonRoot") is not True:
            problems.append(f"{where}.template.spec.securityContext.runAsNonRoot: expected true")
        empty = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for i, container in enumerate(pod["containers"]):
            key = f"{where}.template.spec.containers[{i}]"
            context = container.get("securityContext") or {}
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{key}.securityContext.allowPrivilegeEscalation: expected false")
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{key}.securityContext.readOnlyRootFilesystem: expected true")
            if "ALL" not in (context.get("capabilities") or {}).get("drop", []):
                problems.append(f"{key}.securityContext.capabilities.drop: expected [ALL]")
            if not any(m["mountPath"] == "/tmp" and m["name"] in empty for m in container.get("volumeMounts", [])):
                problems.append(f"{key}.volumeMounts: expected an emptyDir at /tmp, where Ray writes")
    autoscaler = _job_spec(doc)["rayClusterSpec"].get("autoscalerOptions") or {}
    if (autoscaler.get("securityContext") or {}).get("allowPrivilegeEscalation") is not False:
        problems.append("autoscalerOptions.securityContext.allowPrivilegeEscalation: expected false")
    return problems


def network_policy_problems(policy: dict) -> list[str]:
    """What would let pods other than the Ray cluster's own reach its ports: a policy that selects other pods
    or not Ingress, a rule open to every source or to addresses, or a rule for other pods on more than the
    job API's port (8265). Each problem names its key."""
    problems = []
    spec = policy["spec"]
    if policy["kind"] != "NetworkPolicy" or spec.get("podSelector") != {"matchLabels": APP}:
        problems.append(f"spec.podSelector: expected {{'matchLabels': {APP}}}, but got {spec.get('podSelector')!r}")
    if "Ingress" not in spec.get("policyTypes", []):
        problems.append("spec.policyTypes: expected Ingress")
    for i, rule in enumerate(spec.get("ingress", [])):
        sources = rule.get("from") or []
        if not sources:
            problems.append(f"spec.ingress[{i}].from: none, so every source may connect")
        for j, source in enumerate(sources):
            if "ipBlock" in source or "podSelector" not in source:
                problems.append(f"spec.ingress[{i}].from[{j}]: expected pods, but got {sorted(source)}")
        own = sources == [{"podSelector": {"matchLabels": APP}}]
        ports = sorted(p.get("port") for p in rule.get("ports") or [{"port": "every"}])
        if not own and ports != [8265]:
            problems.append(f"spec.ingress[{i}].ports: expected [8265] for pods not of the cluster, but got {ports}")
    return problems


@pytest.mark.parametrize("name", MANIFESTS)
def test_ray_pods_run_unprivileged_with_a_read_only_root(name):
    assert hardening_problems(_load(name)) == []


def test_the_network_policy_lets_in_the_clusters_own_pods_only():
    policy = _load(POLICY)
    assert network_policy_problems(policy) == []
    for name in MANIFESTS:  # it selects the pods the manifests make, and nothing in them is left out
        for _, group in _groups(_load(name)):
            labels = group["template"]["metadata"]["labels"]
            assert all(labels.get(k) == v for k, v in policy["spec"]["podSelector"]["matchLabels"].items())


def test_the_hardening_checks_name_what_kubernetes_would_let_through():
    def head(doc):
        return doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]

    def context(doc):
        return head(doc)["spec"]["containers"][0]["securityContext"]

    cases = {
        "spec.rayClusterSpec.headGroupSpec.template.metadata.labels": lambda d: head(d).pop("metadata"),
        "spec.rayClusterSpec.headGroupSpec.template.spec.securityContext.runAsNonRoot": lambda d: head(d)["spec"][
            "securityContext"
        ].update(runAsNonRoot=False),
        "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].securityContext.allowPrivilegeEscalation": (
            lambda d: context(d).pop("allowPrivilegeEscalation")
        ),
        "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].securityContext.readOnlyRootFilesystem": (
            lambda d: context(d).update(readOnlyRootFilesystem=False)
        ),
        "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].securityContext.capabilities": (
            lambda d: context(d).pop("capabilities")
        ),
        "spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].volumeMounts": lambda d: head(d)["spec"][
            "containers"
        ][0].pop("volumeMounts"),
        "autoscalerOptions.securityContext": lambda d: d["spec"]["rayClusterSpec"]["autoscalerOptions"].pop(
            "securityContext"
        ),
    }
    for key, change in cases.items():
        bad = copy.deepcopy(_load("rayjob.yaml"))
        change(bad)
        assert validate_object(bad, _schemas()) == [], key
        problems = hardening_problems(bad)
        assert len(problems) == 1 and problems[0].startswith(key), (key, problems)

    open_rules = {
        "spec.podSelector": lambda p: p["spec"].update(podSelector={}),
        "spec.policyTypes": lambda p: p["spec"].update(policyTypes=["Egress"]),
        "spec.ingress[0].from: none": lambda p: p["spec"]["ingress"][0].pop("from"),
        "spec.ingress[1].from[1]": lambda p: p["spec"]["ingress"][1]["from"][1].pop("podSelector"),
        "spec.ingress[1].from[2]": lambda p: p["spec"]["ingress"][1]["from"].append({"ipBlock": {"cidr": "0.0.0.0/0"}}),
        "spec.ingress[1].ports": lambda p: p["spec"]["ingress"][1]["ports"].append({"protocol": "TCP", "port": 6379}),
    }
    for key, change in open_rules.items():
        bad = copy.deepcopy(_load(POLICY))
        change(bad)
        problems = network_policy_problems(bad)
        assert problems and problems[0].startswith(key), (key, problems)  # an empty `from` is also any port
