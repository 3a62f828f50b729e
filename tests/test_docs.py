"""The documentation as code: the site builds strictly, generated tables match the code, every
documented shell command runs (or, where it needs Azure, parses), and the `edge-training` command
installs and works from any folder."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest

import docs_gen
from components import config
from docs_gen import tables

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = docs_gen.documents(ROOT)
RUN, PARSE = "runnable", "runnable: parse"
MARKED_BLOCK = re.compile(
    r"(?:<!-- (?P<marker>[^>]*?) -->\n)?```(?P<language>bash|sh|shell|console)\n(?P<body>.*?)```", re.S
)
PLACEHOLDER = re.compile(r"<[A-Za-z][^<>\n]*>")
DEMO_OUTPUTS = ".edge-training/demo/"


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    marker: str | None
    body: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def shell_blocks() -> list[Block]:
    found = []
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        for match in MARKED_BLOCK.finditer(text):
            line = text.count("\n", 0, match.start("body"))
            found.append(Block(path, line, match["marker"], match["body"]))
    return found


BLOCKS = shell_blocks()


def _tracked() -> list[str]:
    """The checkout as a commit would have it, uncommitted work included (deleted files left out)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


TOP_LEVEL = frozenset(name.split("/", 1)[0] for name in _tracked())


# --- the site ---------------------------------------------------------------------------------------


def test_the_site_builds_strictly(tmp_path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    home = (tmp_path / "site" / "index.html").read_text()
    assert 'class="mermaid"' in home  # the README's diagrams, included once, drawn on the site
    assert "stack output --json" in (tmp_path / "site" / "train" / "index.html").read_text()


def _slug(heading: str) -> str:
    """Python-Markdown's toc slugify (markdown.extensions.toc.slugify), as the site's anchors."""
    text = unicodedata.normalize("NFKD", re.sub(r"`", "", heading)).encode("ascii", "ignore").decode()
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def _anchors(path: Path) -> set[str]:
    return {_slug(m[1]) for m in re.finditer(r"^#+ (.+?)\s*$", path.read_text(encoding="utf-8"), re.M)}


def test_the_readmes_links_name_pages_and_headings_that_exist() -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text(encoding="utf-8"))
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local, "the README links into docs/"
    for link in local:
        target, _, anchor = link.partition("#")
        path = ROOT / target
        assert path.is_file(), f"README links to {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(path), f"README links to {link}: {target} has no heading #{anchor}"


def test_the_readme_stays_a_short_entry_point() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


# --- generated regions -----------------------------------------------------------------------------


def test_every_generated_region_matches_the_code() -> None:
    stale = docs_gen.stale(ROOT)
    assert not stale, f"stale generated regions in {[str(p.relative_to(ROOT)) for p in stale]}: run scripts/docs"


def test_every_generator_has_a_region() -> None:
    used = {region.name for path in DOCUMENTS for region in docs_gen.regions(path, path.read_text())}
    assert used == set(docs_gen.GENERATORS)


def _docs_tree(tmp_path: Path, page: str) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# x\n")
    (tmp_path / "docs" / "page.md").write_text(page)
    return tmp_path


def test_a_stale_region_is_found_and_rewritten_between_its_markers(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(docs_gen.GENERATORS, "limits", lambda: "| a |\n| --- |\n| 1 |")  # type: ignore[index]
    page = "before\n<!-- BEGIN GENERATED limits -->\nold\n<!-- END GENERATED limits -->\nafter\n"
    root = _docs_tree(tmp_path, page)
    assert docs_gen.stale(root) == [root / "docs" / "page.md"]
    assert (root / "docs" / "page.md").read_text() == page  # --check writes nothing
    docs_gen.stale(root, write=True)
    assert (root / "docs" / "page.md").read_text() == (
        "before\n<!-- BEGIN GENERATED limits -->\n| a |\n| --- |\n| 1 |\n<!-- END GENERATED limits -->\nafter\n"
    )
    assert docs_gen.stale(root) == []


@pytest.mark.parametrize(
    ("page", "message"),
    [
        ("<!-- BEGIN GENERATED nosuch -->\n<!-- END GENERATED nosuch -->\n", "no generator named 'nosuch'"),
        ("<!-- BEGIN GENERATED cli-limits -->\nx\n", "has no END marker"),
        ("<!-- END GENERATED cli-limits -->\n", "END of 'cli-limits' without its BEGIN"),
        (
            "<!-- BEGIN GENERATED cli-limits -->\n<!-- BEGIN GENERATED config-reference -->\n",
            "starts inside region 'cli-limits'",
        ),
    ],
)
def test_a_broken_region_is_an_error_that_names_it(tmp_path, page, message) -> None:
    with pytest.raises(docs_gen.RegionError, match=re.escape(message)):
        docs_gen.stale(_docs_tree(tmp_path, page))


def test_scripts_docs_check_fails_on_a_stale_region(tmp_path, monkeypatch, capsys) -> None:
    from docs_gen import __main__ as command

    monkeypatch.setattr(command, "ROOT", _docs_tree(tmp_path, "<!-- BEGIN GENERATED cli-limits -->\n"
                                                             "<!-- END GENERATED cli-limits -->\n"))  # fmt: skip
    assert command.main(["--check"]) == 1
    assert "stale: docs/page.md" in capsys.readouterr().err
    assert command.main([]) == 0
    assert command.main(["--check"]) == 0


def _problems(overrides: dict[str, object]) -> set[str]:
    from tests.conftest import dev_stack_config

    try:
        config.parse(dev_stack_config(overrides), stack="dev")
    except config.ConfigError as error:
        return set(error.keys)
    return set()


def test_the_reference_states_the_integer_limits_the_program_enforces() -> None:
    """Read from config.py's own calls, and true of parse(): the bounds pass, one past them fails."""
    checks = tables.config_checks()
    ranges = {
        key: tuple(map(int, m.groups()))
        for key, texts in checks.items()
        for text in texts
        if (m := re.fullmatch(r"a whole number from (-?\d+) to (-?\d+)", text))
    }
    assert {"sshPort", "hubOsDiskSizeGb", "attachDeadlineSeconds", "hubAgentCount"} <= set(ranges)
    for key, (low, high) in ranges.items():
        assert key not in _problems({key: low}) | _problems({key: high}), key
        assert key in _problems({key: high + 1}), key
        assert key in _problems({key: low - 1}), key


def test_the_reference_names_every_key_and_each_names_rule() -> None:
    reference = tables.config_reference()
    for key in config.load_schema():
        assert f"| `{key}` (" in reference, key
    workspace = next(line for line in reference.splitlines() if line.startswith("| `workspaceName`"))
    assert config.naming.ML_WORKSPACE.explanation in workspace


def test_the_hub_api_versions_table_is_the_providers_own() -> None:
    from providers.hub_arm_resource import HUB_API_VERSIONS

    table = tables.hub_api_versions()
    for namespace, version in HUB_API_VERSIONS.items():
        assert f"| `{namespace}` | {version} |" in table


# --- documented commands -----------------------------------------------------------------------------


def test_every_shell_block_is_marked_runnable_or_parse_only() -> None:
    unmarked = [b.id for b in BLOCKS if b.marker not in (RUN, PARSE)]
    assert not unmarked, f"mark each with <!-- {RUN} --> or <!-- {PARSE} -->: {unmarked}"
    assert any(b.marker == RUN for b in BLOCKS) and any(b.marker == PARSE for b in BLOCKS)


@dataclass(frozen=True)
class Sandbox:
    checkout: Path
    """A copy of the checkout, its .venv holding the project installed editable (edge-training)."""
    stand_ins: Path
    """A `pulumi` that answers `stack output --json` with the program's outputs under mocks."""
    stack_outputs: Path

    def environment(self, home: Path) -> dict[str, str]:
        path = f"{self.checkout / '.venv' / 'bin'}{os.pathsep}{self.stand_ins}{os.pathsep}{os.environ['PATH']}"
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "AZURE_", "ARM_"))}
        return {**keep, "HOME": str(home), "PATH": path}

    def run(self, script: str, home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        home.mkdir(parents=True, exist_ok=True)
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=cwd or self.checkout,
            env=self.environment(home),
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )


def _install_editable(checkout: Path) -> None:
    """A virtualenv in the copy that sees the suite's packages and gets the project installed
    the documented way (pip install --no-deps --no-build-isolation -e .)."""
    venv = checkout / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "_suite_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
         "--disable-pip-version-check", "--no-deps", "--no-build-isolation", "-e", str(checkout)],
        check=True, capture_output=True, timeout=240,
    )  # fmt: skip


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    from tests.conftest import recorded_stack

    root = tmp_path_factory.mktemp("docs-sandbox")
    checkout = root / "checkout"
    for name in _tracked():
        target = checkout / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    (checkout / "node_modules").symlink_to(ROOT / "node_modules")  # Azurite, for the demo
    _install_editable(checkout)
    recording = recorded_stack({"edgeComputeMode": "virtual-machine"})
    outputs = root / "stack-outputs.json"
    outputs.write_text(json.dumps({k: v.value for k, v in recording.exports.items()}, default=str))
    stand_ins = root / "stand-ins"
    stand_ins.mkdir()
    pulumi = stand_ins / "pulumi"
    pulumi.write_text(
        textwrap.dedent(f"""\
            #!/bin/sh
            # The Pulumi CLI is not on this machine: this answers only what the docs' runnable blocks ask.
            if [ "$*" = "stack output --json" ]; then exec cat {shlex.quote(str(outputs))}; fi
            echo "pulumi stand-in: only 'stack output --json' here, not: $*" >&2
            exit 1
            """)
    )
    pulumi.chmod(0o755)
    return Sandbox(checkout, stand_ins, outputs)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.marker == RUN], ids=lambda b: b.id)
def test_a_runnable_block_runs(block: Block, sandbox: Sandbox, tmp_path) -> None:
    done = sandbox.run(block.body, home=tmp_path / "home")
    assert done.returncode == 0, f"{block.id} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


def _commands(body: str) -> list[list[str]]:
    """Each simple command of a block, placeholders (`<job>`) filled in, redirections dropped."""
    text = PLACEHOLDER.sub("x", body.replace("\\\n", " "))
    commands: list[list[str]] = []
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.commenters = "#"
        lexer.whitespace_split = True
        current: list[str] = []
        tokens = list(lexer)
        skip = False
        for token in tokens:
            if skip:
                skip = False
            elif token in ("&&", "||", ";", "|", "&"):
                commands.append(current)
                current = []
            elif token in (">", ">>", "<", "2>"):
                skip = True
            else:
                current.append(token)
        commands.append(current)
    return [c for c in commands if c]


def _cli_arguments(argv: list[str]) -> list[str] | None:
    """The arguments of an edge-training (or python -m training) command, else None."""
    if Path(argv[0]).name == "edge-training":
        return argv[1:]
    if Path(argv[0]).name.startswith("python") and argv[1:3] == ["-m", "training"]:
        return argv[3:]
    return None


def documented_demo_paths() -> list[str]:
    """The paths under .edge-training/demo/ that parse-only blocks name (after scripts/demo),
    relative to it. The demo's own test (tests/test_edge_train_package.py) runs the demo and
    checks that each is there: running it again here would cost the suite half a minute."""
    return sorted(
        {
            token.split("=", 1)[-1].removeprefix(DEMO_OUTPUTS)
            for block in BLOCKS
            if block.marker == PARSE
            for argv in _commands(block.body)
            for token in argv
            if token.split("=", 1)[-1].startswith(DEMO_OUTPUTS)
        }
    )


def test_the_docs_name_what_the_demo_makes() -> None:
    assert "outputs/churn/model" in documented_demo_paths()  # docs/serve/index.md


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.marker == PARSE], ids=lambda b: b.id)
def test_a_parse_only_block_names_real_commands_flags_and_paths(block: Block) -> None:
    from training import cli

    filled = PLACEHOLDER.sub("x", block.body)  # <job> is the reader's to fill in, not a redirection
    syntax = subprocess.run(["bash", "-n"], input=filled, capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, f"{block.id}: {syntax.stderr}"
    for argv in _commands(block.body):
        arguments = _cli_arguments(argv)
        if arguments is not None:
            try:
                cli.parser().parse_args(arguments)
            except SystemExit as error:
                pytest.fail(f"{block.id}: `{shlex.join(argv)}` does not parse (exit {error.code})")
        for token in argv:
            value = token.split("=", 1)[1] if token.startswith("--") and "=" in token else token
            if "/" in value and value.split("/", 1)[0] in TOP_LEVEL and not value.startswith(("http", "/")):
                assert (ROOT / value).exists(), f"{block.id}: {value} does not exist"
        if "/" in argv[0] and argv[0].split("/", 1)[0] in TOP_LEVEL:
            assert os.access(ROOT / argv[0], os.X_OK), f"{block.id}: {argv[0]} is not an executable of the project"


# --- the command, installed ---------------------------------------------------------------------------


def test_edge_training_runs_from_a_folder_outside_the_checkout(sandbox: Sandbox, tmp_path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = sandbox.run("edge-training --help", home=tmp_path / "home", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: edge-training ")
    assert shutil.which("edge-training", path=str(sandbox.checkout / ".venv" / "bin"))


def test_relative_paths_start_from_the_callers_folder_and_the_job_files(sandbox: Sandbox, tmp_path) -> None:
    """Arguments from where the command runs; a job file's own paths from the job file's folder."""
    project = tmp_path / "project"  # a data scientist's repository: jobs/ beside src/
    (project / "jobs").mkdir(parents=True)
    (project / "src").mkdir()
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    (project / "src" / "train.py").write_text("print('trained')\n")
    (project / "jobs" / "job.yml").write_text(
        "type: command\ncode: ../src\ncommand: python train.py --data ${{inputs.data}}\n"
        "inputs:\n  data: hub://training-data/churn/\n"
    )
    shutil.copy(sandbox.stack_outputs, project / "stack.json")
    done = sandbox.run(
        "edge-training submit -f jobs/job.yml --outputs stack.json --dry-run", home=tmp_path / "home", cwd=project
    )
    assert done.returncode == 0, done.stderr[-3000:]
    import yaml

    job = yaml.safe_load(done.stdout)
    assert Path(job["code"]).resolve() == (project / "src").resolve()


def test_python_m_training_is_still_the_same_program() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "training", "--help"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m training ")


def test_the_console_script_is_declared_and_installed_by_setup() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"] == {"edge-training": "training.cli:console"}
    setup = (ROOT / "scripts" / "setup").read_text()
    assert "--no-deps --no-build-isolation -e ." in setup


def test_the_model_records_the_commit_of_the_callers_repository(tmp_path, monkeypatch) -> None:
    from training import registry

    repo = tmp_path / "mine"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "train.py").write_text("print(1)\n")
    subprocess.run([*git, "add", "train.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "mine"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    monkeypatch.chdir(repo)
    assert registry.git_commit() == head


def test_generated_cells_keep_angle_brackets_visible_outside_code() -> None:
    assert tables._cell("rg-<project>-<stack> or `hub://<c>/<p>` | x") == (
        "rg-&lt;project&gt;-&lt;stack&gt; or `hub://<c>/<p>` \\| x"
    )
