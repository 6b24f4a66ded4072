"""deploy/ is what an operator runs: every file must parse, validate and tell the truth.

- Kubernetes manifests against the Kubernetes JSON schemas (kubernetes-validate, offline,
  strict: an unknown field is an error);
- the Kamailio config through `kamailio -c` (its own parser), with the settings it reads from
  the environment, and the ConfigMap copy of it unchanged;
- the Containerfiles for the instructions they must have;
- the systemd units parsed, with their required keys, and `systemd-analyze verify`;
- every CALLBRIDGE_* name in deploy/ is a real setting (config.schema), every Kamailio
  variable set anywhere is one the config reads.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from callbridge.config.schema import all_fields, env_name

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
KAMAILIO_CFG = DEPLOY / "kamailio" / "kamailio.cfg"
SYSTEMD = DEPLOY / "systemd"
K8S_VERSION = "1.30.0"

# ---------------------------------------------------------------------------- helpers


def manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def all_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in manifests():
        for doc in documents(path):
            yield path, doc


def find(kind: str, name: str) -> dict[str, Any]:
    for _, doc in all_documents():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in deploy/k8s")


def unit_sections(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit as {section: [(key, value), ...]}: keys may repeat (Environment=),
    which configparser refuses, so this is the small parser systemd's format needs."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        assert current is not None, f"{path}:{n}: a setting before any [section]"
        assert "=" in line, f"{path}:{n}: not KEY=VALUE: {raw!r}"
        key, value = line.split("=", 1)
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(sections: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in sections.get(section, []) if k == key]


def env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def kamailio_variables() -> set[str]:
    """The environment variables deploy/kamailio/kamailio.cfg reads (#!trydefenv[s])."""
    return set(re.findall(r"^#!trydefenvs? (\w+)", KAMAILIO_CFG.read_text(), re.M))


# ---------------------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("path", manifests(), ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schema(path: Path) -> None:
    docs = documents(path)
    assert docs, f"{path} holds no resource"
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{path.name} {doc.get('kind')}: {where}: {exc.message}")


def test_validator_rejects_a_broken_manifest() -> None:
    """The check above can fail: a misspelt field and a wrong type are both caught."""
    doc = find("StatefulSet", "callbridge")
    broken = yaml.safe_load(yaml.safe_dump(doc))
    broken["spec"]["template"]["spec"]["hostNetwrk"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(doc))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == sorted(p.name for p in manifests())


def test_gateway_statefulset_runs_on_the_host_network_with_its_own_identity() -> None:
    sts = find("StatefulSet", "callbridge")
    pod = sts["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    # one worker per node: host ports would collide otherwise
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
    (gw,) = pod["containers"]
    env = {e["name"]: e for e in gw["env"]}
    assert env["CALLBRIDGE_STORE_GATEWAY_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.name"
    )
    assert env["CALLBRIDGE_SIP_PUBLIC_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "status.hostIP"
    )
    assert env["CALLBRIDGE_STORE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "callbridge-db"
    settings = find("ConfigMap", "callbridge-settings")["data"]
    assert int(settings["CALLBRIDGE_RTP_PORT_MIN"]) < int(settings["CALLBRIDGE_RTP_PORT_MAX"])
    assert gw["ports"][0]["containerPort"] == int(settings["CALLBRIDGE_SIP_PORT"])
    assert "doctor" in gw["readinessProbe"]["exec"]["command"]
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_kamailio_configmap_is_the_shipped_config_and_lists_every_gateway_pod() -> None:
    data = find("ConfigMap", "kamailio-config")["data"]
    assert data["kamailio.cfg"] == KAMAILIO_CFG.read_text(), (
        "deploy/k8s/kamailio-config.yaml is stale: regenerate it from deploy/kamailio/kamailio.cfg"
    )
    sts = find("StatefulSet", "callbridge")
    port = find("ConfigMap", "callbridge-settings")["data"]["CALLBRIDGE_SIP_PORT"]
    service = sts["spec"]["serviceName"]
    ns = sts["metadata"]["namespace"]
    expected = [
        f"1 sip:{sts['metadata']['name']}-{i}.{service}.{ns}.svc.cluster.local:{port} 0 0"
        for i in range(sts["spec"]["replicas"])
    ]
    listed = [ln for ln in data["dispatcher.list"].splitlines() if not ln.startswith("#")]
    assert listed == expected
    find("Service", service)  # the headless Service that gives the pods those names


def test_kamailio_deployment_mounts_the_config_and_sets_only_known_variables() -> None:
    dep = find("Deployment", "kamailio")
    (kam,) = dep["spec"]["template"]["spec"]["containers"]
    cmd = kam["command"]
    assert cmd[cmd.index("-f") + 1].startswith(kam["volumeMounts"][0]["mountPath"])
    names = {e["name"] for e in kam["env"]} - {"HOST_IP"}
    assert names <= kamailio_variables(), names - kamailio_variables()


# ---------------------------------------------------------------------------- Kamailio


def test_kamailio_config_passes_kamailio_check(tmp_path: Path) -> None:
    assert shutil.which("kamailio"), "kamailio is not installed (scripts/test.sh installs it)"
    ds = tmp_path / "dispatcher.list"
    ds.write_text((DEPLOY / "kamailio" / "dispatcher.list").read_text())
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DS_LIST": str(ds),
           "CTL_SOCK": f"unix:{tmp_path / 'ctl'}", "LB_LISTEN": "udp:127.0.0.1:5060"}  # fmt: skip
    for extra in ({}, {"LB_ADVERTISE": "203.0.113.10:5060", "DS_PING_S": "2"}):
        done = subprocess.run(
            ["kamailio", "-c", "-f", str(KAMAILIO_CFG)],
            env={**env, **extra}, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    # ... and the check can fail: a typo in a function name is refused
    bad = tmp_path / "bad.cfg"
    bad.write_text(KAMAILIO_CFG.read_text().replace("ds_select_dst(", "ds_select_dest("))
    done = subprocess.run(
        ["kamailio", "-c", "-f", str(bad)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0


def test_kamailio_config_has_the_balancing_rules() -> None:
    cfg = KAMAILIO_CFG.read_text()
    assert 'ds_select_dst("1", "0")' in cfg  # hash over the Call-ID
    assert "record_route()" in cfg and "loose_route()" in cfg
    assert re.search(r'"ds_probing_mode", 1\)', cfg)
    assert '"ds_ping_interval", DS_PING_S)' in cfg
    codes = re.search(r'"ds_ping_reply_codes", "([^"]*)"', cfg)
    assert codes is not None
    # a draining worker answers OPTIONS with 503: that must not count as alive
    assert "503" not in codes.group(1) and "class=5" not in codes.group(1)
    assert 't_check_status("5[0-9][0-9]")' in cfg and "ds_next_dst()" in cfg


# ---------------------------------------------------------------------------- container


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_containerfile_has_what_the_image_needs() -> None:
    ins = instructions(DEPLOY / "container" / "Containerfile")
    kinds = [k for k, _ in ins]
    assert ins[0][0] == "FROM" and re.match(r"debian:\w+-slim$", ins[0][1]), ins[0]
    assert {"RUN", "COPY", "USER", "HEALTHCHECK", "ENTRYPOINT", "WORKDIR"} <= set(kinds)
    users = [a for k, a in ins if k == "USER"]
    assert users[-1] not in ("root", "0"), users
    assert kinds.index("USER") < kinds.index("ENTRYPOINT")
    health = next(a for k, a in ins if k == "HEALTHCHECK")
    assert "callbridge" in health and '"doctor"' in health
    entry = next(a for k, a in ins if k == "ENTRYPOINT")
    assert "scripts/run.sh" in entry
    assert any(k == "COPY" and a.startswith("scripts") for k, a in ins)
    # the build writes run.sh's install stamp, so run.sh does not reinstall at start
    stamp = re.search(r'STAMP="\$VENV/([^"]+)"', (REPO / "scripts" / "run.sh").read_text())
    assert stamp is not None
    assert any(k == "RUN" and stamp.group(1) in a for k, a in ins)


def test_kamailio_containerfile_ships_the_deploy_config() -> None:
    ins = instructions(DEPLOY / "container" / "Containerfile.kamailio")
    copies = [a for k, a in ins if k == "COPY"]
    assert any(a.startswith("deploy/kamailio/kamailio.cfg ") for a in copies), copies
    assert [a for k, a in ins if k == "USER"][-1] == "kamailio"


# ---------------------------------------------------------------------------- systemd


def test_worker_unit_has_the_required_keys() -> None:
    unit = unit_sections(SYSTEMD / "callbridge@.service")
    assert values(unit, "Unit", "Description")
    (start,) = values(unit, "Service", "ExecStart")
    assert start.split()[0].endswith("/callbridge") and start.split()[1:] == ["serve"]
    assert values(unit, "Service", "User") == ["callbridge"]
    files = values(unit, "Service", "EnvironmentFile")
    assert any("%i" in f for f in files), "each instance needs its own ports file"
    env = dict(v.split("=", 1) for v in values(unit, "Service", "Environment"))
    assert "%i" in env["CALLBRIDGE_STORE_GATEWAY_ID"] and "%i" in env["CALLBRIDGE_DATA_DIR"]
    assert values(unit, "Install", "WantedBy") == ["multi-user.target"]


def test_worker_env_files_do_not_share_ports_and_match_the_dispatcher_list() -> None:
    workers = sorted(SYSTEMD.glob("worker-*.env"))
    assert len(workers) >= 2
    envs = [env_file(p) for p in workers]
    sip = [int(e["CALLBRIDGE_SIP_PORT"]) for e in envs]
    assert len(set(sip)) == len(sip)
    ranges = sorted(
        (int(e["CALLBRIDGE_RTP_PORT_MIN"]), int(e["CALLBRIDGE_RTP_PORT_MAX"])) for e in envs
    )
    for (_, hi), (lo, _) in itertools.pairwise(ranges):
        assert hi < lo, f"RTP ranges overlap: {ranges}"
    listed = re.findall(r"^1 sip:127\.0\.0\.1:(\d+) ", (DEPLOY / "kamailio" / "dispatcher.list").read_text(), re.M)  # fmt: skip
    assert sorted(int(p) for p in listed) == sorted(sip)


def test_kamailio_dropin_sets_only_variables_the_config_reads() -> None:
    dropin = unit_sections(SYSTEMD / "kamailio.service.d" / "callbridge.conf")
    env = dict(v.split("=", 1) for v in values(dropin, "Service", "Environment"))
    assert "CFGFILE" in env  # Debian's kamailio.service runs `kamailio -f $CFGFILE`
    assert set(env) - {"CFGFILE"} <= kamailio_variables()


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:  # not every machine has systemd; the parsing tests above still ran
        return
    # ExecStart must exist for verify: point it at this checkout's callbridge
    here = REPO / ".venv" / "bin" / "callbridge"
    exe = here if here.exists() else Path(shutil.which("callbridge") or "/bin/true")
    text = (SYSTEMD / "callbridge@.service").read_text()
    (tmp_path / "callbridge@1.service").write_text(
        text.replace("/opt/callbridge/.venv/bin/callbridge", str(exe))
    )
    units = [tmp_path / "callbridge@1.service"]
    debian_kamailio = Path("/lib/systemd/system/kamailio.service")
    if debian_kamailio.exists():
        shutil.copy(debian_kamailio, tmp_path / "kamailio.service")
        shutil.copytree(SYSTEMD / "kamailio.service.d", tmp_path / "kamailio.service.d")
        units.append(tmp_path / "kamailio.service")
    done = subprocess.run(
        [tool, "verify", *map(str, units)], capture_output=True, text=True, timeout=60, check=False
    )
    complaints = [
        ln for ln in (done.stdout + done.stderr).splitlines()
        if "Unknown" in ln or "ignoring" in ln or "Failed" in ln or "not executable" in ln
    ]  # fmt: skip
    assert done.returncode == 0 and not complaints, done.stdout + done.stderr


# ---------------------------------------------------------------------------- honesty


def test_every_callbridge_setting_named_in_deploy_exists() -> None:
    known = {env_name(dotted) for dotted, _ in all_fields()} | {"CALLBRIDGE_CONFIG"}
    used: dict[str, set[str]] = {}
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            for name in re.findall(r"\bCALLBRIDGE_[A-Z0-9_]+\b", path.read_text()):
                used.setdefault(name, set()).add(str(path.relative_to(DEPLOY)))
    assert used, "no settings found: the scan is broken"
    unknown = {n: sorted(f) for n, f in used.items() if n not in known}
    assert not unknown, f"settings that do not exist (see config/schema.py): {unknown}"


def test_readme_names_every_deploy_file() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.name != "README.md":
            rel = str(path.relative_to(DEPLOY))
            assert rel in readme or path.name in readme, f"deploy/README.md does not mention {rel}"
