"""Jenkins as code, checked without Jenkins: real linters plus the platform's own rules.

npm-groovy-lint parses every Jenkinsfile, the shared library and the Job DSL seed; hadolint
checks the Jenkins image. Neither knows declarative Pipeline's skeleton nor how the files tie
together, so :mod:`tools.jenkins_model` checks those: sections and stages, make
targets, credentials, plugins, seeded jobs, pinned images. Every check is also run on a broken
copy of the files, to show that it fails when it should.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess  # nosec B404 - runs a pytest session in a build's environment
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools import jenkins_model as model

from tests.platform.conftest import REPO, require_tool, run_tool

#: Runs the Groovy linter and pytest sessions: run early (tests/conftest.py orders slow first).
pytestmark = pytest.mark.slow

#: What the checks read: copied whole into tmp_path before a test breaks a file.
CHECKED_PATHS = ("Makefile", model.ORCHESTRATOR, model.PIPELINES_DIR, model.JENKINS_DIR)


def copy_repository(target: Path) -> Path:
    """Copy the files the Jenkins checks read into ``target`` and return it."""
    for relative in CHECKED_PATHS:
        source = REPO / relative
        if source.is_dir():
            shutil.copytree(source, target / relative)
        else:
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
    return target


def base_image(root: Path) -> str:
    """The image the Jenkins Dockerfile builds FROM (kept out of the cases below, so that
    moving to another LTS release needs no change here)."""
    match = re.search(r"^FROM\s+(\S+)", (root / model.DOCKERFILE).read_text(), re.M)
    assert match, f"no FROM in {model.DOCKERFILE}"
    return match.group(1)


def replace_once(root: Path, relative: str, old: str, new: str) -> None:
    """Replace the first ``old`` in a file; fail if it is absent, so no breakage is a no-op."""
    path = root / relative
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{relative} no longer contains {old!r}: update the breaking case"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


# --- real linters ----------------------------------------------------------------------------


def test_groovy_lint_passes_every_groovy_file_and_fails_a_broken_one(tmp_path: Path) -> None:
    """npm-groovy-lint 16.2.0 finds no error in the Groovy Jenkins runs, and finds the broken one.

    One run for all files (the linter starts a JVM each time). The files are linted as copies
    under tmp_path, next to the broken one: with files under two unrelated roots, CodeNarc
    scans from their common parent, the whole file system.
    """
    tool = require_tool("npm-groovy-lint")
    real = []
    for source in model.groovy_sources(REPO):
        copy = tmp_path / "real" / source.relative_to(REPO)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy)
        real.append(copy)
    broken = tmp_path / "broken" / "data.Jenkinsfile"
    broken.parent.mkdir()
    data = (REPO / "pipelines/data.Jenkinsfile").read_text(encoding="utf-8")
    broken.write_text(data + "}\n", encoding="utf-8")

    result = run_tool(
        tool,
        "--noserver",
        "--failon",
        "error",
        "--output",
        "json",
        *map(str, [*real, broken]),
        cwd=tmp_path,
        timeout=240,
    )

    report = json.loads(result.stdout)
    errors = {
        Path(name).resolve(): [
            f"{issue['line']}: {issue['rule']} {issue['msg']}"
            for issue in found["errors"]
            if issue["severity"] == "error"
        ]
        for name, found in report["files"].items()
    }
    assert report["summary"]["totalFilesLinted"] == len(real) + 1
    assert {path: errors.get(path.resolve(), []) for path in real} == {path: [] for path in real}
    assert errors[broken.resolve()], "the linter accepted a Jenkinsfile with an extra brace"
    assert result.returncode == 1


def test_hadolint_passes_the_jenkins_image_and_fails_a_broken_one(tmp_path: Path) -> None:
    """hadolint (warnings and errors) accepts jenkins/Dockerfile and rejects an unpinned base."""
    tool = require_tool("hadolint")
    result = run_tool(tool, "-t", "warning", "--no-color", model.DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr

    broken = copy_repository(tmp_path)
    replace_once(broken, model.DOCKERFILE, base_image(broken), "jenkins/jenkins")
    failed = run_tool(tool, "-t", "warning", "--no-color", str(broken / model.DOCKERFILE))
    assert failed.returncode != 0
    assert "DL3006" in failed.stdout  # "Always tag the version of an image explicitly"


# --- declarative skeleton --------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", model.jenkinsfiles(REPO), ids=lambda path: str(path.relative_to(REPO))
)
def test_jenkinsfile_is_a_well_formed_declarative_pipeline(path: Path) -> None:
    """Every Jenkinsfile has the sections, stages and post conditions declarative expects."""
    assert model.declarative_problems(path.read_text(encoding="utf-8")) == []


QUALITY = "pipelines/quality.Jenkinsfile"
ROLLOUT = model.ROLLOUT_PIPELINE

#: (case, text to replace in the quality pipeline, replacement, expected problem)
SKELETON_BREAKS = [
    (
        "stagez",
        "stage('Test')",
        "stagez('Test')",
        "stages may only hold stage blocks, not 'stagez'",
    ),
    ("unknown-section", "options {", "optionz {", "unknown section 'optionz'"),
    ("no-agent", "agent any", "", "pipeline: missing agent"),
    ("post-condition", "always {", "allways {", "post: unknown condition 'allways'"),
    ("empty-steps", "sh 'make test'", "", "empty steps"),
    ("unnamed-stage", "stage('Test')", "stage()", "a stage needs one string name"),
    ("two-bodies", "stage('Test') {", "stage('Test') {\nparallel { }", "exactly one of steps"),
    ("unknown-option", "timestamps()", "timestampz()", "options: unknown 'timestampz'"),
    ("environment", "SONAR_TOKEN = credentials", "credentials", "is not an assignment"),
    ("syntax", "pipeline {", "pipeline {{", "not parsable"),
]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [case[1:] for case in SKELETON_BREAKS],
    ids=[case[0] for case in SKELETON_BREAKS],
)
def test_declarative_check_rejects_a_broken_jenkinsfile(old: str, new: str, expected: str) -> None:
    """The skeleton check names what is wrong (npm-groovy-lint accepts all of these but one)."""
    text = (REPO / QUALITY).read_text(encoding="utf-8")
    assert old in text
    problems = model.declarative_problems(text.replace(old, new, 1))
    assert any(expected in problem for problem in problems), problems


# --- consistency -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(model.CHECKS))
def test_consistency_check_passes_on_the_repository(name: str) -> None:
    """The repository's Jenkins files agree with each other, the Makefile and the plugins."""
    assert model.CHECKS[name](REPO) == []


@dataclass(frozen=True)
class Break:
    """One way of breaking a copy of the repository, and what the named check must then say."""

    check: str
    apply: Callable[[Path], None]
    expected: str


def _replacing(relative: str, old: str, new: str) -> Callable[[Path], None]:
    return lambda root: replace_once(root, relative, old, new)


def _adding_pipeline(root: Path) -> None:
    shutil.copy2(root / "pipelines/data.Jenkinsfile", root / "pipelines/nightly.Jenkinsfile")


def _appending(relative: str, text: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        with (root / relative).open("a", encoding="utf-8") as handle:
            handle.write(text)

    return apply


def _moving_flag_before_start(root: Path) -> None:
    """The rollout's flag set before `make rollout-start` instead of after it."""
    start = 'sh \'make rollout-start CHALLENGER="$VERSION" MODE="$MODE" SHARE="$SHARE"\''
    replace_once(root, ROLLOUT, start + "\n", "")
    replace_once(
        root, ROLLOUT, "env.ROLLOUT_OPEN = 'true'\n", "env.ROLLOUT_OPEN = 'true'\n" + start + "\n"
    )


CASC = model.CASC_DIR
BREAKS = {
    "make-target-typo": Break(
        "make-targets-exist",
        _replacing("pipelines/data.Jenkinsfile", "make data-check", "make data-chek"),
        "`make data-chek` is not a Makefile target",
    ),
    "raw-command": Break(
        "sh-runs-only-make",
        _replacing(QUALITY, "sh 'make test'", "sh 'pytest -q'"),
        "not a make call: 'pytest -q'",
    ),
    "unknown-credentials": Break(
        "credentials-defined",
        _replacing(
            "pipelines/monitoring.Jenkinsfile", "credentials('retrain-token')", "credentials('rt')"
        ),
        "credentials 'rt' are not defined",
    ),
    "credentials-removed": Break(
        "credentials-defined",
        _replacing(f"{CASC}/credentials.yaml", 'id: "sonarqube-token"', 'id: "sonar"'),
        "credentials 'sonarqube-token' are not defined",
    ),
    "plugin-removed": Break(
        "steps-have-plugins",
        _replacing(model.PLUGINS_FILE, "coverage:3.3240.vb_5a_8809f7523\n", ""),
        "recordCoverage: needs plugin 'coverage'",
    ),
    "unknown-step": Break(
        "steps-have-plugins",
        _replacing(QUALITY, "sh 'make test'", "sh 'make test'\nslackSend(message: 'done')"),
        "slackSend: no plugin known",
    ),
    "plugin-unpinned": Break(
        "plugins-pinned",
        _replacing(model.PLUGINS_FILE, "sonar:2.18.2", "sonar:latest"),
        "not pinned as id:version: 'sonar:latest'",
    ),
    "pipeline-without-job": Break(
        "seed-matches-files",
        _adding_pipeline,
        "pipelines/nightly.Jenkinsfile has no job",
    ),
    "job-without-pipeline": Break(
        "seed-matches-files",
        _replacing(model.SEED_FILE, "'pipelines/publish.Jenkinsfile'", "'pipelines/p.Jenkinsfile'"),
        "runs pipelines/p.Jenkinsfile, which does not exist",
    ),
    "orchestrator-unknown-job": Break(
        "orchestrator-chain",
        _replacing(model.ORCHESTRATOR, "build(job: 'data'", "build(job: 'dataset'"),
        "builds job 'dataset', which the seed does not create",
    ),
    "base-image-unpinned": Break(
        "images-pinned",
        lambda root: replace_once(root, model.DOCKERFILE, base_image(root), "jenkins/jenkins:lts"),
        "'jenkins/jenkins:lts' is not pinned",
    ),
    "copied-image-unpinned": Break(
        "images-pinned",
        _replacing(model.DOCKERFILE, "docker:29.1.3-cli", "docker:cli"),
        "'docker:cli' is not pinned",
    ),
    "seed-not-in-image": Break(
        "casc-files-in-image",
        _replacing(f"{CASC}/jobs.yaml", "file: /usr/share/jenkins/jobs/pipelines", "file: /x/seed"),
        "job script /x/seed.groovy is not a file the image copies",
    ),
    "casc-root-twice": Break(
        "casc-roots",
        _appending(f"{CASC}/unclassified.yaml", "jenkins:\n  numExecutors: 1\n"),
        "'jenkins' is also in",
    ),
    "sonar-server-unknown": Break(
        "named-servers",
        _replacing(QUALITY, "withSonarQubeEnv('sonarqube')", "withSonarQubeEnv('sonar')"),
        "SonarQube server 'sonar' is not configured",
    ),
    "library-unknown": Break(
        "named-servers",
        _replacing("pipelines/data.Jenkinsfile", "@Library('xgbops')", "@Library('lib')"),
        "library 'lib' is not configured",
    ),
    "no-notification": Break(
        "pipelines-notify",
        _replacing("pipelines/publish.Jenkinsfile", "notifyResult()", "echo 'done'"),
        "pipelines/publish.Jenkinsfile: post { always { notifyResult(...) } }",
    ),
    "option-missing": Break(
        "required-options",
        _replacing("pipelines/training.Jenkinsfile", "timestamps()", ""),
        "pipelines/training.Jenkinsfile: options without timestamps",
    ),
    # issue 11, found by running the pipelines in a real Jenkins
    "coverage-skips-failed-build": Break(
        "reports-published-on-failure",
        _replacing(QUALITY, ", enabledForFailure: true)", ")"),
        "recordCoverage without enabledForFailure: true",
    ),
    "junit-only-on-success": Break(
        "reports-published-on-failure",
        _replacing(QUALITY, "always {\n            junit(", "success {\n            junit("),
        "junit outside post { always { } }",
    ),
    "debian-node-20": Break(
        "node-runs-sonar-scanner",
        _replacing(model.DOCKERFILE, "ARG NODE_VERSION=22.22.0", "ARG NODE_VERSION=20.19.2"),
        "Node.js 20.19.2 does not satisfy engines.node '>=22.12.0' of @sonar/scan 5.0.1",
    ),
    "debian-nodejs-installed": Break(
        "node-runs-sonar-scanner",
        _replacing(model.DOCKERFILE, " git make ", " git make nodejs npm "),
        "installs Debian's nodejs/npm",
    ),
    "node-archive-unchecked": Break(
        "node-runs-sonar-scanner",
        _replacing(model.DOCKERFILE, "sha256sum -c /tmp/node.tar.xz.sha256", "true"),
        "the Node.js archive is not checked",
    ),
    "scanner-engines-unknown": Break(
        "node-runs-sonar-scanner",
        _replacing("Makefile", "@sonar/scan@5.0.1", "@sonar/scan@6.0.0"),
        "@sonar/scan 6.0.0: engines.node unknown",
    ),
    "chromium-not-in-image": Break(
        "system-deps-in-image",
        _replacing(model.DOCKERFILE, "ca-certificates chromium git", "ca-certificates git"),
        "does not install 'chromium', which `make system-deps` installs",
    ),
    "orchestrator-publishes-unasked": Break(
        "publish-only-when-asked",
        _replacing(
            model.ORCHESTRATOR, "expression { params.PUBLISH == true }", "expression { true }"
        ),
        "stage 'Publish' builds publish without when { expression { params.PUBLISH } }",
    ),
    "publish-runs-unasked": Break(
        "publish-only-when-asked",
        _replacing(
            "pipelines/publish.Jenkinsfile", "error('Not publishing", "echo('Not publishing"
        ),
        "the first stage must fail (error) unless params.PUBLISH is ticked",
    ),
    "publish-on-by-default": Break(
        "publish-only-when-asked",
        _replacing(
            "pipelines/publish.Jenkinsfile",
            "name: 'PUBLISH', defaultValue: false",
            "name: 'PUBLISH'",
        ),
        "pipelines/publish.Jenkinsfile: no booleanParam(name: 'PUBLISH', defaultValue: false)",
    ),
    "publish-parameter-not-seeded": Break(
        "publish-only-when-asked",
        _replacing(model.SEED_FILE, "Docker Hub.',\n     askPublish: 'true'],", "Docker Hub.'],"),
        "job 'publish' lacks askPublish: 'true'",
    ),
    "first-poll-runs-the-chain": Break(
        "first-poll-runs-nothing",
        _replacing(model.ORCHESTRATOR, "expression { pollingBaseline() }", "expression { true }"),
        "Jenkinsfile: stage 'Chain' runs in the first poll's build",
    ),
    "first-poll-checks-the-data": Break(
        "first-poll-runs-nothing",
        _replacing("pipelines/data.Jenkinsfile", "not {", "anyOf {"),
        "pipelines/data.Jenkinsfile: stage 'Dataset' runs in the first poll's build",
    ),
    "first-poll-mailed": Break(
        "first-poll-runs-nothing",
        _replacing(f"{model.LIBRARY_VARS}/notifyResult.groovy", "if (pollingBaseline())", "if (0)"),
        "notifyResult.groovy: mails the first poll's build",
    ),
    "failed-stage-unrecorded": Break(
        "failed-stage-recorded",
        _replacing(QUALITY, "recordFailedStage()", "echo 'failed'"),
        "stage 'Install' lacks post { failure { recordFailedStage() } }",
    ),
    "mail-through-make": Break(
        "mail-needs-no-python",
        _replacing(
            f"{model.LIBRARY_VARS}/notifyResult.groovy",
            "    emailext(",
            "    sh 'make notify'\n    emailext(",
        ),
        "runs sh",
    ),
    "mail-without-log-tail": Break(
        "mail-needs-no-python",
        _replacing(
            f"{model.LIBRARY_VARS}/notifyResult.groovy", "BUILD_LOG, maxLines", "CHANGES, x"
        ),
        "the mail lacks the log's tail",
    ),
    # the rollout pipeline: a challenger on live traffic
    "rollout-parameter-default-differs": Break(
        "rollout-parameters-seeded",
        _replacing(model.SEED_FILE, "'POLL_SECONDS', '60'", "'POLL_SECONDS', '30'"),
        "POLL_SECONDS: ('string', '30') in jenkins/jobs/pipelines.groovy, ('string', '60') in",
    ),
    "rollout-parameter-not-seeded": Break(
        "rollout-parameters-seeded",
        _replacing(model.SEED_FILE, "    ['string', 'STEP_MINUTES', '15', ", "    // ['x', "),
        "rolloutParameters lacks STEP_MINUTES",
    ),
    "rollout-modes-reordered": Break(
        "rollout-parameters-seeded",
        _replacing(model.SEED_FILE, "['canary', 'shadow', 'ab']", "['shadow', 'canary', 'ab']"),
        "MODE: ('choice', ('shadow', 'canary', 'ab'))",
    ),
    "rollout-parameters-unseeded": Break(
        "rollout-parameters-seeded",
        _replacing(model.SEED_FILE, ",\n     askRollout: 'true']", "]"),
        "job 'rollout' lacks askRollout: 'true'",
    ),
    "rollout-promotes-by-default": Break(
        "rollout-parameters-seeded",
        _replacing(
            ROLLOUT,
            "name: 'AUTO_PROMOTE', defaultValue: false",
            "name: 'AUTO_PROMOTE', defaultValue: true",
        ),
        "no booleanParam(name: 'AUTO_PROMOTE', defaultValue: false)",
    ),
    "rollout-failure-not-rolled-back": Break(
        "rollout-rolls-back-on-failure",
        _replacing(
            ROLLOUT,
            "                failure {\n                    script {",
            "                unstable {\n                    script {",
        ),
        "stage 'Rollout' has no post { failure { make rollout-rollback } }",
    ),
    "rollout-abort-not-rolled-back": Break(
        "rollout-rolls-back-on-failure",
        _replacing(ROLLOUT, "                aborted {\n", "                unstable {\n"),
        "stage 'Rollout' has no post { aborted { make rollout-rollback } }",
    ),
    "rollout-rollback-unguarded": Break(
        "rollout-rolls-back-on-failure",
        _replacing(ROLLOUT, "if (env.ROLLOUT_OPEN == 'true') {", "if (true) {"),
        "post failure rolls back without checking the flag set after the start (ROLLOUT_OPEN)",
    ),
    "rollout-rollback-after-it-ended": Break(
        "rollout-rolls-back-on-failure",
        _replacing(ROLLOUT, "if (state.ended_by == null && ", "if ("),
        "`make rollout-rollback` without checking that the rollout is still on trial",
    ),
    "rollout-flag-set-before-start": Break(
        "rollout-rolls-back-on-failure",
        _moving_flag_before_start,
        "sets no env flag to 'true' after `make rollout-start`",
    ),
    "rollout-decided-outside-guard": Break(
        "rollout-rolls-back-on-failure",
        _replacing(ROLLOUT, "sh 'make install-runtime'", "sh 'make rollout-status'"),
        "`make rollout-status` runs outside stage 'Rollout', whose post rolls back",
    ),
    "rollout-promotes-outside-branch": Break(
        "rollout-decides-on-evidence",
        _replacing(
            ROLLOUT,
            "env.ROLLOUT_DECISION = verdict.decision",
            "sh 'make rollout-promote'\nenv.ROLLOUT_DECISION = verdict.decision",
        ),
        "`make rollout-promote` outside if (... == 'promote') { }",
    ),
    "rollout-promotes-on-rollback": Break(
        "rollout-decides-on-evidence",
        _replacing(ROLLOUT, "if (decision == 'promote') {", "if (decision != 'promote') {"),
        "`make rollout-promote` outside if (... == 'promote') { }",
    ),
    "rollout-decides-without-status": Break(
        "rollout-decides-on-evidence",
        _replacing(
            ROLLOUT,
            "while (true) {\n                                sh 'make rollout-status'",
            "while (true) {\n                                echo 'no status'",
        ),
        "no loop (while) runs `make rollout-status` and reads reports/rollout.json",
    ),
    "rollout-approval-unbounded": Break(
        "rollout-decides-on-evidence",
        _replacing(ROLLOUT, "timeout(time: 8, unit: 'HOURS') {\n", "retry(1) {\n"),
        "input without a timeout around it",
    ),
    "rollout-asks-only-when-auto": Break(
        "rollout-decides-on-evidence",
        _replacing(ROLLOUT, "&& !params.AUTO_PROMOTE", "&& params.AUTO_PROMOTE"),
        "input is not in if (... !params.AUTO_PROMOTE)",
    ),
    "rollout-mail-without-comparison": Break(
        "rollout-decides-on-evidence",
        _replacing(ROLLOUT, "notifyResult(['reports/rollout.md', ", "notifyResult(["),
        "notifyResult is not given reports/rollout.md",
    ),
    "rollout-mail-before-final-status": Break(
        "rollout-decides-on-evidence",
        _replacing(
            ROLLOUT,
            "                    sh 'make rollout-status'\n                } catch",
            "                    echo 'skipped'\n                } catch",
        ),
        "post { always { } } must run `make rollout-status` before notifyResult",
    ),
}


def test_every_consistency_check_has_a_breaking_case() -> None:
    """No check goes untested against a broken copy."""
    assert {case.check for case in BREAKS.values()} == set(model.CHECKS)


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_consistency_check_fails_on_a_broken_copy(case: str, tmp_path: Path) -> None:
    """Break one file of a copy: the check that guards it reports exactly that."""
    broken = BREAKS[case]
    check = model.CHECKS[broken.check]
    root = copy_repository(tmp_path)
    assert check(root) == []  # the copy is complete: only the breakage below can fail it

    broken.apply(root)

    problems = check(root)
    assert any(broken.expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("version", "spec", "expected"),
    [
        ("22.22.0", ">=22.12.0", True),
        ("22.12.0", ">=22.12.0", True),
        ("22.11.9", ">=22.12.0", False),
        ("20.19.2", ">=22.12.0", False),
        ("18.20.0", ">=18 <20 || >=22", True),
        ("20.19.2", ">=18 <20 || >=22", False),
    ],
)
def test_node_version_check_reads_npm_comparator_ranges(
    version: str, spec: str, expected: bool
) -> None:
    """The engines check reads npm's comparator ranges as npm does."""
    assert model.satisfies(version, spec) is expected


def test_node_version_check_refuses_a_range_it_cannot_read() -> None:
    """A caret range is not misread as an exact version: the check says it cannot read it."""
    with pytest.raises(ValueError, match="not understood"):
        model.satisfies("22.22.0", "^22.12.0")


# --- the quality pipeline's test run inside a Jenkins build ----------------------------------

#: A session fixture that writes the environment it sees to $PROBE_OUTPUT (not a setting).
_PROBE = """
import json
import os

import pytest


@pytest.fixture(scope="session")
def session_environment():
    return dict(os.environ)


def test_probe(session_environment):
    with open(os.environ["PROBE_OUTPUT"], "w", encoding="utf-8") as handle:
        json.dump(session_environment, handle)
"""


def build_environment(root: Path) -> dict[str, str]:
    """The variables configuration as code puts into every build (globalNodeProperties)."""
    properties = model.casc_section(root, "jenkins", "globalNodeProperties") or []
    return {
        str(entry["key"]): str(entry["value"])
        for node_property in properties
        for entry in (node_property.get("envVars") or {}).get("env") or []
    }


def test_a_test_run_in_a_jenkins_build_sees_none_of_its_settings(tmp_path: Path) -> None:
    """tests/conftest.py drops the build's settings before any session fixture reads them.

    A pytest session in a subprocess, with tests/conftest.py as its plugin, starts in the
    environment a Jenkins build gets (MLflow pointing at a closed port, plus XGBOPS_* settings);
    its session fixture must see none of them, and the suite's own knobs must survive.
    """
    jenkins = build_environment(REPO)
    assert "MLFLOW_TRACKING_URI" in jenkins, "casc no longer sets it: pick another setting"
    settings = {
        **jenkins,
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9/",
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/platform",
        "XGBOPS_SERVE__PORT": "9",
        "XGBOPS_NOTIFY__SMTP_HOST": "127.0.0.1",
    }
    knobs = {"XGBOPS_FUZZ_EXAMPLES": "3"}
    (tmp_path / "test_probe.py").write_text(_PROBE, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # not the project's
    output = tmp_path / "environment.json"
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    environment = {
        **os.environ,
        **settings,
        **knobs,
        "PROBE_OUTPUT": str(output),
        "PYTHONPATH": python_path,
    }

    result = subprocess.run(  # nosec B603 - fixed argument list, no shell
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(output.read_text(encoding="utf-8"))
    # SONAR_HOST_URL, say, is the scanner's, not xgbops': it may stay.
    readable = [n for n in settings if n.startswith(("XGBOPS_", "MLFLOW_")) or n == "DATABASE_URL"]
    assert [name for name in readable if name in seen] == []
    assert {name: seen.get(name) for name in knobs} == knobs
