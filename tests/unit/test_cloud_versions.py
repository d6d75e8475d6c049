"""Pinning and idempotence rules of the cluster roles, checked on the files themselves."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml
from cloud_render import playbook

REPO = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO / "playbooks/group_vars/all/versions.yml"
VERSIONS = yaml.safe_load(VERSIONS_FILE.read_text())
# Every role that is not part of the local testbed belongs to the cloud cluster.
CLUSTER_ROLES = sorted(
    p.name for p in (REPO / "roles").iterdir() if p.is_dir() and not p.name.startswith("local_")
)
PLAYBOOKS = [REPO / "playbooks/site.yml", *sorted((REPO / "playbooks").glob("cloud_*.yml"))]
assert len(PLAYBOOKS) >= 3, "the cloud playbooks moved: PLAYBOOKS would check nothing"
SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
# Pins that could not be verified offline when they were written. Each entry says why; the test
# below fails as soon as the entry is pinned properly, so the list can only shrink.
NOT_YET_LITERAL = {
    ("checksum", "istio"): "verified at download against Istio's published .sha256 file",
    ("checksum", "prometheus"): "verified at download against the release's sha256sums.txt",
    (
        "digest",
        "merbridge",
    ): "ghcr.io digest not resolvable offline; the merbridge role refuses to deploy without it",
}
UNPINNED = re.compile(r"(/|:|=|\b)(latest|master|main|stable)(\b|/|\.txt)", re.IGNORECASE)


def role_files(pattern: str) -> list[Path]:
    files: list[Path] = []
    for role in CLUSTER_ROLES:
        files += sorted((REPO / "roles" / role).glob(pattern))
    return files


def test_every_download_has_a_literal_sha256_for_its_pinned_version() -> None:
    versions, checksums = VERSIONS["meshlab_versions"], VERSIONS["meshlab_checksums"]
    assert VERSIONS["meshlab_artifacts"], "no artifacts?"
    for name, artifact in VERSIONS["meshlab_artifacts"].items():
        version = versions[artifact["version"]]
        assert version in checksums[name], f"{name}: no checksum for pinned version {version}"
        checksum = checksums[name][version]
        if ("checksum", name) in NOT_YET_LITERAL:
            assert not SHA256.match(checksum), f"{name} is pinned now: drop it from NOT_YET_LITERAL"
            assert checksum.startswith("sha256:") or checksum.startswith("{{ 'sha256:'"), name
        else:
            assert SHA256.match(checksum), f"{name}: {checksum!r} is not sha256:<64 hex>"


def test_every_checksum_table_is_keyed_by_a_pinned_version() -> None:
    pinned = set(VERSIONS["meshlab_versions"].values())
    for name, table in VERSIONS["meshlab_checksums"].items():
        assert set(table) <= pinned, (
            f"{name}: checksums for versions nobody pins: {set(table) - pinned}"
        )


def test_images_are_pinned_by_tag_and_mutable_ones_by_digest() -> None:
    for name, image in VERSIONS["meshlab_images"].items():
        assert image["tag"] and not UNPINNED.search(str(image["tag"])), name
        if image.get("mutable_tags"):
            if ("digest", name) in NOT_YET_LITERAL:
                assert not SHA256.match(image["digest"] or ""), (
                    f"{name} is pinned now: drop it from NOT_YET_LITERAL"
                )
            else:
                assert SHA256.match(image["digest"] or ""), f"{name}: mutable tags need a digest"


def test_apt_repositories_are_pinned_by_key_fingerprint_and_version() -> None:
    for name, repo in VERSIONS["meshlab_apt_repositories"].items():
        assert re.fullmatch(r"[0-9A-F]{40}", repo["key_fingerprint"]), name
        assert repo["version"] in VERSIONS["meshlab_versions"], name


def test_no_url_or_image_points_at_a_moving_target() -> None:
    url = re.compile(r"""(https?://[^\s"'<>]+|[a-z0-9.-]+\.(io|com|org)/[^\s"'<>]+)""")
    files = [VERSIONS_FILE, *PLAYBOOKS, *role_files("**/*.yml"), *role_files("**/*.j2")]
    offenders = []
    for path in files:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for match in url.finditer(line):
                if UNPINNED.search(match.group(0)):
                    offenders.append(f"{path.relative_to(REPO)}:{lineno}: {match.group(0)}")
            if re.search(r"image:.*:latest", line) or "imagePullPolicy: Always" in line:
                offenders.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    assert offenders == []


def test_the_moving_target_check_can_fail() -> None:
    assert UNPINNED.search("https://github.com/x/y/releases/latest/download/z")
    assert UNPINNED.search(
        "https://raw.githubusercontent.com/merbridge/merbridge/main/deploy/all-in-one.yaml"
    )
    assert UNPINNED.search("https://dl.k8s.io/release/stable.txt")
    assert not UNPINNED.search(
        "https://github.com/projectcalico/calico/raw/v3.30.6/manifests/crds.yaml"
    )


def iter_tasks(node: Any) -> list[dict[str, Any]]:
    """Every task dict in a task list, play or handler list, blocks included."""
    found: list[dict[str, Any]] = []
    if isinstance(node, list):
        for item in node:
            found += iter_tasks(item)
    elif isinstance(node, dict):
        for key in ("block", "rescue", "always", "tasks", "pre_tasks", "post_tasks", "handlers"):
            if key in node:
                found += iter_tasks(node[key])
        if not any(k in node for k in ("block", "hosts", "import_playbook")):
            found.append(node)
    return found


COMMANDS = {"ansible.builtin.command", "ansible.builtin.shell", "command", "shell"}


def command_tasks_without_change_report(paths: list[Path]) -> list[str]:
    bad = []
    for path in paths:
        for task in iter_tasks(yaml.safe_load(path.read_text())):
            module = next((k for k in task if k in COMMANDS), None)
            if module is None:
                continue
            args = task[module] if isinstance(task[module], dict) else {}
            if "changed_when" not in task and "creates" not in args and "removes" not in args:
                bad.append(f"{path}: {task.get('name')}")
    return bad


def test_every_command_task_reports_change_honestly() -> None:
    paths = PLAYBOOKS + role_files("tasks/*.yml") + role_files("handlers/*.yml")
    assert len(paths) > 20
    assert command_tasks_without_change_report(paths) == []


def test_the_command_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("- name: Count rules\n  ansible.builtin.command:\n    argv: [iptables-save]\n")
    good = tmp_path / "good.yml"
    good.write_text(bad.read_text() + "  changed_when: false\n")
    assert command_tasks_without_change_report([bad]) == [f"{bad}: Count rules"]
    assert command_tasks_without_change_report([good]) == []


def all_strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in all_strings(k) + all_strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in all_strings(v)]
    return []


def test_no_jinja_expression_carries_a_doubled_backslash() -> None:
    # In a folded (>-) scalar YAML keeps "\\d" as two characters and ansible-core 2.19's Jinja
    # no longer collapses them: the regex then matches a literal backslash (a real bug found here).
    files = [VERSIONS_FILE, *PLAYBOOKS, *role_files("**/*.yml")]
    bad = [
        f"{p.relative_to(REPO)}: {s[:60]}"
        for p in files
        for s in all_strings(yaml.safe_load(p.read_text()))
        if "{{" in s and "\\\\" in s
    ]
    assert bad == []
    folded = yaml.safe_load("x: >-\n  {{ a | regex_replace('\\\\d', '') }}\n")["x"]
    assert "\\\\" in folded  # what the check looks for is what YAML produces


def test_every_role_has_argument_specs_covering_its_prefixed_defaults() -> None:
    for role in CLUSTER_ROLES:
        root = REPO / "roles" / role
        specs = yaml.safe_load((root / "meta/argument_specs.yml").read_text())["argument_specs"]
        documented = set(specs["main"]["options"])
        defaults = yaml.safe_load((root / "defaults/main.yml").read_text()) or {}
        for name in defaults:
            assert name.startswith(f"{role}_"), f"{role}: default {name} lacks the role prefix"
        assert set(defaults) <= documented, (
            f"{role}: undocumented inputs {set(defaults) - documented}"
        )


# ---- one download role for the six cloud roles --------------------------------------------------

DOWNLOADERS = ("calico", "containerd", "istio", "kubernetes", "monitoring", "node_exporter")


def test_every_cloud_download_goes_through_the_download_role() -> None:
    for role in CLUSTER_ROLES:
        for path in sorted((REPO / f"roles/{role}/tasks").glob("*.yml")):
            tasks = iter_tasks(yaml.safe_load(path.read_text()) or [])
            uses = [
                t
                for t in tasks
                if t.get("ansible.builtin.include_role", {}).get("name") == "download"
            ]
            direct = [t["name"] for t in tasks if "ansible.builtin.get_url" in t]
            assert role == "download" or direct == [], f"{path}: {direct}"
            if role in DOWNLOADERS and uses:
                for task in uses:
                    for item in task["vars"]["download_files"]:
                        assert item.get("checksum") or item.get("unverified_because"), path
    using = {
        role
        for role in CLUSTER_ROLES
        for path in (REPO / f"roles/{role}/tasks").glob("*.yml")
        if "name: download" in path.read_text()
    }
    assert using == set(DOWNLOADERS)


def _download_play(tmp_path: Path, files: list[dict[str, Any]]) -> Any:
    import grp
    import os
    import pwd

    me = {
        "download_owner": pwd.getpwuid(os.getuid()).pw_name,  # the role's default is root
        "download_group": grp.getgrgid(os.getgid()).gr_name,
        "download_retries": 0,
        "download_delay_s": 0,
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
    }
    play = [
        {
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": me,
            "tasks": [
                {
                    "name": "Download",
                    "ansible.builtin.include_role": {"name": "download"},
                    "vars": {"download_files": files},
                }
            ],
        }
    ]
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump(play))
    return playbook("-i", "localhost,", str(path))


def test_the_download_role_verifies_and_refuses_the_unverified(tmp_path: Path) -> None:
    source = tmp_path / "artifact.tar"
    source.write_bytes(b"pinned bytes")
    digest = hashlib.sha256(b"pinned bytes").hexdigest()
    good = {"url": source.as_uri(), "dest": str(tmp_path / "got"), "checksum": f"sha256:{digest}"}
    proc = _download_play(tmp_path, [good])
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / "got").read_bytes() == b"pinned bytes"
    bad = {**good, "dest": str(tmp_path / "bad"), "checksum": "sha256:" + "0" * 64}
    proc = _download_play(tmp_path, [bad])
    assert proc.returncode != 0 and not (tmp_path / "bad").exists()
    unverified = {"url": source.as_uri(), "dest": str(tmp_path / "none")}
    proc = _download_play(tmp_path, [unverified])
    assert proc.returncode != 0 and "no sha256 checksum" in proc.stdout
    assert not (tmp_path / "none").exists()
