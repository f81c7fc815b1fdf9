"""What the Jenkins files say, read without Jenkins: a small Groovy reader and the platform's rules.

Jenkins cannot run on the development machines, so the files that configure it are read here:
a tokenizer for the Groovy of Jenkinsfiles (strings, comments and GStrings handled, the rest kept
as identifiers and punctuation), a tree of its ``name(args) { ... }`` blocks, and the rules of
declarative Pipeline that npm-groovy-lint does not know (it accepts ``stagez`` happily). On top
of that, the consistency checks: every ``make X`` exists in the Makefile, every credential id is
defined in configuration as code, every step comes from a pinned plugin, every seeded job points
at a file, and so on. Each check takes the repository root and returns its problems (empty when
all is well), so a test can run it on the repository and on a broken copy of it.
"""

# The reader and the rules it serves are read together; each check is a short function.
# pylint: disable=too-many-lines

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: The Jenkinsfiles of the repository: the orchestrator and one per pipeline.
ORCHESTRATOR = "Jenkinsfile"
PIPELINES_DIR = "pipelines"
JENKINS_DIR = "jenkins"
DOCKERFILE = f"{JENKINS_DIR}/Dockerfile"
PLUGINS_FILE = f"{JENKINS_DIR}/plugins.txt"
CASC_DIR = f"{JENKINS_DIR}/casc"
SEED_FILE = f"{JENKINS_DIR}/jobs/pipelines.groovy"
LIBRARY_VARS = f"{JENKINS_DIR}/library/vars"

#: The chain the orchestrator runs, in order (DESIGN.md: quality -> data -> training -> publish).
CHAIN = ("quality", "data", "training", "publish")

#: Options every pipeline sets (the issue: timeout, timestamps, build discarder, no concurrency).
REQUIRED_OPTIONS = frozenset({"timeout", "timestamps", "buildDiscarder", "disableConcurrentBuilds"})

#: Marks a step that Jenkins core provides (no plugin to pin).
CORE = "core"

#: Which plugin provides each step, directive or helper the Jenkinsfiles and the shared library
#: call. A name missing here (and not a step of the shared library) fails the check: a new step
#: must be added together with the plugin it needs.
STEP_PLUGINS: dict[str, str] = {
    # declarative Pipeline itself
    **dict.fromkeys(
        (
            "pipeline agent options environment parameters triggers stages stage steps parallel "
            "post always success failure unstable aborted changed fixed regression unsuccessful "
            "cleanup notBuilt when expression not allOf anyOf branch script"
        ).split(),
        "pipeline-model-definition",
    ),
    # options, parameters and triggers
    "buildDiscarder": CORE,
    "logRotator": CORE,
    "booleanParam": CORE,
    "string": CORE,
    "choice": CORE,
    "cron": CORE,
    "pollSCM": CORE,
    "disableConcurrentBuilds": "workflow-job",
    "timestamps": "timestamper",
    # basic steps
    "sh": "workflow-durable-task-step",
    "timeout": "workflow-basic-steps",
    "echo": "workflow-basic-steps",
    "error": "workflow-basic-steps",
    "fileExists": "workflow-basic-steps",
    "withEnv": "workflow-basic-steps",
    "archiveArtifacts": "workflow-basic-steps",
    "sleep": "workflow-basic-steps",
    "build": "pipeline-build-step",
    # a person's answer; JSON reports read back into the build
    "input": "pipeline-input-step",
    "readJSON": "pipeline-utility-steps",
    # credentials
    "credentials": "credentials-binding",
    "withCredentials": "credentials-binding",
    "usernamePassword": "credentials-binding",  # pragma: allowlist secret
    # reports, SonarQube, Docker, mail, workspace
    "junit": "junit",
    "recordCoverage": "coverage",
    "withSonarQubeEnv": "sonar",
    "waitForQualityGate": "sonar",
    "withDockerRegistry": "docker-workflow",
    "emailext": "email-ext",
    "cleanWs": "ws-cleanup",
}

_DECLARATIVE_PIPELINE = frozenset(
    "agent environment options parameters triggers tools stages post libraries".split()
)
_STAGE_DIRECTIVES = frozenset(
    "agent environment options when input tools post steps parallel stages matrix failFast".split()
)
_STAGE_BODIES = ("steps", "parallel", "stages", "matrix")
_POST_CONDITIONS = frozenset(
    "always changed fixed regression aborted failure success unstable unsuccessful cleanup "
    "notBuilt".split()
)
_KNOWN_OPTIONS = frozenset(
    "buildDiscarder checkoutToSubdirectory disableConcurrentBuilds disableResume durabilityHint "
    "newContainerPerStage overrideIndexTriggers parallelsAlwaysFailFast preserveStashes "
    "quietPeriod retry skipDefaultCheckout skipStagesAfterUnstable timeout timestamps".split()
)
_KNOWN_PARAMETERS = frozenset("booleanParam string text choice password file credentials".split())
_KNOWN_TRIGGERS = frozenset("cron pollSCM upstream".split())
_WHEN_CONDITIONS = frozenset(
    "branch buildingTag changelog changeset changeRequest environment equals expression tag not "
    "allOf anyOf triggeredBy beforeAgent beforeInput beforeOptions".split()
)
_GROOVY_KEYWORDS = frozenset(
    "if else for while switch case default return new try catch finally throw def in as "
    "instanceof class interface enum import package true false null this super".split()
)
_CASC_ROOTS = frozenset("jenkins credentials unclassified security tool jobs appearance".split())


class GroovySyntaxError(ValueError):
    """The text is not Groovy this reader can follow (unterminated string, unbalanced braces)."""


@dataclass(frozen=True)
class Token:
    """One Groovy token: ``ident``, ``string`` (its unquoted text), ``number`` or ``op``."""

    kind: str
    value: str
    line: int


@dataclass(frozen=True)
class Statement:
    """A statement of a block: its leading identifier and the token right after it."""

    name: str
    line: int
    next: Token | None


@dataclass
class Block:
    """A ``name(args) { ... }`` block; ``name`` is None for a block no identifier introduces."""

    name: str | None
    args: list[Token]
    line: int
    statements: list[Statement] = field(default_factory=list)
    children: list[Block] = field(default_factory=list)
    #: The tokens between the braces, nested blocks included.
    body: list[Token] = field(default_factory=list)

    def blocks(self, name: str) -> list[Block]:
        """The child blocks called ``name``."""
        return [child for child in self.children if child.name == name]

    def walk(self) -> Iterator[Block]:
        """This block and every block inside it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()


# --- Groovy ----------------------------------------------------------------------------------


def tokenize(text: str) -> list[Token]:
    """Split Groovy source into tokens; comments are dropped, strings kept as one token.

    Args:
        text: Groovy source (a Jenkinsfile, a Job DSL script, a library step).

    Returns:
        The tokens in order.

    Raises:
        GroovySyntaxError: a string or a block comment is not terminated.
    """
    tokens: list[Token] = []
    index, line, size = 0, 1, len(text)
    while index < size:
        char = text[index]
        if char == "\n":
            line += 1
            index += 1
        elif char.isspace():
            index += 1
        elif text.startswith("//", index):
            end = text.find("\n", index)
            index = size if end < 0 else end
        elif text.startswith("/*", index):
            end = text.find("*/", index + 2)
            if end < 0:
                raise GroovySyntaxError(f"line {line}: unterminated comment")
            line += text.count("\n", index, end)
            index = end + 2
        elif char in "'\"":
            end, value = _read_string(text, index, line)
            tokens.append(Token("string", value, line))
            line += text.count("\n", index, end)
            index = end
        elif char.isalpha() or char in "_$":
            match = _match(_IDENTIFIER, text, index, line)
            tokens.append(Token("ident", match.group(), line))
            index = match.end()
        elif char.isdigit():
            match = _match(_NUMBER, text, index, line)
            tokens.append(Token("number", match.group(), line))
            index = match.end()
        elif text.startswith("->", index):
            tokens.append(Token("op", "->", line))
            index += 2
        else:
            tokens.append(Token("op", char, line))
            index += 1
    return tokens


_IDENTIFIER = re.compile(r"[\w$]+")
_NUMBER = re.compile(r"[\d.]+[A-Za-z]?")


def _match(pattern: re.Pattern[str], text: str, index: int, line: int) -> re.Match[str]:
    """``pattern`` at ``index``, where a letter or a digit starts a token.

    Raises:
        GroovySyntaxError: it does not match (a digit ``\\d`` refuses, such as "²").
    """
    match = pattern.match(text, index)
    if match is None:
        raise GroovySyntaxError(f"line {line}: unreadable {text[index]!r}")
    return match


def _read_string(text: str, start: int, line: int) -> tuple[int, str]:
    """Read the string literal at ``start``; return the index after it and its content."""
    quote = text[start] * 3 if text.startswith(text[start] * 3, start) else text[start]
    index = start + len(quote)
    while index < len(text):
        if text[index] == "\\":
            index += 2
        elif text.startswith(quote, index):
            return index + len(quote), text[start + len(quote) : index]
        elif quote[0] == '"' and text.startswith("${", index):
            index = _skip_interpolation(text, index + 2, line)
        elif text[index] == "\n" and len(quote) == 1:
            break
        else:
            index += 1
    raise GroovySyntaxError(f"line {line}: unterminated string")


def _skip_interpolation(text: str, index: int, line: int) -> int:
    """Skip a GString's ``${ ... }`` (which may hold strings and braces); return the index after."""
    depth = 1
    while index < len(text):
        char = text[index]
        if char in "'\"":
            index, _ = _read_string(text, index, line)
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    raise GroovySyntaxError(f"line {line}: unterminated ${{...}} in a string")


def parse_blocks(tokens: list[Token]) -> Block:
    """Nest the tokens' ``{ }`` into blocks named after what precedes each ``{``.

    Args:
        tokens: the output of :func:`tokenize`.

    Returns:
        The file as a root block (name ``None``) holding the top-level statements and blocks.

    Raises:
        GroovySyntaxError: braces or parentheses do not balance.
    """
    root = Block(None, [], 0)
    root.body = tokens
    # block, open ( [ positions inside it, position of its {
    frames: list[tuple[Block, list[int], int]] = [(root, [], -1)]
    previous: Token | None = None
    for position, token in enumerate(tokens):
        block, opened, _ = frames[-1]
        if token.kind == "op" and token.value in "([":
            opened.append(position)
        elif token.kind == "op" and token.value in ")]":
            if not opened:
                raise GroovySyntaxError(f"line {token.line}: unbalanced {token.value!r}")
            opened.pop()
        elif token.kind == "op" and token.value == "{":
            child = Block(*_block_head(tokens, position), token.line)
            block.children.append(child)
            frames.append((child, [], position))
        elif token.kind == "op" and token.value == "}":
            if len(frames) == 1 or opened:
                raise GroovySyntaxError(f"line {token.line}: unbalanced '}}'")
            closed, _, opening = frames.pop()
            closed.body = tokens[opening + 1 : position]
        if token.kind == "ident" and not opened and _starts_statement(previous, token):
            following = tokens[position + 1] if position + 1 < len(tokens) else None
            block.statements.append(Statement(token.value, token.line, following))
        previous = token
    if len(frames) > 1:
        raise GroovySyntaxError(f"line {frames[-1][0].line}: block never closed")
    if frames[0][1]:
        raise GroovySyntaxError("unbalanced '(' or '['")
    return root


def _starts_statement(previous: Token | None, token: Token) -> bool:
    if previous is None:
        return True
    return previous.line < token.line or (previous.kind == "op" and previous.value in "{;")


def _block_head(tokens: list[Token], brace: int) -> tuple[str | None, list[Token]]:
    """The name and arguments of the block opened at ``tokens[brace]``."""
    before = brace - 1
    if before < 0:
        return None, []
    args: list[Token] = []
    if tokens[before].kind == "op" and tokens[before].value == ")":
        depth, index = 0, before
        while index >= 0:
            value = tokens[index].value if tokens[index].kind == "op" else ""
            depth += value == ")"
            depth -= value == "("
            if depth == 0:
                break
            index -= 1
        args = tokens[index + 1 : before]
        before = index - 1
    if before >= 0 and tokens[before].kind == "ident" and not _after_dot(tokens, before):
        return tokens[before].value, args
    return None, args


def _after_dot(tokens: list[Token], index: int) -> bool:
    return index > 0 and tokens[index - 1].kind == "op" and tokens[index - 1].value in ".@"


def calls(tokens: list[Token]) -> list[Token]:
    """The steps and functions a Groovy file calls, as the identifier tokens naming them.

    A call is an identifier followed by ``(``, ``{``, a string, or named arguments
    (``waitForQualityGate abortPipeline: true``). Method calls on objects (``env.X``,
    ``list.each``), annotations, keywords, and the file's own function definitions are not.

    Args:
        tokens: the output of :func:`tokenize`.

    Returns:
        The identifier tokens, in order.
    """
    defined = set(_definitions(tokens))
    found = []
    for index, token in enumerate(tokens):
        if token.kind != "ident" or token.value in _GROOVY_KEYWORDS or _after_dot(tokens, index):
            continue
        if token.value in defined or index + 1 >= len(tokens):
            continue
        following = tokens[index + 1]
        named = (
            following.kind == "ident"
            and index + 2 < len(tokens)
            and tokens[index + 2].value == ":"
            and tokens[index + 2].kind == "op"
        )
        if (following.kind == "op" and following.value in "({") or following.kind == "string":
            found.append(token)
        elif named:
            found.append(token)
    return found


def _definitions(tokens: list[Token]) -> Iterator[str]:
    """Names of functions defined in the file (``void call(...)``, ``String f(...)``)."""
    for index in range(1, len(tokens) - 1):
        token, before, after = tokens[index], tokens[index - 1], tokens[index + 1]
        if token.kind != "ident" or after.value != "(" or before.line != token.line:
            continue
        typed = before.kind == "ident" and before.value not in _GROOVY_KEYWORDS
        generic = before.kind == "op" and before.value == ">"
        if typed or generic:
            yield token.value


def string_argument(tokens: list[Token], index: int) -> str | None:
    """The first string literal argument of the call named at ``tokens[index]``, if any."""
    position = index + 1
    if position < len(tokens) and tokens[position].value == "(":
        position += 1
    if position < len(tokens) and tokens[position].kind == "string":
        return tokens[position].value
    return None


def annotation_strings(tokens: list[Token], name: str) -> list[str]:
    """The string argument of every ``@name('value')`` annotation."""
    return [
        value
        for index in range(len(tokens) - 1)
        if tokens[index].value == "@"
        and tokens[index].kind == "op"
        and tokens[index + 1].value == name
        for value in [string_argument(tokens, index + 1)]
        if value is not None
    ]


def named_strings(tokens: list[Token], key: str) -> list[str]:
    """Every string literal given to the named argument ``key`` (``key: 'value'``)."""
    return [
        tokens[index + 2].value
        for index in range(len(tokens) - 2)
        if tokens[index].kind == "ident"
        and tokens[index].value == key
        and tokens[index + 1].value == ":"
        and tokens[index + 2].kind == "string"
    ]


def called_with(tokens: list[Token], name: str) -> list[str]:
    """The first string argument of every call to ``name`` (``credentials('id')``)."""
    return [
        value
        for index, token in enumerate(tokens)
        if token.kind == "ident" and token.value == name and not _after_dot(tokens, index)
        for value in [string_argument(tokens, index)]
        if value is not None
    ]


# --- declarative Pipeline --------------------------------------------------------------------


def declarative_problems(text: str) -> list[str]:
    """What is wrong with a declarative Jenkinsfile's skeleton; empty when it is well formed.

    Checks the sections of ``pipeline`` (``agent`` and ``stages`` required), that ``stages``
    and ``parallel`` hold only ``stage`` blocks, that each stage is named and has exactly one
    of ``steps``/``parallel``/``stages``/``matrix``, that ``steps`` are not empty, the names of
    directives, options, parameters, triggers, ``when`` conditions and ``post`` conditions,
    and that ``environment`` holds assignments only.

    Args:
        text: the Jenkinsfile.

    Returns:
        One line per problem, with its line number.
    """
    try:
        root = parse_blocks(tokenize(text))
    except GroovySyntaxError as error:
        return [f"not parsable: {error}"]
    problems = [
        f"line {statement.line}: unexpected top-level statement {statement.name!r}"
        for statement in root.statements
        if statement.name not in ("pipeline", "import")
    ]
    pipelines = root.blocks("pipeline")
    if len(pipelines) != 1:
        return [*problems, f"expected one pipeline {{ }} block, found {len(pipelines)}"]
    pipeline = pipelines[0]
    problems += _section_problems(pipeline, "pipeline", _DECLARATIVE_PIPELINE)
    names = [statement.name for statement in pipeline.statements]
    problems += [f"pipeline: missing {name}" for name in ("agent", "stages") if name not in names]
    for stages in pipeline.blocks("stages"):
        problems += _stages_problems(stages)
    for post in pipeline.blocks("post"):
        problems += _post_problems(post)
    problems += _named_items(pipeline, "options", _KNOWN_OPTIONS)
    problems += _named_items(pipeline, "parameters", _KNOWN_PARAMETERS)
    problems += _named_items(pipeline, "triggers", _KNOWN_TRIGGERS)
    return problems


def _section_problems(block: Block, where: str, allowed: frozenset[str]) -> list[str]:
    problems = []
    seen: set[str] = set()
    for statement in block.statements:
        if statement.name not in allowed:
            problems.append(f"line {statement.line}: {where}: unknown section {statement.name!r}")
        elif statement.name in seen:
            problems.append(f"line {statement.line}: {where}: {statement.name!r} twice")
        seen.add(statement.name)
    for environment in block.blocks("environment"):
        problems += [
            f"line {statement.line}: environment: {statement.name!r} is not an assignment"
            for statement in environment.statements
            if statement.next is None or statement.next.value != "="
        ]
    return problems


def _stages_problems(stages: Block) -> list[str]:
    problems = [
        f"line {statement.line}: stages may only hold stage blocks, not {statement.name!r}"
        for statement in stages.statements
        if statement.name != "stage"
    ]
    names: set[str] = set()
    for stage in stages.blocks("stage"):
        label = (
            stage.args[0].value if len(stage.args) == 1 and stage.args[0].kind == "string" else ""
        )
        where = f"stage {label!r}" if label else "stage"
        if not label:
            problems.append(f"line {stage.line}: a stage needs one string name: stage('Name')")
        elif label in names:
            problems.append(f"line {stage.line}: {where} twice in the same stages")
        names.add(label)
        problems += _section_problems(stage, where, _STAGE_DIRECTIVES)
        bodies = [name for name in _STAGE_BODIES if stage.blocks(name)]
        if len(bodies) != 1:
            problems.append(
                f"line {stage.line}: {where} needs exactly one of steps/parallel/stages/matrix, "
                f"has {bodies or 'none'}"
            )
        for steps in stage.blocks("steps"):
            if not steps.statements:
                problems.append(f"line {steps.line}: {where}: empty steps")
        for nested in stage.blocks("parallel") + stage.blocks("stages"):
            problems += _stages_problems(nested)
        for post in stage.blocks("post"):
            problems += _post_problems(post)
        problems += _named_items(stage, "options", _KNOWN_OPTIONS)
        for when in stage.blocks("when"):
            problems += [
                f"line {statement.line}: when: unknown condition {statement.name!r}"
                for statement in when.statements
                if statement.name not in _WHEN_CONDITIONS
            ]
    return problems


def _post_problems(post: Block) -> list[str]:
    problems = []
    for statement in post.statements:
        if statement.name not in _POST_CONDITIONS:
            problems.append(f"line {statement.line}: post: unknown condition {statement.name!r}")
    for condition in post.children:
        if not condition.statements:
            problems.append(f"line {condition.line}: post {condition.name}: no steps")
    return problems


def _named_items(block: Block, section: str, allowed: frozenset[str]) -> list[str]:
    return [
        f"line {statement.line}: {section}: unknown {statement.name!r}"
        for found in block.blocks(section)
        for statement in found.statements
        if statement.name not in allowed
    ]


# --- the repository's files ------------------------------------------------------------------


def jenkinsfiles(root: Path) -> list[Path]:
    """The orchestrator and every ``pipelines/*.Jenkinsfile`` under ``root``."""
    return [root / ORCHESTRATOR, *sorted((root / PIPELINES_DIR).glob("*.Jenkinsfile"))]


def groovy_sources(root: Path) -> list[Path]:
    """Every Groovy file Jenkins runs: the Jenkinsfiles, the library steps, the Job DSL seed."""
    return [
        *jenkinsfiles(root),
        *sorted((root / LIBRARY_VARS).glob("*.groovy")),
        root / SEED_FILE,
    ]


def pipeline_sources(root: Path) -> list[Path]:
    """The Groovy that runs inside builds: the Jenkinsfiles and the shared library's steps."""
    return [*jenkinsfiles(root), *sorted((root / LIBRARY_VARS).glob("*.groovy"))]


def makefile_targets(makefile: Path) -> set[str]:
    """The explicit targets of a Makefile (``name: prerequisites``), without pattern rules."""
    targets: set[str] = set()
    for line in makefile.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([^\s:=#][^:=#]*?)\s*:(?![=:])", line)
        if match:
            targets.update(
                word for word in match.group(1).split() if re.fullmatch(r"[A-Za-z][\w-]*", word)
            )
    return targets


def shell_commands(path: Path) -> list[tuple[int, str]]:
    """Each ``sh`` command of a Groovy file, with its line."""
    tokens = tokenize(path.read_text(encoding="utf-8"))
    return [
        (token.line, command)
        for index, token in enumerate(tokens)
        if token.kind == "ident" and token.value == "sh" and not _after_dot(tokens, index)
        for command in [string_argument(tokens, index)]
        if command is not None
    ]


def make_targets_called(command: str) -> list[str]:
    """The targets of a ``make`` command line (words that are neither VAR=value nor options)."""
    words = shlex.split(command)
    if not words or words[0] != "make":
        return []
    return [word for word in words[1:] if "=" not in word and not word.startswith("-")]


def plugin_pins(plugins_txt: Path) -> dict[str, str]:
    """``plugins.txt`` as id -> version (unpinned lines get an empty version)."""
    pins: dict[str, str] = {}
    for raw in plugins_txt.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            plugin, _, version = line.partition(":")
            pins[plugin.strip()] = version.strip()
    return pins


def casc_documents(root: Path) -> dict[str, dict[str, Any]]:
    """Every configuration-as-code file under ``jenkins/casc``, parsed, by file name."""
    return {
        path.name: yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for path in sorted((root / CASC_DIR).glob("*.y*ml"))
    }


def casc_section(root: Path, *keys: str) -> Any:
    """The value at ``keys`` (e.g. ``unclassified``, ``globalLibraries``) in the casc files."""
    for document in casc_documents(root).values():
        value: Any = document
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            return value
    return None


def defined_credentials(root: Path) -> set[str]:
    """The credential ids that configuration as code creates."""
    domains = casc_section(root, "credentials", "system", "domainCredentials") or []
    return {
        body["id"]
        for domain in domains
        for credential in domain.get("credentials") or []
        for body in credential.values()
        if isinstance(body, dict) and "id" in body
    }


@dataclass(frozen=True)
class SeededJob:
    """A job the Job DSL seed creates: its name, the Jenkinsfile it runs, its other keys."""

    name: str
    script_path: str
    #: The entry's other keys (``poll``, ``cron``, ``askPublish``...) with their string values.
    options: dict[str, str] = field(default_factory=dict, compare=False)


def seeded_jobs(seed: Path) -> list[SeededJob]:
    """The job table of the seed script (``[name: 'x', scriptPath: 'y', ...]`` entries)."""
    text = seed.read_text(encoding="utf-8")
    return [
        SeededJob(
            match.group(1),
            match.group(2),
            dict(re.findall(r"(\w+):\s*'([^']*)'", match.group(3))),
        )
        for match in re.finditer(
            r"\[\s*name:\s*'([^']+)',\s*scriptPath:\s*'([^']+)'([^\]]*)\]", text
        )
    ]


def dockerfile_lines(dockerfile: Path) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    return [
        line.strip()
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def image_copies(dockerfile: Path) -> dict[str, str]:
    """The image's ``COPY`` of build-context directories: destination -> source."""
    copies = {}
    for line in dockerfile_lines(dockerfile):
        words = line.split()
        if words[0].upper() == "COPY" and not any(w.startswith("--from") for w in words):
            paths = [word for word in words[1:] if not word.startswith("--")]
            copies[paths[-1]] = paths[0]
    return copies


# --- consistency checks ----------------------------------------------------------------------


def check_make_targets_exist(root: Path) -> list[str]:
    """Every ``make X`` the pipelines and the library run is a target of the Makefile."""
    targets = makefile_targets(root / "Makefile")
    return [
        f"{path.relative_to(root)}:{line}: `make {target}` is not a Makefile target"
        for path in pipeline_sources(root)
        for line, command in shell_commands(path)
        for target in make_targets_called(command)
        if target not in targets
    ]


def check_shell_runs_only_make(root: Path) -> list[str]:
    """Every ``sh`` step runs ``make <target> [VAR=value ...]`` and nothing else."""
    problems = []
    for path in pipeline_sources(root):
        for line, command in shell_commands(path):
            words = shlex.split(command)
            extra = [w for w in words[1:] if not re.fullmatch(r"[a-z][\w-]*|[A-Z_]+=.*", w)]
            if not words or words[0] != "make" or not make_targets_called(command) or extra:
                problems.append(f"{path.relative_to(root)}:{line}: not a make call: {command!r}")
    return problems


def check_credentials_defined(root: Path) -> list[str]:
    """Every credential id a pipeline, the library or a casc setting uses is defined in casc."""
    defined = defined_credentials(root)
    used: list[tuple[str, str]] = []
    for path in pipeline_sources(root):
        tokens = tokenize(path.read_text(encoding="utf-8"))
        ids = called_with(tokens, "credentials") + named_strings(tokens, "credentialsId")
        used += [(str(path.relative_to(root)), credential) for credential in ids]
    sonar = casc_section(root, "unclassified", "sonarGlobalConfiguration", "installations") or []
    used += [
        (f"{CASC_DIR} (sonarqube)", server["credentialsId"])
        for server in sonar
        if "credentialsId" in server
    ]
    problems = [
        f"{where}: credentials {credential!r} are not defined in {CASC_DIR}"
        for where, credential in used
        if credential not in defined
    ]
    return problems if used else ["no credentials used at all: the check read nothing"]


def check_steps_have_plugins(root: Path) -> list[str]:
    """Every step the pipelines call comes from a plugin pinned in plugins.txt (or the library)."""
    pins = plugin_pins(root / PLUGINS_FILE)
    library = {path.stem for path in (root / LIBRARY_VARS).glob("*.groovy")}
    problems = []
    for path in pipeline_sources(root):
        for token in calls(tokenize(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(root)}:{token.line}: {token.value}"
            plugin = STEP_PLUGINS.get(token.value)
            if plugin is None and token.value not in library:
                problems.append(f"{where}: no plugin known for this step (add it to STEP_PLUGINS)")
            elif plugin not in (None, CORE) and plugin not in pins:
                problems.append(f"{where}: needs plugin {plugin!r}, not in {PLUGINS_FILE}")
    return problems


def check_plugins_pinned(root: Path) -> list[str]:
    """Every line of plugins.txt is ``id:version`` with a real version, each id once."""
    problems = []
    seen: set[str] = set()
    for number, raw in enumerate((root / PLUGINS_FILE).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([a-z0-9][a-z0-9._-]*):(\d[\w.+-]*)", line)
        if not match:
            problems.append(f"{PLUGINS_FILE}:{number}: not pinned as id:version: {line!r}")
        elif match.group(1) in seen:
            problems.append(f"{PLUGINS_FILE}:{number}: {match.group(1)!r} listed twice")
        else:
            seen.add(match.group(1))
    return problems if seen else [f"{PLUGINS_FILE}: no plugin at all"]


def check_seed_matches_files(root: Path) -> list[str]:
    """The seed creates one job per Jenkinsfile, each pointing at an existing file."""
    jobs = seeded_jobs(root / SEED_FILE)
    text = (root / SEED_FILE).read_text(encoding="utf-8")
    problems = []
    if len(jobs) != len(re.findall(r"\bname:\s*'", text)):
        problems.append(f"{SEED_FILE}: a job entry is not `[name: '...', scriptPath: '...', ...]`")
    names = [job.name for job in jobs]
    problems += [f"{SEED_FILE}: job {name!r} twice" for name in set(names) if names.count(name) > 1]
    problems += [
        f"{SEED_FILE}: job {job.name!r} runs {job.script_path}, which does not exist"
        for job in jobs
        if not (root / job.script_path).is_file()
    ]
    seeded = {job.script_path for job in jobs}
    problems += [
        f"{path.relative_to(root)} has no job in {SEED_FILE}"
        for path in jenkinsfiles(root)
        if str(path.relative_to(root)) not in seeded
    ]
    return problems


def check_orchestrator_chain(root: Path) -> list[str]:
    """The orchestrator builds seeded jobs, in the order of the chain, each propagating failure."""
    tokens = tokenize((root / ORCHESTRATOR).read_text(encoding="utf-8"))
    built = named_strings(tokens, "job")
    seeded = {job.name for job in seeded_jobs(root / SEED_FILE)}
    problems = [
        f"{ORCHESTRATOR}: builds job {name!r}, which the seed does not create"
        for name in built
        if name not in seeded
    ]
    if tuple(built) != CHAIN:
        problems.append(f"{ORCHESTRATOR}: builds {built}, the chain is {list(CHAIN)}")
    if re.search(r"propagate:\s*false", (root / ORCHESTRATOR).read_text(encoding="utf-8")):
        problems.append(f"{ORCHESTRATOR}: propagate: false would not stop at the first failure")
    return problems


def check_images_pinned(root: Path) -> list[str]:
    """The Jenkins image is a pinned LTS release; every image copied from is pinned too."""
    problems = []
    for line in dockerfile_lines(root / DOCKERFILE):
        words = line.split()
        refs = [words[1]] if words[0].upper() == "FROM" else []
        refs += [word.split("=", 1)[1] for word in words if word.startswith("--from=")]
        for ref in refs:
            image, _, tag = ref.rpartition(":") if ":" in ref else (ref, "", "")
            if not re.match(r"\d+\.\d+", tag):
                problems.append(f"{DOCKERFILE}: {ref!r} is not pinned to a version")
            if words[0].upper() == "FROM" and not (
                image == "jenkins/jenkins" and re.fullmatch(r"\d+\.\d+\.\d+-lts-jdk\d+", tag)
            ):
                problems.append(f"{DOCKERFILE}: base {ref!r} is not a jenkins/jenkins LTS release")
    return problems


def check_casc_files_in_image(root: Path) -> list[str]:
    """The image holds what configuration as code reads: its own directory and the seed."""
    copies = image_copies(root / DOCKERFILE)
    text = (root / DOCKERFILE).read_text(encoding="utf-8")
    config = re.search(r"CASC_JENKINS_CONFIG=(\S+)", text)
    problems = []
    if not config or copies.get(config.group(1).rstrip("/") + "/") != "casc/":
        problems.append(f"{DOCKERFILE}: CASC_JENKINS_CONFIG is not where casc/ is copied")
    for entry in casc_section(root, "jobs") or []:
        target = entry.get("file") if isinstance(entry, dict) else None
        if target is None:
            continue
        source = next(
            (
                root / JENKINS_DIR / src / target[len(dest) :]
                for dest, src in copies.items()
                if target.startswith(dest)
            ),
            None,
        )
        if source is None or not source.is_file():
            problems.append(f"{CASC_DIR}: job script {target} is not a file the image copies")
    return problems


def check_casc_roots(root: Path) -> list[str]:
    """Each casc file parses, uses known root elements, and no root is in two files."""
    owners: dict[str, str] = {}
    problems = []
    for name, document in casc_documents(root).items():
        for key in document:
            if key not in _CASC_ROOTS:
                problems.append(f"{CASC_DIR}/{name}: unknown root element {key!r}")
            elif key in owners:
                problems.append(f"{CASC_DIR}/{name}: {key!r} is also in {owners[key]}")
            owners[key] = name
    return problems if owners else [f"{CASC_DIR}: no configuration at all"]


def check_named_servers(root: Path) -> list[str]:
    """``withSonarQubeEnv`` and ``@Library`` name a server and a library that casc defines."""
    sonar = casc_section(root, "unclassified", "sonarGlobalConfiguration", "installations") or []
    libraries = casc_section(root, "unclassified", "globalLibraries", "libraries") or []
    servers = {server.get("name") for server in sonar}
    names = {library.get("name") for library in libraries}
    problems = []
    for path in jenkinsfiles(root):
        tokens = tokenize(path.read_text(encoding="utf-8"))
        where = path.relative_to(root)
        problems += [
            f"{where}: SonarQube server {server!r} is not configured"
            for server in called_with(tokens, "withSonarQubeEnv")
            if server not in servers
        ]
        problems += [
            f"{where}: library {library!r} is not configured"
            for library in annotation_strings(tokens, "Library")
            if library not in names
        ]
    for library in libraries:
        path = (library.get("retriever", {}).get("modernSCM", {}) or {}).get("libraryPath", "")
        if not (root / path / "vars").is_dir():
            problems.append(f"{CASC_DIR}: library path {path!r} has no vars/ in the repository")
    return problems


def check_pipelines_notify(root: Path) -> list[str]:
    """Every pipeline announces its result from ``post { always { ... } }``."""
    problems = []
    for path in jenkinsfiles(root):
        blocks = parse_blocks(tokenize(path.read_text(encoding="utf-8")))
        always = [
            block
            for post in blocks.walk()
            if post.name == "post"
            for block in post.blocks("always")
        ]
        if not any(s.name == "notifyResult" for block in always for s in block.statements):
            problems.append(f"{path.relative_to(root)}: post {{ always {{ notifyResult(...) }} }}")
    return problems


def check_required_options(root: Path) -> list[str]:
    """Every pipeline sets the options the platform requires."""
    problems = []
    for path in jenkinsfiles(root):
        tree = parse_blocks(tokenize(path.read_text(encoding="utf-8")))
        options = {
            statement.name
            for pipeline in tree.blocks("pipeline")
            for block in pipeline.blocks("options")
            for statement in block.statements
        }
        missing = sorted(REQUIRED_OPTIONS - options)
        if missing:
            problems.append(f"{path.relative_to(root)}: options without {', '.join(missing)}")
    return problems


# --- issue 11: what running the pipelines in a real Jenkins showed ---------------------------

#: Report publishers: in post { always { } }, so a failed build still shows its reports.
PUBLISHERS = frozenset({"junit", "recordCoverage", "recordIssues", "archiveArtifacts"})

#: Publishers that skip a failed build unless given ``enabledForFailure: true``.
FAILURE_SKIPPING_PUBLISHERS = frozenset({"recordCoverage", "recordIssues"})

#: ``engines.node`` of the SonarQube scanner, by the version the Makefile's `sonar` target runs
#: with npx. From `npm view @sonar/scan@5.0.1 engines --json`; npx fetches the scanner, so it is
#: not in package-lock.json to be read. A new version in the Makefile needs its line here.
SONAR_SCAN_NODE_ENGINES = {"5.0.1": ">=22.12.0"}

#: The architectures the Jenkins image's Node.js checksums are pinned for (ARG NODE_SHA256_<X>).
NODE_ARCHES = ("AMD64", "ARM64")

#: The boolean parameter that asks for an image to be published (off unless ticked).
PUBLISH_PARAMETER = "PUBLISH"
PUBLISH_JOB = "publish"

#: Library steps: true in the build Jenkins starts at a job's first-ever poll; records the
#: running stage as the failed one; mails the result.
BASELINE_STEP = "pollingBaseline"
FAILED_STAGE_STEP = "recordFailedStage"
NOTIFY_STEP = "notifyResult"


def named_arguments(tokens: list[Token], index: int) -> dict[str, Token]:
    """The named arguments of the call at ``tokens[index]``, each with its value's first token.

    Only the call's own level counts: ``build(job: 'x', parameters: [booleanParam(name: 'P')])``
    gives ``job`` and ``parameters``, not ``name``.
    """
    if index + 1 >= len(tokens) or tokens[index + 1].value != "(":
        return {}
    found: dict[str, Token] = {}
    depth = 0
    for position in range(index + 1, len(tokens) - 2):
        token = tokens[position]
        if token.kind == "op" and token.value in ("(", "["):
            depth += 1
        elif token.kind == "op" and token.value in (")", "]"):
            depth -= 1
            if depth == 0:
                break
        elif depth == 1 and token.kind == "ident" and tokens[position + 1].value == ":":
            found[token.value] = tokens[position + 2]
    return found


def stage_name(stage: Block) -> str:
    """The name of a ``stage('Name') { }`` block ('' when it has none)."""
    return stage.args[0].value if len(stage.args) == 1 and stage.args[0].kind == "string" else ""


def top_level_stages(tree: Block) -> list[Block]:
    """The stages directly under ``pipeline { stages { } }``, in order."""
    return [
        stage
        for pipeline in tree.blocks("pipeline")
        for stages in pipeline.blocks("stages")
        for stage in stages.blocks("stage")
    ]


def _idents(tokens: list[Token]) -> set[str]:
    return {token.value for token in tokens if token.kind == "ident"}


def _reads_param(tokens: list[Token], name: str) -> bool:
    """Whether ``params.<name>`` occurs in ``tokens``."""
    return any(
        tokens[i].value == "params" and tokens[i + 1].value == "." and tokens[i + 2].value == name
        for i in range(len(tokens) - 2)
    )


def _when_tokens(stage: Block) -> list[Token]:
    return [token for when in stage.blocks("when") for token in when.body]


def satisfies(version: str, spec: str) -> bool:
    """Whether ``version`` (x.y.z) is in an npm range of comparators, e.g. ``>=22.12.0``.

    Alternatives (``||``) and space-separated comparators (``>=18 <20``) are understood.

    Raises:
        ValueError: the range uses other syntax (``^``, ``~``, ``x``), which this does not read.
    """

    def parse(text: str) -> tuple[int, ...]:
        parts = [int(part) for part in text.split(".")]
        return tuple(parts + [0] * (3 - len(parts)))

    target = parse(version)
    tests: dict[str, Callable[[tuple[int, ...]], bool]] = {
        ">=": lambda bound: target >= bound,
        "<=": lambda bound: target <= bound,
        ">": lambda bound: target > bound,
        "<": lambda bound: target < bound,
        "=": lambda bound: target == bound,
    }
    for alternative in spec.split("||"):
        met = True
        for comparator in alternative.split():
            match = re.fullmatch(r"(>=|<=|>|<|=)?(\d+(?:\.\d+){0,2})", comparator)
            if not match:
                raise ValueError(f"npm range syntax not understood: {comparator!r}")
            met = met and tests[match.group(1) or "="](parse(match.group(2)))
        if met:
            return True
    return False


def _apt_installed(command_lines: list[str]) -> set[str]:
    """Packages named by the ``apt-get install`` commands in ``command_lines``."""
    packages: set[str] = set()
    for line in command_lines:
        for command in re.split(r"&&|\|\||;", line):
            words = command.split()
            if "apt-get" in words and "install" in words:
                after = words[words.index("install") + 1 :]
                packages.update(word for word in after if not word.startswith("-"))
    return packages


def image_apt_packages(dockerfile: Path) -> set[str]:
    """The Debian packages a Dockerfile's RUN instructions install."""
    runs = [line for line in dockerfile_lines(dockerfile) if line.split()[0].upper() == "RUN"]
    return _apt_installed(runs)


def system_deps_packages(makefile: Path) -> set[str]:
    """The Debian packages `make system-deps` installs (its recipe's ``apt-get install``)."""
    match = re.search(
        r"^system-deps:.*\n((?:\t.*\n?)*)", makefile.read_text(encoding="utf-8"), re.M
    )
    return _apt_installed(match.group(1).splitlines()) if match else set()


def dockerfile_args(dockerfile: Path) -> dict[str, str]:
    """The Dockerfile's ``ARG NAME=default`` values."""
    values: dict[str, str] = {}
    for line in dockerfile_lines(dockerfile):
        words = line.split()
        if words[0].upper() == "ARG":
            for word in words[1:]:
                name, equals, default = word.partition("=")
                if equals:
                    values[name] = default
    return values


def check_reports_published_on_failure(root: Path) -> list[str]:
    """Reports are published from post { always { } }, and coverage also for a failed build."""
    problems = []
    for path in jenkinsfiles(root):
        tokens = tokenize(path.read_text(encoding="utf-8"))
        tree = parse_blocks(tokens)
        always = {
            id(token)
            for post in tree.walk()
            if post.name == "post"
            for block in post.blocks("always")
            for token in block.body
        }
        called = {id(token) for token in calls(tokens)}
        where = path.relative_to(root)
        for index, token in enumerate(tokens):
            if id(token) not in called or token.value not in PUBLISHERS:
                continue
            if id(token) not in always:
                problems.append(
                    f"{where}:{token.line}: {token.value} outside post {{ always {{ }} }} "
                    "skips some results"
                )
            flag = named_arguments(tokens, index).get("enabledForFailure")
            enabled = flag is not None and flag.value == "true"
            if token.value in FAILURE_SKIPPING_PUBLISHERS and not enabled:
                problems.append(
                    f"{where}:{token.line}: {token.value} without enabledForFailure: true "
                    "shows nothing for a failed build"
                )
    return problems


def check_node_runs_the_sonar_scanner(root: Path) -> list[str]:
    """The Jenkins image's Node.js is pinned, checksummed, and runs the Makefile's scanner."""
    scanner = re.search(r"@sonar/scan@(\d[\w.-]*)", (root / "Makefile").read_text(encoding="utf-8"))
    if not scanner:
        return ["Makefile: the sonar target names no @sonar/scan@<version>"]
    version = scanner.group(1)
    engines = SONAR_SCAN_NODE_ENGINES.get(version)
    if engines is None:
        return [
            f"@sonar/scan {version}: engines.node unknown; add `npm view @sonar/scan@{version} "
            "engines --json` to SONAR_SCAN_NODE_ENGINES"
        ]
    args = dockerfile_args(root / DOCKERFILE)
    node = args.get("NODE_VERSION", "")
    problems = []
    if not re.fullmatch(r"\d+\.\d+\.\d+", node):
        problems.append(f"{DOCKERFILE}: no ARG NODE_VERSION=<x.y.z> pins Node.js")
    elif not satisfies(node, engines):
        problems.append(
            f"{DOCKERFILE}: Node.js {node} does not satisfy engines.node {engines!r} "
            f"of @sonar/scan {version} (make sonar)"
        )
    problems += [
        f"{DOCKERFILE}: ARG NODE_SHA256_{arch} is not a SHA-256"
        for arch in NODE_ARCHES
        if not re.fullmatch(r"[0-9a-f]{64}", args.get(f"NODE_SHA256_{arch}", ""))
    ]
    if "sha256sum -c" not in " ".join(dockerfile_lines(root / DOCKERFILE)):
        problems.append(f"{DOCKERFILE}: the Node.js archive is not checked (sha256sum -c)")
    if {"nodejs", "npm"} & image_apt_packages(root / DOCKERFILE):
        problems.append(f"{DOCKERFILE}: installs Debian's nodejs/npm next to the pinned Node.js")
    return problems


def check_system_deps_in_image(root: Path) -> list[str]:
    """The Jenkins image has what `make system-deps` installs: the quality pipeline runs the
    tests that need it, and Jenkins' CI=true turns their skip into a failure."""
    wanted = system_deps_packages(root / "Makefile")
    if not wanted:
        return ["Makefile: system-deps installs no Debian package: the check read nothing"]
    return [
        f"{DOCKERFILE}: does not install {name!r}, which `make system-deps` installs"
        for name in sorted(wanted - image_apt_packages(root / DOCKERFILE))
    ]


def _declares_off_switch(tree: Block, name: str) -> bool:
    """Whether ``parameters { booleanParam(name: '<name>', defaultValue: false) }`` is there."""
    for pipeline in tree.blocks("pipeline"):
        for parameters in pipeline.blocks("parameters"):
            body = parameters.body
            for index, token in enumerate(body):
                if token.value != "booleanParam":
                    continue
                args = named_arguments(body, index)
                if "name" in args and args["name"].value == name:
                    return "defaultValue" in args and args["defaultValue"].value == "false"
    return False


def check_publish_only_when_asked(root: Path) -> list[str]:
    """An image is published only when PUBLISH is ticked: off by default on the orchestrator
    and the publish job (declared by the seed too, so it exists before any build), the
    orchestrator builds publish only then, and publish refuses to run without it."""
    jobs = seeded_jobs(root / SEED_FILE)
    orchestrator = next((job for job in jobs if job.script_path == ORCHESTRATOR), None)
    publish = next((job for job in jobs if job.name == PUBLISH_JOB), None)
    if orchestrator is None or publish is None:
        return [f"{SEED_FILE}: no orchestrator or {PUBLISH_JOB} job"]
    problems = []
    seed = (root / SEED_FILE).read_text(encoding="utf-8")
    if not re.search(rf"booleanParam\(\s*'{PUBLISH_PARAMETER}',\s*false\b", seed):
        problems.append(f"{SEED_FILE}: no booleanParam('{PUBLISH_PARAMETER}', false, ...)")
    trees = {}
    for job in (orchestrator, publish):
        if job.options.get("askPublish") != "true":
            problems.append(f"{SEED_FILE}: job {job.name!r} lacks askPublish: 'true'")
        trees[job.name] = parse_blocks(tokenize((root / job.script_path).read_text("utf-8")))
        if not _declares_off_switch(trees[job.name], PUBLISH_PARAMETER):
            problems.append(
                f"{job.script_path}: no booleanParam(name: '{PUBLISH_PARAMETER}', "
                "defaultValue: false)"
            )

    stages = top_level_stages(trees[publish.name])
    first = stages[0] if stages else Block(None, [], 0)
    refuses = (
        _reads_param(_when_tokens(first), PUBLISH_PARAMETER)
        and "not" in _idents(_when_tokens(first))
        and any(s.name == "error" for steps in first.blocks("steps") for s in steps.statements)
    )
    if not refuses:
        problems.append(
            f"{publish.script_path}: the first stage must fail (error) unless "
            f"params.{PUBLISH_PARAMETER} is ticked"
        )

    building = [
        block
        for block in trees[orchestrator.name].walk()
        if block.name == "stage" and named_strings(block.body, "job") == [PUBLISH_JOB]
    ]
    for stage in building:
        when = _when_tokens(stage)
        if not _reads_param(when, PUBLISH_PARAMETER) or "not" in _idents(when):
            problems.append(
                f"{orchestrator.script_path}: stage {stage_name(stage)!r} builds {PUBLISH_JOB} "
                f"without when {{ expression {{ params.{PUBLISH_PARAMETER} }} }}"
            )
        passed = any(t.kind == "string" and t.value == PUBLISH_PARAMETER for t in stage.body)
        if not passed:
            problems.append(
                f"{orchestrator.script_path}: stage {stage_name(stage)!r} does not pass "
                f"{PUBLISH_PARAMETER} to the {PUBLISH_JOB} job"
            )
    if not building:
        problems.append(f"{orchestrator.script_path}: no stage builds job {PUBLISH_JOB!r}")
    return problems


def check_first_poll_runs_nothing(root: Path) -> list[str]:
    """A polled job's first-ever build, which Jenkins starts at the first poll without any
    commit, runs no stage and sends no mail: it only records the revision polls compare with."""
    problems = []
    for job in seeded_jobs(root / SEED_FILE):
        if not job.options.get("poll"):
            continue
        tree = parse_blocks(tokenize((root / job.script_path).read_text(encoding="utf-8")))
        problems += [
            f"{job.script_path}: stage {stage_name(stage)!r} runs in the first poll's build "
            f"(when {{ not {{ expression {{ {BASELINE_STEP}() }} }} }})"
            for stage in top_level_stages(tree)
            if not {"not", BASELINE_STEP} <= _idents(_when_tokens(stage))
        ]
        options = {
            statement.name
            for pipeline in tree.blocks("pipeline")
            for block in pipeline.blocks("options")
            for statement in block.statements
        }
        if "skipDefaultCheckout" in options:
            problems.append(
                f"{job.script_path}: skipDefaultCheckout: the first poll's build would record "
                "no revision, so every poll would build"
            )
    step = root / LIBRARY_VARS / f"{BASELINE_STEP}.groovy"
    if not step.is_file():
        problems.append(f"{LIBRARY_VARS}: no {BASELINE_STEP}.groovy")
    notify = root / LIBRARY_VARS / f"{NOTIFY_STEP}.groovy"
    if BASELINE_STEP not in {t.value for t in calls(tokenize(notify.read_text("utf-8")))}:
        problems.append(f"{LIBRARY_VARS}/{NOTIFY_STEP}.groovy: mails the first poll's build")
    return problems


def check_failed_stage_recorded(root: Path) -> list[str]:
    """Every stage that runs steps names itself as the failed stage when it fails."""
    problems = []
    for path in jenkinsfiles(root):
        tree = parse_blocks(tokenize(path.read_text(encoding="utf-8")))
        for stage in tree.walk():
            if stage.name != "stage" or not stage.blocks("steps"):
                continue
            recorded = any(
                statement.name == FAILED_STAGE_STEP
                for post in stage.blocks("post")
                for failure in post.blocks("failure")
                for statement in failure.statements
            )
            if not recorded:
                problems.append(
                    f"{path.relative_to(root)}:{stage.line}: stage {stage_name(stage)!r} lacks "
                    f"post {{ failure {{ {FAILED_STAGE_STEP}() }} }}"
                )
    return problems


def check_mail_needs_no_python(root: Path) -> list[str]:
    """The result mail comes from Jenkins' email-ext: no shell, so no Python environment to
    build first; it names the failed stage and carries the log's tail."""
    path = root / LIBRARY_VARS / f"{NOTIFY_STEP}.groovy"
    tokens = tokenize(path.read_text(encoding="utf-8"))
    called = {token.value for token in calls(tokens)}
    texts = " ".join(token.value for token in tokens if token.kind == "string")
    where = f"{LIBRARY_VARS}/{NOTIFY_STEP}.groovy"
    problems = []
    if "emailext" not in called:
        problems.append(f"{where}: does not mail with emailext")
    problems += [
        f"{where}: runs {step}: mailing must not need the workspace's tools"
        for step in sorted(called & {"sh", "bat", "powershell", "withCredentials"})
    ]
    if "${BUILD_LOG" not in texts:
        problems.append(f"{where}: the mail lacks the log's tail (${{BUILD_LOG, maxLines=N}})")
    if "FAILED_STAGE" not in _idents(tokens):
        problems.append(f"{where}: the mail does not name the failed stage (env.FAILED_STAGE)")
    recorder = root / LIBRARY_VARS / f"{FAILED_STAGE_STEP}.groovy"
    if not recorder.is_file() or "FAILED_STAGE" not in _idents(
        tokenize(recorder.read_text(encoding="utf-8"))
    ):
        problems.append(f"{LIBRARY_VARS}: {FAILED_STAGE_STEP}.groovy does not set FAILED_STAGE")
    account = casc_section(root, "unclassified", "email-ext", "mailAccount") or {}
    if not account.get("smtpHost"):
        problems.append(f"{CASC_DIR}: email-ext has no mailAccount.smtpHost")
    return problems


# --- the rollout pipeline: a challenger on live traffic --------------------------------------

#: The pipeline that puts a challenger beside the champion, its job, and the seed's table of
#: that job's parameters (``[type, name, default, help]`` entries).
ROLLOUT_PIPELINE = f"{PIPELINES_DIR}/rollout.Jenkinsfile"
ROLLOUT_JOB = "rollout"
ROLLOUT_SEED_TABLE = "rolloutParameters"
#: The comparison `make rollout-status` writes, which the pipeline reads and mails.
ROLLOUT_STATUS = "reports/rollout.json"
ROLLOUT_SUMMARY = "reports/rollout.md"
#: The state field that says a rollout has ended (promoted, rolled back, stopped by the guard).
ROLLOUT_ENDED = "ended_by"
#: The Jenkinsfile's parameter steps, by the type the seed's table names them with.
_SEED_PARAMETER_TYPES = {"string": "string", "choice": "choice", "booleanParam": "boolean"}


def make_steps(tokens: list[Token], target: str) -> list[Token]:
    """The command tokens of the ``sh`` steps among ``tokens`` that run ``make <target>``."""
    found = []
    for index, token in enumerate(tokens[:-1]):
        if token.kind != "ident" or token.value != "sh" or _after_dot(tokens, index):
            continue
        position = index + 2 if tokens[index + 1].value == "(" else index + 1
        if position < len(tokens) and tokens[position].kind == "string":
            if target in make_targets_called(tokens[position].value):
                found.append(tokens[position])
    return found


def enclosing(tree: Block, token: Token) -> list[Block]:
    """The blocks around ``token``, outermost first (the root block included)."""
    return [block for block in tree.walk() if any(t is token for t in block.body)]


def _literal(tokens: list[Token], start: int) -> tuple[Any, int]:
    """The Groovy literal at ``tokens[start]`` (string, true/false, list of them) and the index
    after it; anything else reads as its token's text."""
    token = tokens[start]
    if token.kind == "op" and token.value == "[":
        items, index = [], start + 1
        while index < len(tokens) and tokens[index].value != "]":
            if tokens[index].value != ",":
                item, index = _literal(tokens, index)
                items.append(item)
            else:
                index += 1
        return tuple(items), index + 1
    if token.kind == "ident" and token.value in ("true", "false"):
        return token.value == "true", start + 1
    return token.value, start + 1


def jenkinsfile_parameters(tree: Block) -> dict[str, tuple[str, Any]]:
    """``pipeline { parameters { } }`` as name -> (type, default); a choice's default is the
    tuple of its choices (the first is the default)."""
    found: dict[str, tuple[str, Any]] = {}
    for pipeline in tree.blocks("pipeline"):
        for parameters in pipeline.blocks("parameters"):
            body = parameters.body
            for index, token in enumerate(body):
                kind = _SEED_PARAMETER_TYPES.get(token.value)
                if token.kind != "ident" or kind is None:
                    continue
                args = named_arguments(body, index)
                value = "choices" if kind == "choice" else "defaultValue"
                default = _literal(body, body.index(args[value]))[0] if value in args else None
                found[args["name"].value if "name" in args else ""] = (kind, default)
    return found


def seed_parameters(tokens: list[Token], table: str) -> dict[str, tuple[str, Any]]:
    """The seed's ``table = [[type, name, default, help], ...]`` as name -> (type, default)."""
    for index, token in enumerate(tokens[:-2]):
        if token.value == table and tokens[index + 1].value == "=":
            rows = _literal(tokens, index + 2)[0]
            return {str(row[1]): (str(row[0]), row[2]) for row in rows if len(row) == 4}
    return {}


def check_rollout_parameters_seeded(root: Path) -> list[str]:
    """The rollout job declares its parameters from the seed, as the Jenkinsfile does: it is
    started through the API or the CLI too, and Jenkins drops undeclared parameters. No
    default challenger, and no promotion without a person unless AUTO_PROMOTE is ticked."""
    job = next((j for j in seeded_jobs(root / SEED_FILE) if j.name == ROLLOUT_JOB), None)
    if job is None or job.script_path != ROLLOUT_PIPELINE:
        return [f"{SEED_FILE}: no job {ROLLOUT_JOB!r} running {ROLLOUT_PIPELINE}"]
    problems = []
    if job.options.get("askRollout") != "true":
        problems.append(f"{SEED_FILE}: job {ROLLOUT_JOB!r} lacks askRollout: 'true'")
    tree = parse_blocks(tokenize((root / ROLLOUT_PIPELINE).read_text(encoding="utf-8")))
    declared = jenkinsfile_parameters(tree)
    seeded = seed_parameters(tokenize((root / SEED_FILE).read_text("utf-8")), ROLLOUT_SEED_TABLE)
    if not seeded:
        problems.append(
            f"{SEED_FILE}: no {ROLLOUT_SEED_TABLE} = [[type, name, default, help], ...]"
        )
    for name in sorted(declared.keys() | seeded.keys()):
        if name not in seeded:
            problems.append(f"{SEED_FILE}: {ROLLOUT_SEED_TABLE} lacks {name} ({ROLLOUT_PIPELINE})")
        elif name not in declared:
            problems.append(f"{ROLLOUT_PIPELINE}: no parameter {name} ({SEED_FILE} has one)")
        elif declared[name] != seeded[name]:
            problems.append(
                f"{name}: {seeded[name]} in {SEED_FILE}, {declared[name]} in {ROLLOUT_PIPELINE}"
            )
    if declared.get("VERSION") != ("string", ""):
        problems.append(f"{ROLLOUT_PIPELINE}: VERSION must be a string parameter without default")
    if not _declares_off_switch(tree, "AUTO_PROMOTE"):
        problems.append(
            f"{ROLLOUT_PIPELINE}: no booleanParam(name: 'AUTO_PROMOTE', defaultValue: false)"
        )
    return problems


def _sets_env(tokens: list[Token], value: str) -> set[str]:
    """The names ``X`` of every ``env.X = '<value>'`` among ``tokens`` (not ``==``)."""
    return {
        tokens[i + 2].value
        for i in range(len(tokens) - 4)
        if tokens[i].value == "env"
        and tokens[i + 1].value == "."
        and tokens[i + 3].value == "="
        and tokens[i + 4].kind == "string"
        and tokens[i + 4].value == value
    }


def check_rollout_rolls_back_on_failure(root: Path) -> list[str]:
    """Once `make rollout-start` has succeeded, a failed or aborted build rolls the challenger
    back: the stage around the start, and around every later rollout step, has post { failure
    { } aborted { } }, each running `make rollout-rollback` under a flag the start stage sets
    after the start. A stage's post runs before the pipeline's, so the mail shows the rollback.
    Every rollback checks that the rollout is still on trial (``state.ended_by``): once it has
    ended (the guard stopped it, someone rolled it back), `make rollout-rollback` gives
    `champion` back to `previous_champion`."""
    tokens = tokenize((root / ROLLOUT_PIPELINE).read_text(encoding="utf-8"))
    tree = parse_blocks(tokens)
    starts = make_steps(tokens, "rollout-start")
    if len(starts) != 1:
        return [f"{ROLLOUT_PIPELINE}: runs `make rollout-start` {len(starts)} times, not once"]
    stages = [block for block in enclosing(tree, starts[0]) if block.name == "stage"]
    start = stages[-1]
    after = start.body[next(i for i, t in enumerate(start.body) if t is starts[0]) :]
    flags = _sets_env(after, "true")
    problems = []
    if not flags:
        problems.append(
            f"{ROLLOUT_PIPELINE}: stage {stage_name(start)!r} sets no env flag to 'true' after "
            "`make rollout-start` (what tells the post a rollout is on)"
        )
    guard = next((stage for stage in reversed(stages[:-1]) if stage.blocks("post")), None)
    if guard is None:
        return [
            *problems,
            f"{ROLLOUT_PIPELINE}: stage {stage_name(start)!r} is in no stage with a post that "
            "rolls back",
        ]
    for condition in ("failure", "aborted"):
        blocks = [block for post in guard.blocks("post") for block in post.blocks(condition)]
        rollbacks = [
            token for block in blocks for token in make_steps(block.body, "rollout-rollback")
        ]
        if not rollbacks:
            problems.append(
                f"{ROLLOUT_PIPELINE}: stage {stage_name(guard)!r} has no post {{ {condition} "
                "{ make rollout-rollback } }"
            )
        for token in rollbacks:
            conditions = [t for b in enclosing(tree, token) if b.name == "if" for t in b.args]
            if not flags & _idents(conditions):
                problems.append(
                    f"{ROLLOUT_PIPELINE}:{token.line}: post {condition} rolls back without "
                    f"checking the flag set after the start ({', '.join(sorted(flags)) or 'none'})"
                )
    for token in make_steps(tokens, "rollout-rollback"):
        checked = {t.value for b in enclosing(tree, token) if b.name == "if" for t in b.args}
        if ROLLOUT_ENDED not in checked:
            problems.append(
                f"{ROLLOUT_PIPELINE}:{token.line}: `make rollout-rollback` without checking that "
                f"the rollout is still on trial (state.{ROLLOUT_ENDED}); once ended, it gives "
                "`champion` back to `previous_champion`"
            )
    guarded = {id(token) for token in guard.body}
    for target in ("rollout-status", "rollout-ramp", "rollout-promote", "rollout-rollback"):
        for token in make_steps(tokens, target):
            inside_stage = any(block.name == "stage" for block in enclosing(tree, token))
            if inside_stage and id(token) not in guarded:
                problems.append(
                    f"{ROLLOUT_PIPELINE}:{token.line}: `make {target}` runs outside stage "
                    f"{stage_name(guard)!r}, whose post rolls back"
                )
    return problems


def _compares(tokens: list[Token], operator: str, value: str) -> bool:
    """Whether ``<operator> '<value>'`` (``==`` as two ``=`` tokens) occurs in ``tokens``."""
    ops = list(operator)
    size = len(ops)
    return any(
        [t.value for t in tokens[i : i + size]] == ops
        and tokens[i + size].kind == "string"
        and tokens[i + size].value == value
        for i in range(len(tokens) - size)
    )


def check_rollout_decides_on_evidence(root: Path) -> list[str]:
    """The challenger is promoted only on the live comparison's verdict, and the mail shows it.

    `make rollout-promote` runs once, in the branch ``if (... == 'promote')``; before the stage
    that decides, a loop (``while``) runs `make rollout-status` and reads reports/rollout.json;
    without AUTO_PROMOTE a person answers an ``input`` held in a ``timeout``; the pipeline's
    post { always { } } runs `make rollout-status` again before notifyResult, which is given
    reports/rollout.md.
    """
    tokens = tokenize((root / ROLLOUT_PIPELINE).read_text(encoding="utf-8"))
    tree = parse_blocks(tokens)
    problems = []
    promotions = make_steps(tokens, "rollout-promote")
    if len(promotions) != 1:
        problems.append(f"{ROLLOUT_PIPELINE}: runs `make rollout-promote` {len(promotions)} times")
    deciding: list[Block] = []
    for token in promotions:
        around = enclosing(tree, token)
        branch = next((b for b in reversed(around) if b.name in ("if", "else")), None)
        if branch is None or branch.name != "if" or not _compares(branch.args, "==", "promote"):
            problems.append(
                f"{ROLLOUT_PIPELINE}:{token.line}: `make rollout-promote` outside "
                "if (... == 'promote') { }"
            )
        deciding += [b for b in around if b.name == "stage"][-1:]
    loops = [
        block
        for block in tree.walk()
        if block.name == "while"
        and make_steps(block.body, "rollout-status")
        and ROLLOUT_STATUS in named_strings(block.body, "file")
        and "readJSON" in {t.value for t in calls(block.body)}
    ]
    if not any(all(loop.line < stage.line for stage in deciding) for loop in loops):
        problems.append(
            f"{ROLLOUT_PIPELINE}: no loop (while) runs `make rollout-status` and reads "
            f"{ROLLOUT_STATUS} before the stage that decides"
        )
    inputs = [t for t in calls(tokens) if t.value == "input"]
    if not inputs:
        problems.append(f"{ROLLOUT_PIPELINE}: no input step: nobody approves a promotion")
    for token in inputs:
        around = enclosing(tree, token)
        if not any(block.name == "timeout" for block in around):
            problems.append(f"{ROLLOUT_PIPELINE}:{token.line}: input without a timeout around it")
        asked = any(
            block.name == "if"
            and any(
                [t.value for t in block.args[i : i + 4]] == ["!", "params", ".", "AUTO_PROMOTE"]
                for i in range(len(block.args))
            )
            for block in around
        )
        if not asked:
            problems.append(
                f"{ROLLOUT_PIPELINE}:{token.line}: input is not in if (... !params.AUTO_PROMOTE)"
            )
    always = [
        block
        for pipeline in tree.blocks("pipeline")
        for post in pipeline.blocks("post")
        for block in post.blocks("always")
    ]
    body = [token for block in always for token in block.body]
    status = [token.line for token in make_steps(body, "rollout-status")]
    mails = [(i, t) for i, t in enumerate(body) if t.value == NOTIFY_STEP and t.kind == "ident"]
    if not status or not mails or min(status) > mails[0][1].line:
        problems.append(
            f"{ROLLOUT_PIPELINE}: post {{ always {{ }} }} must run `make rollout-status` before "
            f"{NOTIFY_STEP}"
        )
    summaries = _literal(body, mails[0][0] + 2)[0] if mails else ()
    if not isinstance(summaries, tuple) or ROLLOUT_SUMMARY not in summaries:
        problems.append(f"{ROLLOUT_PIPELINE}: {NOTIFY_STEP} is not given {ROLLOUT_SUMMARY}")
    return problems


#: Every consistency check, by the name the tests use.
CHECKS: dict[str, Callable[[Path], list[str]]] = {
    "make-targets-exist": check_make_targets_exist,
    "sh-runs-only-make": check_shell_runs_only_make,
    "credentials-defined": check_credentials_defined,
    "steps-have-plugins": check_steps_have_plugins,
    "plugins-pinned": check_plugins_pinned,
    "seed-matches-files": check_seed_matches_files,
    "orchestrator-chain": check_orchestrator_chain,
    "images-pinned": check_images_pinned,
    "casc-files-in-image": check_casc_files_in_image,
    "casc-roots": check_casc_roots,
    "named-servers": check_named_servers,
    "pipelines-notify": check_pipelines_notify,
    "required-options": check_required_options,
    "reports-published-on-failure": check_reports_published_on_failure,
    "node-runs-sonar-scanner": check_node_runs_the_sonar_scanner,
    "system-deps-in-image": check_system_deps_in_image,
    "publish-only-when-asked": check_publish_only_when_asked,
    "first-poll-runs-nothing": check_first_poll_runs_nothing,
    "failed-stage-recorded": check_failed_stage_recorded,
    "mail-needs-no-python": check_mail_needs_no_python,
    "rollout-parameters-seeded": check_rollout_parameters_seeded,
    "rollout-rolls-back-on-failure": check_rollout_rolls_back_on_failure,
    "rollout-decides-on-evidence": check_rollout_decides_on_evidence,
}
