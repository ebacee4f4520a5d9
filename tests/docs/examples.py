"""The docs' examples, read from docs/*.md and run against a real Rebound (tests/docs/test_examples.py).

What is an example, and how it is checked:

* A fenced `sh` block's `curl` commands (continuation lines and multi-line quoted bodies included). Each runs in
  bash, in order, with `$KEY` an agent key and `$OPERATOR_KEY` an operator's personal key, the docs' server
  (`http://127.0.0.1:8000`, `http://rebound:8000`, ...) replaced by the server under test and the docs'
  outside hosts (`billing.internal.example`, ...) by a local stand-in. Other lines of the block are left out.
* The comment that follows a command, `# {...}` or `# 201 {...}` (over several `#` lines), or a ```json block
  right after the `sh` block, is its expected answer: the status, when it says one (otherwise any 2xx), and
  each `"key": value` pair with a plain value, found anywhere in the answer. `"…"` matches anything; a text
  cut short with `…` matches a value that starts so; a short word before `…` (`"0d5c…"`) stands for what the
  server makes up (an id), matches any value, and later commands get the real value where the docs wrote the
  stand-in (`/api/v1/retries/0d5c…`). A GET whose answer does not match yet is asked again
  for a while: workers run retries and rollbacks after the answer that started them.
* A fenced `python` block of a doc that creates a `Client`: the blocks of one doc run in order in one
  namespace, with the docs' server and key (`"rb_…"`) replaced as above. Names the prose leaves to the reader
  (the agent's own libraries and functions: `openai`, `chat`, `search`) are stand-ins: callables that answer
  JSON, whose attributes are stand-ins too. A block passes when it raises nothing. Functions it defines are
  defined, not called.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import inspect
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
DOCS_SERVERS = (
    "http://127.0.0.1:8000",
    "http://localhost:8000",
    "http://rebound:8000",
    "http://rebound.internal:8000",
)
FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
SHELLS = {"sh", "bash", "shell", "console"}
STATUS_FIRST = re.compile(r"^(\d{3})(?:\s+(.*))?$", re.S)
PAIR = re.compile(r'"([^"\\]+)"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null)')
ELLIPSIS = "…"
MADE_UP = re.compile(r"[0-9A-Za-z_]{1,12}…")
KEY_PLACEHOLDER = re.compile(r'"rb_[^"\s]*…"')
POLL_SECONDS = 40.0


@dataclass
class Command:
    text: str
    line: int
    expected: str | None = None

    @property
    def method(self) -> str:
        found = re.search(r"(?:-X|--request)\s+([A-Z]+)", self.text)
        if found:
            return found.group(1)
        return "POST" if re.search(r"\s(-d|--data\S*|--json)\s", self.text) else "GET"


@dataclass
class Example:
    doc: str
    line: int
    language: str  # "sh" or "python"
    commands: list[Command] = field(default_factory=list)
    code: str = ""

    @property
    def name(self) -> str:
        return f"{self.doc}:{self.line}"


# --- reading the docs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    language: str
    line: int  # of the opening fence, from 1
    text: str
    follows: Block | None  # the block just before, with nothing but blank lines between


def blocks(text: str) -> list[Block]:
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    previous_end = -10
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        start, language, body = i, opening.group(1).lower(), []
        i += 1
        while i < len(lines) and not FENCE.match(lines[i]):
            body.append(lines[i])
            i += 1
        adjacent = found and all(not line.strip() for line in lines[previous_end + 1 : start])
        found.append(Block(language, start + 1, "\n".join(body), found[-1] if adjacent else None))
        previous_end = i
        i += 1
    return found


def _open_quote(text: str) -> str | None:
    """The quote a shell would still be inside at the end of `text`, if any."""
    quote: str | None = None
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
    return quote


def _expectation(comment: str) -> str | None:
    """The text of an expected answer, if a comment line starts one: `{...}`, `[...]` or `201 {...}`."""
    text = comment.lstrip("#").strip()
    if text.startswith(("{", "[")) or STATUS_FIRST.match(text):
        return text
    return None


def commands(block: Block) -> list[Command]:
    found: list[Command] = []
    lines = block.text.splitlines()
    collecting = False  # the comment lines after a command are its expected answer
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("curl "):
            text, first = line, i
            while (text.rstrip().endswith("\\") or _open_quote(text)) and i + 1 < len(lines):
                i += 1
                text += "\n" + lines[i]
            found.append(Command(text.strip(), block.line + 1 + first))
            collecting = True
        elif stripped.startswith("#") and found and collecting:
            current = found[-1]
            if current.expected is None:
                started = _expectation(stripped)
                if started is None:
                    collecting = False
                else:
                    current.expected = started
            else:
                current.expected += " " + stripped.lstrip("#").strip()
        else:
            collecting = False
        i += 1
    return found


def read(doc: Path) -> list[Example]:
    """Every example of one doc that calls the API."""
    found: list[Example] = []
    all_blocks = blocks(doc.read_text(encoding="utf-8"))
    sdk = any(b.language == "python" and re.search(r"\b(Async)?Client\(", b.text) for b in all_blocks)
    by_block: dict[int, Example] = {}
    for block in all_blocks:
        if block.language in SHELLS:
            listed = commands(block)
            if listed:
                example = Example(doc.name, block.line, "sh", commands=listed)
                found.append(example)
                by_block[id(block)] = example
        elif block.language == "json" and block.follows is not None and id(block.follows) in by_block:
            last = by_block[id(block.follows)].commands[-1]
            if last.expected is None:
                last.expected = block.text.strip()
        elif block.language == "python" and sdk:
            found.append(Example(doc.name, block.line, "python", code=block.text))
    return found


def every_example() -> list[Example]:
    return [example for doc in sorted(DOCS.glob("*.md")) for example in read(doc)]


# --- expected answers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    status: int | None
    pairs: list[tuple[str, Any]]


def expected(text: str) -> Expected:
    status = None
    head = STATUS_FIRST.match(text)
    if head:
        status, text = int(head.group(1)), head.group(2) or ""
    return Expected(status, [(key, json.loads(raw)) for key, raw in PAIR.findall(text)])


def _values(answer: Any, key: str) -> Iterator[Any]:
    """Every value of `key` in the answer, breadth first (the top level's first)."""
    level = [answer]
    while level:
        following: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                if key in node:
                    yield node[key]
                following.extend(node.values())
            elif isinstance(node, list):
                following.extend(node)
        level = following


def made_up(want: Any) -> bool:
    """A short word before "…" (`"0d5c…"`, `"rb_3f9a…"`) stands for a value the server makes up: an id, a key."""
    return isinstance(want, str) and MADE_UP.fullmatch(want) is not None


def _whole(value: Any) -> bool:
    """A number the server gives (a healing run's id): a stand-in such as "41…" stands for it too."""
    return isinstance(value, int) and not isinstance(value, bool)


def _same(want: Any, got: Any) -> bool:
    if made_up(want):
        return (isinstance(got, str) and bool(got)) or _whole(got)
    if isinstance(want, str) and ELLIPSIS in want:
        prefix = want.split(ELLIPSIS, 1)[0]
        return isinstance(got, str) and got.startswith(prefix)
    if isinstance(want, bool) or isinstance(got, bool):
        return want is got
    if isinstance(want, int | float) and isinstance(got, int | float):
        return float(want) == float(got)
    return bool(want == got)


def mismatches(want: Expected, status: int, answer: Any) -> list[str]:
    problems = []
    if want.status is not None and status != want.status:
        problems.append(f"status {status}, the docs say {want.status}")
    if want.status is None and not 200 <= status < 300:
        problems.append(f"status {status}, the docs show a success")
    for key, value in want.pairs:
        seen = list(_values(answer, key))
        if not any(_same(value, got) for got in seen):
            problems.append(f"{key!r}: the docs say {value!r}, the answer has {seen[:3]!r}")
    return problems


def bindings(want: Expected, answer: Any) -> dict[str, str]:
    """Shortened values in the docs (`"0d5c…"`) and the real values they stand for."""
    found = {}
    for key, value in want.pairs:
        if made_up(value):
            real = next((str(v) for v in _values(answer, key) if isinstance(v, str) or _whole(v)), None)
            if real is not None:
                found[value] = real
    return found


# --- running ----------------------------------------------------------------------------------------------


@dataclass
class Stage:
    """Where the examples run: the server, the keys, and the docs' outside hosts' stand-in."""

    base_url: str
    env: dict[str, str]  # for bash: KEY, OPERATOR_KEY, PATH
    agent_key: str
    hosts: dict[str, str]  # "https://billing.internal.example" -> "http://127.0.0.1:5123"
    bound: dict[str, str] = field(default_factory=dict)

    def rewrite(self, text: str) -> str:
        for server in DOCS_SERVERS:
            text = text.replace(server, self.base_url)
        for outside, local in self.hosts.items():
            text = text.replace(outside, local)
        for short, real in self.bound.items():
            text = text.replace(short, real)
        return text


def _curl(stage: Stage, command: Command) -> tuple[int, Any, str]:
    text = re.sub(r"^curl\b", "curl -sS --max-time 30 -w '\\n%{http_code}'", stage.rewrite(command.text))
    done = subprocess.run(["bash", "-c", text], env=stage.env, capture_output=True, text=True, timeout=60)
    body, _, status = done.stdout.rpartition("\n")
    try:
        answer = json.loads(body) if body.strip() else None
    except ValueError:
        answer = body
    return int(status or 0), answer, done.stderr


def run_shell(stage: Stage, example: Example) -> list[str]:
    """Run an `sh` example's commands in order; what went wrong, one line per problem."""
    problems: list[str] = []
    for command in example.commands:
        want = expected(command.expected) if command.expected else Expected(None, [])
        deadline = time.monotonic() + (POLL_SECONDS if command.method == "GET" and want.pairs else 0)
        while True:
            status, answer, stderr = _curl(stage, command)
            wrong = mismatches(want, status, answer)
            if not wrong or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if wrong:
            shown = json.dumps(answer)[:600] if not isinstance(answer, str) else answer[:600]
            problems.append(
                f"{example.doc}:{command.line}: {'; '.join(wrong)} (answer: {shown} {stderr[:200]})"
            )
            break  # what follows builds on this answer
        stage.bound.update(bindings(want, answer))
    return problems


class StandIn:
    """What the docs leave to the reader (`openai`, `chat`): callable, with stand-ins for attributes; a call
    answers JSON, as an agent's function would answer something it can cache."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, name: str) -> StandIn:
        if name.startswith("__"):
            raise AttributeError(name)
        return StandIn(f"{self._name}.{name}")

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, str]:
        return {"stand_in": self._name}

    def __str__(self) -> str:
        return self._name

    __repr__ = __str__


class Namespace(dict[str, Any]):
    """A doc's python namespace: a name nobody defined is a stand-in."""

    def __missing__(self, name: str) -> Any:
        if hasattr(builtins, name):
            raise KeyError(name)  # then Python looks in the builtins
        return StandIn(name)


def run_python(stage: Stage, example: Example, namespace: Namespace, globals_: dict[str, Any]) -> list[str]:
    code = KEY_PLACEHOLDER.sub(json.dumps(stage.agent_key), stage.rewrite(example.code))
    try:
        compiled = compile(code, example.name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(compiled, globals_, namespace)  # the repository's own docs
        if inspect.iscoroutine(result):
            asyncio.run(result)
    except Exception as error:  # an example that raises is the failure this reports
        return [f"{example.name}: {type(error).__name__}: {error}"]
    return []


def close_clients(namespace: dict[str, Any], closer: Callable[[Any], None]) -> None:
    for value in list(namespace.values()):
        if hasattr(value, "close") and type(value).__module__.startswith("rebound_client"):
            closer(value)
