"""Static checks of docker/*.Dockerfile (no Docker engine is needed, or used).

Each image is multi-stage, ends as a fixed non-root user, and builds what exists in
this repository: the Cargo packages and binaries it names, the browser app's
package.json, the pinned Claude Code CLI version, and the paths the chart and the
operator expect inside the images.

Run: python3 -m unittest discover -s docker -p 'test_*.py'
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
import unittest
from dataclasses import dataclass, field
from pathlib import Path

DOCKER = Path(__file__).resolve().parent
REPO = DOCKER.parent


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(path: Path) -> list[Stage]:
    """The stages of a Dockerfile: continuation lines joined, comments dropped."""
    logical, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, f"{path.name}: dangling line continuation"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"{path.name}: {keyword} before FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def copy_args(args: str) -> tuple[dict[str, str], list[str], str]:
    """A COPY's flags, sources and destination."""
    words = shlex.split(args)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return flags, words[:-1], words[-1]


def workspace_binaries() -> dict[str, set[str]]:
    """Cargo workspace packages and their binaries."""
    root = tomllib.loads((REPO / "Cargo.toml").read_text())
    packages = {}
    for member in root["workspace"]["members"]:
        manifest = tomllib.loads((REPO / member / "Cargo.toml").read_text())
        name = manifest["package"]["name"]
        bins = {b["name"] for b in manifest.get("bin", [])}
        if (REPO / member / "src" / "main.rs").exists() and not manifest.get("bin"):
            bins.add(name)
        packages[name] = bins
    return packages


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str) -> bool:
    return any(
        fnmatch.fnmatch(path, pattern.removeprefix("**/"))
        or fnmatch.fnmatch(path, pattern)
        or path.startswith(pattern.rstrip("/") + "/")
        for pattern in dockerignore()
    )


IMAGES = {
    # file: (package, binary, final user, runtime base)
    "router.Dockerfile": ("router", "router", "10001:10001", "debian:bookworm-slim"),
    "operator.Dockerfile": ("operator", "operator", "65532:65532", "gcr.io/distroless/cc-debian12:nonroot"),
    "sandbox.Dockerfile": ("sandbox", "sandbox", "1000:1000", "debian:bookworm-slim"),
}


class DockerfileTest(unittest.TestCase):
    def test_images_are_multi_stage_and_end_as_a_non_root_user(self):
        for file, (_, _, user, runtime) in IMAGES.items():
            with self.subTest(file=file):
                stages = parse(DOCKER / file)
                self.assertGreaterEqual(len(stages), 2)
                final = stages[-1]
                self.assertEqual(final.base, runtime)
                # Every build stage is named, every --from names one of them.
                names = [s.name for s in stages[:-1]]
                self.assertNotIn(None, names)
                for stage in stages:
                    for args in stage.all("COPY"):
                        flags, _, _ = copy_args(args)
                        if "from" in flags:
                            self.assertIn(flags["from"], names, args)
                users = final.all("USER")
                self.assertTrue(users, "the final stage sets no USER")
                last_user = final.instructions[-1 - [kw for kw, _ in reversed(final.instructions)].index("USER")]
                self.assertEqual(last_user[1], user)
                uid = user.split(":")[0]
                self.assertTrue(uid.isdigit() and int(uid) > 0, user)
                # Nothing after the USER switches back.
                later = final.instructions[final.instructions.index(last_user) + 1:]
                self.assertNotIn("USER", [kw for kw, _ in later])

    def test_cargo_builds_name_real_packages_and_binaries(self):
        packages = workspace_binaries()
        self.assertIn("sandbox", packages)
        for file, (package, binary, _, _) in IMAGES.items():
            with self.subTest(file=file):
                stages = parse(DOCKER / file)
                builds = [
                    args for stage in stages for args in stage.all("RUN") if "cargo build" in args
                ]
                self.assertEqual(len(builds), 1)
                words = shlex.split(builds[0])
                self.assertIn("--release", words)
                self.assertIn("--locked", words)
                built_package = words[words.index("-p") + 1]
                built_bin = words[words.index("--bin") + 1]
                self.assertEqual((built_package, built_bin), (package, binary))
                self.assertIn(built_package, packages)
                self.assertIn(built_bin, packages[built_package])
                self.assertIn(f"target/release/{built_bin}", builds[0])
                self.assertTrue(any(s.base == "rust:1-bookworm" for s in stages))
                final = stages[-1]
                self.assertEqual(final.all("ENTRYPOINT"), [f'["/usr/local/bin/{binary}"]'])
                copied = [copy_args(a)[2] for a in final.all("COPY")]
                self.assertIn(f"/usr/local/bin/{binary}", copied)

    def test_copied_build_context_paths_exist_and_are_not_ignored(self):
        for file in IMAGES:
            for stage in parse(DOCKER / file):
                for args in stage.all("COPY"):
                    flags, sources, _ = copy_args(args)
                    if "from" in flags:
                        continue
                    for source in sources:
                        with self.subTest(file=file, source=source):
                            self.assertTrue((REPO / source).exists(), source)
                            if source not in (".", "./"):
                                self.assertFalse(ignored(source.rstrip("/")), source)

    def test_dockerignore_keeps_build_output_and_tools_out(self):
        for path in ("target", "router/web/node_modules", ".tools", "data", "router/web/dist"):
            self.assertTrue(ignored(path), path)
        for path in ("Cargo.toml", "Cargo.lock", "router/web/package.json", "migrations", "crds"):
            self.assertFalse(ignored(path), path)

    def test_router_image_serves_the_built_web_app(self):
        stages = parse(DOCKER / "router.Dockerfile")
        web = next(s for s in stages if s.name == "web")
        self.assertEqual(web.base, "node:22-bookworm-slim")
        runs = " && ".join(web.all("RUN"))
        self.assertIn("npm ci", runs)
        self.assertIn("npm run build", runs)
        package = (REPO / "router/web/package.json").read_text()
        self.assertRegex(package, r'"build"\s*:')
        # Vite's default outDir (dist) is the one copied.
        self.assertNotIn("outDir", (REPO / "router/web/vite.config.ts").read_text())
        final = stages[-1]
        copies = [copy_args(a) for a in final.all("COPY")]
        self.assertIn(({"from": "web"}, ["/src/router/web/dist"], "/usr/share/jarvis/web"), copies)
        self.assertIn("JARVIS_WEB_DIR=/usr/share/jarvis/web", " ".join(final.all("ENV")))
        self.assertIn("ca-certificates", " ".join(final.all("RUN")))
        # The default text-to-speech engine (JARVIS_TTS_ENGINE=espeak) runs these.
        for package in ("espeak-ng", "opus-tools"):
            self.assertIn(package, " ".join(final.all("RUN")))

    def test_sandbox_image_matches_the_operator_and_the_pinned_cli(self):
        stages = parse(DOCKER / "sandbox.Dockerfile")
        pinned = re.search(r'^CLAUDE_VERSION="([^"]+)"', (REPO / "scripts/install-claude.sh").read_text(), re.M)
        claude = next(s for s in stages if s.name == "claude")
        self.assertIn(f"ARG CLAUDE_VERSION={pinned.group(1)}", f"ARG {claude.all('ARG')[0]}")
        self.assertIn("@anthropic-ai/claude-code@${CLAUDE_VERSION}", " ".join(claude.all("RUN")))
        final = stages[-1]
        runs = " ".join(final.all("RUN"))
        for package in ("python3", "python3-pip", "python3-venv", "espeak-ng", "git", "curl", "ca-certificates"):
            self.assertRegex(runs, rf"\b{re.escape(package)}(\s|$)")
        # Node.js and npm for the agent come from the CLI's node stage, not Debian's
        # (older) packages; npm and npx are on PATH.
        self.assertNotIn("nodejs", runs)
        copies = [copy_args(a) for a in final.all("COPY")]
        self.assertIn(({"from": "claude"}, ["/usr/local/bin/node"], "/usr/local/bin/node"), copies)
        self.assertIn(
            ({"from": "claude"}, ["/usr/local/lib/node_modules/npm"], "/usr/local/lib/node_modules/npm"), copies
        )
        self.assertIn("ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm", runs)
        # The operator's default --claude-bin and the chart's sandbox.claudeBin.
        operator_config = (REPO / "operator/src/config.rs").read_text()
        self.assertIn('default_value = "/usr/local/bin/claude"', operator_config)
        self.assertIn("claudeBin: /usr/local/bin/claude", (REPO / "charts/jarvis/values.yaml").read_text())
        self.assertIn("ln -s /opt/claude/claude /usr/local/bin/claude", runs)
        self.assertIn(
            ({"from": "claude"}, ["/opt/claude/node_modules/@anthropic-ai/claude-code/bin/claude.exe"], "/opt/claude/claude"),
            [copy_args(a) for a in final.all("COPY")],
        )
        # The operator's pod runs `sandbox` from PATH as --sandbox-uid (1000).
        self.assertIn('command: Some(vec!["sandbox".to_owned()])', (REPO / "operator/src/controller/build/pod.rs").read_text())
        self.assertIn("default_value_t = 1000", operator_config)
        self.assertIn("uid: 1000", (REPO / "charts/jarvis/values.yaml").read_text())
        self.assertEqual(final.all("WORKDIR"), ["/workspace"])


if __name__ == "__main__":
    unittest.main()
