"""Runs this repository's GitHub Actions workflows on this machine, for the event-replay tests.

GitHub's runners cannot run here. This is the smallest faithful stand-in for what the
tests need: it reads the workflow files as they are committed and runs their jobs in
``needs`` order, evaluating ``${{ }}`` expressions (contexts ``inputs``, ``needs``,
``steps``, ``env``, ``vars``, ``github``, ``runner``, ``jobs``; operators ``! && || ==
!=``; ``always() success() failure() cancelled() contains() startsWith()``), job and
step ``if:``, ``env:`` at every level, ``outputs:``, ``$GITHUB_OUTPUT`` and
``$GITHUB_STEP_SUMMARY`` files, reusable workflows (``uses: $/.github/workflows/…``,
with typed ``workflow_call`` inputs and outputs), and workflow ``concurrency`` groups
(a later run waits for the earlier one, as ``cancel-in-progress: false`` queues it;
with ``cancel-in-progress: true`` it cancels the earlier one first, and waits for it).
``run:`` steps run with ``bash --noprofile --norc -eo pipefail``, GitHub's default shell.

Cancelling a run does what GitHub does: the running step's entry process (the step's
``bash``, never its children) gets SIGINT, SIGTERM 7.5 s later, and 2.5 s after that the
step's whole process tree is killed; the step and its job are ``cancelled``, and the
job's later steps run only if their ``if:`` holds with ``cancelled()`` true
(``always()``, ``cancelled()``). Jobs not started yet run only if their ``if:`` holds
so (``success()`` is false); one that does start then runs its steps as usual.
``format()`` and ``toJSON()`` are evaluated as well.

It also enforces two of GitHub's rules the tests rely on: a called workflow's jobs may
not ask for more ``permissions`` than the calling job grants, and actions not known
here fail the step (so a new action cannot be skipped silently). The actions it
knows are simulated: ``actions/checkout`` (the workspace is the checkout of the
default branch; a checkout with ``path:`` copies the tree the test registered for its
``ref`` in ``RunnerConfig.checkouts`` to that directory, only the ``sparse-checkout``
directories and the root's files when those are listed, and fails for a ref it has no
tree for, as a checkout of an unknown commit fails; its outputs are ``ref`` and
``commit``), the repository's ``setup`` action (the test's environment is already set
up), ``actions/upload-artifact`` (copied to ``artifacts/NAME``); the Google Cloud
actions fail, because a delivery on the local target must not reach them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PERMISSION_LEVELS = {"none": 0, "read": 1, "write": 2}


# -- expressions --------------------------------------------------------------------------
class ExpressionError(Exception):
    pass


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||!|\(|\)|,|\.|\[|\])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*|\*))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ExpressionError(f"cannot parse {text!r} at {pos}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def truthy(value: Any) -> bool:
    return value not in (None, False, 0, "", 0.0)


def _loose_equal(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()  # GitHub compares strings case-insensitively
    if type(a) is not type(b):

        def number(v: Any) -> float:
            if v is None:
                return 0.0
            if isinstance(v, bool):
                return float(v)
            try:
                return float(v)
            except (TypeError, ValueError):
                return float("nan")

        return number(a) == number(b)
    return bool(a == b)


class Evaluator:
    def __init__(self, contexts: dict[str, Any], status: Callable[[str], bool]) -> None:
        self.contexts = contexts
        self.status = status

    def evaluate(self, text: str) -> Any:
        self.tokens = _tokens(text)
        self.pos = 0
        value = self._or()
        if self.pos != len(self.tokens):
            raise ExpressionError(f"unexpected {self.tokens[self.pos]} in {text!r}")
        return value

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, value: str | None = None) -> tuple[str, str]:
        token = self._peek()
        if token is None or (value is not None and token[1] != value):
            raise ExpressionError(f"expected {value!r}, found {token}")
        self.pos += 1
        return token

    def _or(self) -> Any:
        left = self._and()
        while (t := self._peek()) and t[1] == "||":
            self._take()
            right = self._and()
            left = left if truthy(left) else right
        return left

    def _and(self) -> Any:
        left = self._unary()
        while (t := self._peek()) and t[1] == "&&":
            self._take()
            right = self._unary()
            left = right if truthy(left) else left
        return left

    def _unary(self) -> Any:
        if (t := self._peek()) and t[1] == "!":
            self._take()
            return not truthy(self._unary())
        return self._compare()

    def _compare(self) -> Any:
        left = self._primary()
        if (t := self._peek()) and t[1] in ("==", "!="):
            op = self._take()[1]
            right = self._primary()
            equal = _loose_equal(left, right)
            return equal if op == "==" else not equal
        return left

    def _primary(self) -> Any:
        kind, value = self._take()
        if kind == "str":
            return value[1:-1].replace("''", "'")
        if kind == "num":
            return float(value) if "." in value else int(value)
        if value == "(":
            inner = self._or()
            self._take(")")
            return inner
        if kind != "name":
            raise ExpressionError(f"unexpected {value!r}")
        if value in ("true", "false"):
            return value == "true"
        if value == "null":
            return None
        if (t := self._peek()) and t[1] == "(":
            return self._call(value)
        current: Any = self.contexts.get(value)
        if value not in self.contexts:
            raise ExpressionError(f"unknown context {value!r}")
        while (t := self._peek()) and t[1] in (".", "["):
            if self._take()[1] == ".":
                key = self._take()[1]
            else:
                key = self._primary()
                self._take("]")
            current = current.get(key) if isinstance(current, dict) else None
        return current

    def _call(self, name: str) -> Any:
        self._take("(")
        args: list[Any] = []
        while (t := self._peek()) and t[1] != ")":
            args.append(self._or())
            if (t := self._peek()) and t[1] == ",":
                self._take()
        self._take(")")
        if name in ("always", "success", "failure", "cancelled"):
            return self.status(name)
        if name == "contains":
            haystack, needle = args
            if isinstance(haystack, list):
                return any(_loose_equal(h, needle) for h in haystack)
            return str(needle).lower() in str(haystack).lower()
        if name == "startsWith":
            return str(args[0]).lower().startswith(str(args[1]).lower())
        if name == "toJSON":
            return json.dumps(args[0])
        if name == "format":
            return _format(str(args[0]), args[1:])
        raise ExpressionError(f"function {name}() is not supported by the test runner")


def _format(template: str, values: list[Any]) -> str:
    """GitHub's ``format('{0} and {1}', a, b)``; ``{{`` and ``}}`` are literal braces."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) in ("{{", "}}"):
            return match.group(0)[0]
        return as_text(values[int(match.group(1))])

    return re.sub(r"\{\{|\}\}|\{(\d+)\}", one, template)


_EMBEDDED = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)


def render(value: Any, evaluator: Evaluator) -> Any:
    """A workflow value with its ``${{ }}`` expressions evaluated (a whole expression keeps
    its type; embedded ones are formatted as text, as GitHub does)."""
    if isinstance(value, dict):
        return {k: render(v, evaluator) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, evaluator) for v in value]
    if not isinstance(value, str):
        return value
    whole = _EMBEDDED.fullmatch(value.strip())
    if whole:
        return evaluator.evaluate(whole.group(1))

    def text(match: re.Match[str]) -> str:
        result = evaluator.evaluate(match.group(1))
        if result is None:
            return ""
        if isinstance(result, bool):
            return "true" if result else "false"
        if isinstance(result, float) and result.is_integer():
            return str(int(result))
        return str(result)

    return _EMBEDDED.sub(text, value)


def condition_holds(condition: Any, evaluator: Evaluator) -> bool:
    """An ``if:``: a bare expression, or one wrapped in ``${{ }}``."""
    text = str(condition).strip()
    if text.startswith("${{") and text.endswith("}}"):
        text = text[3:-2]
    return truthy(evaluator.evaluate(text))


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- results -----------------------------------------------------------------------------
@dataclass
class StepResult:
    name: str
    outcome: str  # success | failure | skipped
    outputs: dict[str, str] = field(default_factory=dict)
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    command: str = ""


@dataclass
class JobResult:
    name: str
    result: str  # success | failure | skipped
    outputs: dict[str, str] = field(default_factory=dict)
    steps: list[StepResult] = field(default_factory=list)
    environment: dict[str, Any] | None = None
    permissions: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    started: float = 0.0
    finished: float = 0.0
    called: WorkflowResult | None = None  # for a job that calls a reusable workflow

    def log(self) -> str:
        return "\n".join(
            f"--- step {s.name}: {s.outcome} (rc {s.returncode})\n{s.command}\n"
            f"stdout:\n{s.stdout[-4000:]}\nstderr:\n{s.stderr[-6000:]}"
            for s in self.steps
            if s.outcome != "skipped"
        )


@dataclass
class WorkflowResult:
    name: str
    jobs: dict[str, JobResult]
    outputs: dict[str, Any]
    concurrency_group: str | None = None

    @property
    def conclusion(self) -> str:
        results = {j.result for j in self.jobs.values()}
        if "cancelled" in results:
            return "cancelled"
        return "failure" if "failure" in results else "success"

    def job(self, name: str) -> JobResult:
        return self.jobs[name]

    def all_jobs(self) -> dict[str, JobResult]:
        """Jobs of this workflow and of the workflows it called, by qualified name."""
        found: dict[str, JobResult] = {}
        for name, job in self.jobs.items():
            found[name] = job
            if job.called is not None:
                for inner, result in job.called.all_jobs().items():
                    found[f"{name}/{inner}"] = result
        return found

    def log(self) -> str:
        return "\n\n".join(
            f"=== job {n}: {j.result}\n{j.log()}" for n, j in self.all_jobs().items()
        )


class ConcurrencyGroups:
    """Workflow concurrency groups shared by runs: cancel-in-progress false queues; true
    cancels the run in progress in the group, then waits for it to end."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._running: dict[str, threading.Event] = {}
        self._guard = threading.Lock()

    def lock(self, group: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(group, threading.Lock())

    def enter(self, group: str, cancel: threading.Event, *, cancel_in_progress: bool) -> None:
        with self._guard:
            lock = self._locks.setdefault(group, threading.Lock())
            if cancel_in_progress and group in self._running:
                self._running[group].set()
        lock.acquire()
        with self._guard:
            self._running[group] = cancel

    def leave(self, group: str, cancel: threading.Event) -> None:
        with self._guard:
            if self._running.get(group) is cancel:
                del self._running[group]
            lock = self._locks[group]
        lock.release()


# -- the runner --------------------------------------------------------------------------
@dataclass
class RunnerConfig:
    workspace: Path  # the checkout
    python_bin: Path  # prepended to PATH: `python` is the test's interpreter
    vars: dict[str, str]
    env: dict[str, str]  # the runner's own environment (GITHUB_API_URL, XDG_CACHE_HOME...)
    token: str
    repository: str
    artifacts: Path
    concurrency: ConcurrencyGroups = field(default_factory=ConcurrencyGroups)
    step_timeout_s: float = 600.0
    # ref (a commit sha) → the directory holding that commit's tree, for checkouts with
    # `path:` (a pull request's head checked out beside the workspace).
    checkouts: dict[str, Path] = field(default_factory=dict)
    # GitHub's cancel: SIGINT to the step's entry process, SIGTERM after this, a kill of
    # the step's process tree after cancel_kill_s more.
    cancel_term_after_s: float = 7.5
    cancel_kill_after_s: float = 2.5


class WorkflowRunner:
    def __init__(self, config: RunnerConfig) -> None:
        self.config = config

    def run_event(
        self,
        workflow: str,
        event_name: str,
        payload: dict[str, Any],
        *,
        run_id: int,
        run_attempt: int = 1,
        inputs: dict[str, Any] | None = None,
    ) -> WorkflowResult:
        """Run ``.github/workflows/WORKFLOW`` for an event, as GitHub would."""
        event_path = self.config.artifacts.parent / f"event-{run_id}-{run_attempt}.json"
        event_path.write_text(json.dumps(payload))
        github = {
            "event_name": event_name,
            "event": payload,
            "event_path": str(event_path),
            "repository": self.config.repository,
            "repository_owner": self.config.repository.split("/")[0],
            "run_id": str(run_id),
            "run_attempt": str(run_attempt),
            "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
            "ref": "refs/heads/main",
            "token": self.config.token,
            "server_url": "https://github.com",
            "api_url": self.config.env.get("GITHUB_API_URL", ""),
            "workflow": workflow,
        }
        if event_name == "workflow_dispatch":
            inputs = dict(payload.get("inputs", {}))
        return self._workflow(
            workflow, github, inputs or {}, granted=None, cancel=threading.Event()
        )

    def _load(self, workflow: str) -> dict[str, Any]:
        path = self.config.workspace / ".github" / "workflows" / workflow
        data = yaml.safe_load(path.read_text())
        data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads `on:` as True
        return data

    def _workflow(
        self,
        workflow: str,
        github: dict[str, Any],
        inputs: dict[str, Any],
        *,
        granted: dict[str, str] | None,
        cancel: threading.Event,  # the run's cancel (shared with the workflows it calls)
    ) -> WorkflowResult:
        spec = self._load(workflow)
        inputs = self._typed_inputs(spec, inputs)
        base = {"inputs": inputs, "vars": self.config.vars, "github": github}
        concurrency = spec.get("concurrency")
        group = None
        if concurrency:
            conf = concurrency if isinstance(concurrency, dict) else {"group": concurrency}
            cancel_in_progress = conf.get("cancel-in-progress") not in (None, False)
            if not isinstance(conf.get("cancel-in-progress", False), bool):
                raise ExpressionError("the test runner models a literal cancel-in-progress")
            group = as_text(render(conf["group"], Evaluator(base, lambda _: True)))
            self.config.concurrency.enter(group, cancel, cancel_in_progress=cancel_in_progress)
        try:
            workflow_env = render(spec.get("env", {}), Evaluator(base, lambda _: True))
            results: dict[str, JobResult] = {}
            for name in self._order(spec["jobs"]):
                job = spec["jobs"][name]
                results[name] = self._job(
                    name, job, base, workflow_env, results, granted, github, cancel
                )
            jobs_ctx = {n: {"result": r.result, "outputs": r.outputs} for n, r in results.items()}
            outputs = render(
                {
                    k: v["value"]
                    for k, v in (
                        (spec["on"].get("workflow_call") or {}).get("outputs") or {}
                    ).items()
                }
                if isinstance(spec["on"], dict)
                else {},
                Evaluator({**base, "jobs": jobs_ctx}, lambda _: True),
            )
            return WorkflowResult(workflow, results, outputs, group)
        finally:
            if group is not None:
                self.config.concurrency.leave(group, cancel)

    @staticmethod
    def _typed_inputs(spec: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        on = spec["on"] if isinstance(spec["on"], dict) else {}
        declared = (on.get("workflow_call") or on.get("workflow_dispatch") or {}).get(
            "inputs"
        ) or {}
        typed: dict[str, Any] = {}
        for name, decl in declared.items():
            value = given.get(name, decl.get("default"))
            if value is None and decl.get("required"):
                raise ExpressionError(f"required input {name!r} not given")
            kind = decl.get("type", "string")
            if kind == "boolean":
                value = value if isinstance(value, bool) else str(value).lower() == "true"
            elif kind == "number" and value is not None:
                value = float(value)
            elif kind == "choice" and value not in decl.get("options", []):
                raise ExpressionError(f"input {name}={value!r} is not one of its options")
            elif value is not None:
                value = as_text(value)
            typed[name] = value
        unknown = set(given) - set(declared)
        if unknown:
            raise ExpressionError(f"inputs not declared by the workflow: {sorted(unknown)}")
        return typed

    @staticmethod
    def _order(jobs: dict[str, Any]) -> list[str]:
        done: list[str] = []
        pending = list(jobs)
        while pending:
            for name in pending:
                needs = jobs[name].get("needs") or []
                needs = [needs] if isinstance(needs, str) else needs
                if all(n in done for n in needs):
                    done.append(name)
                    pending.remove(name)
                    break
            else:
                raise ExpressionError(f"a cycle in needs among {pending}")
        return done

    def _job(
        self,
        name: str,
        job: dict[str, Any],
        base: dict[str, Any],
        workflow_env: dict[str, Any],
        results: dict[str, JobResult],
        granted: dict[str, str] | None,
        github: dict[str, Any],
        cancel: threading.Event,
    ) -> JobResult:
        needs = job.get("needs") or []
        needs = [needs] if isinstance(needs, str) else needs
        needs_ctx = {n: {"result": results[n].result, "outputs": results[n].outputs} for n in needs}

        def status(function: str) -> bool:
            states = [results[n].result for n in needs]
            if function == "always":
                return True
            if function == "cancelled":
                return cancel.is_set()
            if function == "success":
                return not cancel.is_set() and all(s == "success" for s in states)
            if function == "failure":
                return any(s == "failure" for s in states)
            raise ExpressionError(f"unknown status function {function}()")

        ctx = {**base, "needs": needs_ctx}
        condition = job.get("if")
        run_it = (
            condition_holds(condition, Evaluator(ctx, status))
            if condition is not None
            else status("success")
        )
        permissions = job.get("permissions", {})
        if granted is not None and permissions != {}:
            for scope, level in (permissions or {}).items():
                if PERMISSION_LEVELS[level] > PERMISSION_LEVELS[granted.get(scope, "none")]:
                    raise ExpressionError(
                        f"job {name} asks for {scope}: {level}, but the calling job grants "
                        f"{granted.get(scope, 'none')}: GitHub refuses to run such a workflow"
                    )
        environment = render(job.get("environment"), Evaluator(ctx, status))
        if isinstance(environment, str):
            environment = {"name": environment, "deployment": True}
        result = JobResult(name, "skipped", environment=environment, permissions=permissions or {})
        if not run_it:
            if cancel.is_set():
                result.result = "cancelled"
            return result
        result.started = time.monotonic()
        if "uses" in job:
            called = job["uses"]
            if not called.startswith("$/.github/workflows/") and not called.startswith("./"):
                raise ExpressionError(
                    f"the test runner runs only this repository's workflows: {called}"
                )
            with_inputs = render(job.get("with", {}), Evaluator(ctx, status))
            inner = self._workflow(
                Path(called).name, github, with_inputs, granted=permissions or {}, cancel=cancel
            )
            result.called = inner
            result.outputs = {k: as_text(v) for k, v in inner.outputs.items()}
            result.result = inner.conclusion
            result.finished = time.monotonic()
            return result
        job_env = {**workflow_env, **render(job.get("env", {}), Evaluator(ctx, status))}
        # A job that starts after the cancel (its `if:` held: always()) is not cancelled
        # itself: its steps run as usual. One running when the cancel comes is.
        watch = None if cancel.is_set() else cancel
        with tempfile.TemporaryDirectory(prefix=f"runner-{name}-") as temp:
            result.result = self._steps(job, result, ctx, job_env, Path(temp), watch)
        result.outputs = {
            k: as_text(v)
            for k, v in render(
                job.get("outputs", {}),
                Evaluator({**ctx, "steps": self._steps_ctx(result)}, status),
            ).items()
        }
        result.finished = time.monotonic()
        return result

    @staticmethod
    def _steps_ctx(job: JobResult) -> dict[str, Any]:
        return {
            s.name: {"outputs": s.outputs, "outcome": s.outcome, "conclusion": s.outcome}
            for s in job.steps
        }

    def _steps(
        self,
        job: dict[str, Any],
        result: JobResult,
        ctx: dict[str, Any],
        job_env: dict[str, Any],
        temp: Path,
        cancel: threading.Event | None,
    ) -> str:
        failed = False
        cancelled = False
        for index, step in enumerate(job.get("steps", [])):
            step_id = step.get("id", f"step{index}")
            cancelled = cancelled or (cancel is not None and cancel.is_set())

            def status(function: str, failed: bool = failed, cancelled: bool = cancelled) -> bool:
                return {
                    "always": True,
                    "success": not failed and not cancelled,
                    "failure": failed,
                    "cancelled": cancelled,
                }[function]

            step_ctx = {
                **ctx,
                "steps": self._steps_ctx(result),
                "env": job_env,
                "runner": {"temp": str(temp), "os": "Linux", "arch": "X64"},
            }
            evaluator = Evaluator(step_ctx, status)
            condition = step.get("if")
            go = (
                condition_holds(condition, evaluator)
                if condition is not None
                else not failed and not cancelled
            )
            if not go:
                result.steps.append(StepResult(step_id, "skipped"))
                continue
            env = {**job_env, **render(step.get("env", {}), evaluator)}
            if "uses" in step:
                outcome = self._action(step, evaluator, result)
            else:
                # A step started after the cancel (an always() step) runs to its end.
                watch = None if cancelled else cancel
                outcome = self._shell(step_id, step["run"], env, temp, evaluator, watch)
            result.steps.append(outcome)
            if outcome.outcome == "cancelled":
                cancelled = True
            elif outcome.outcome == "failure" and not step.get("continue-on-error"):
                failed = True
        result.summary = self._summary_text(temp)
        if cancelled:
            return "cancelled"
        return "failure" if failed else "success"

    @staticmethod
    def _summary_text(temp: Path) -> str:
        return "".join(p.read_text() for p in sorted(temp.glob("summary-*.md")))

    def _shell(
        self,
        step_id: str,
        script: str,
        env: dict[str, Any],
        temp: Path,
        evaluator: Evaluator,
        cancel: threading.Event | None = None,
    ) -> StepResult:
        if "${{" in script:
            # The workflows never expand expressions inside run: (zizmor checks too); the
            # runner does, as GitHub would, so a regression is still runnable and visible.
            script = as_text(render(script, evaluator))
        output = temp / f"output-{step_id}"
        summary = temp / f"summary-{step_id}.md"
        output.touch()
        script_path = temp / f"{step_id}.sh"
        script_path.write_text(script)
        full_env = {
            **self.config.env,
            **{k: as_text(v) for k, v in env.items()},
            "PATH": f"{self.config.python_bin}:{os.environ.get('PATH', '')}",
            "GITHUB_ACTIONS": "true",
            "CI": "true",
            "GITHUB_OUTPUT": str(output),
            "GITHUB_STEP_SUMMARY": str(summary),
            "GITHUB_WORKSPACE": str(self.config.workspace),
            "RUNNER_TEMP": str(temp),
            **self._github_env(evaluator.contexts["github"]),
        }
        stdout_path, stderr_path = temp / f"{step_id}.stdout", temp / f"{step_id}.stderr"
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            proc = subprocess.Popen(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script_path)],
                cwd=self.config.workspace,
                env=full_env,
                stdout=out,
                stderr=err,
                start_new_session=True,  # the step's process tree, to kill on cancel
            )
            cancelled = self._wait(proc, cancel, step_id)
        stdout = stdout_path.read_text(errors="replace")
        stderr = stderr_path.read_text(errors="replace")
        outcome = "success" if proc.returncode == 0 else "failure"
        if cancelled:
            outcome = "cancelled"
        return StepResult(
            step_id,
            outcome,
            _parse_outputs(output.read_text()),
            proc.returncode,
            stdout,
            stderr,
            script,
        )

    def _wait(
        self, proc: subprocess.Popen[bytes], cancel: threading.Event | None, step: str
    ) -> bool:
        """Wait for a step; on cancel, signal it as GitHub's runner does. True: cancelled."""
        deadline = time.monotonic() + self.config.step_timeout_s
        while proc.poll() is None:
            if cancel is not None and cancel.is_set():
                self._cancel(proc)
                return True
            if time.monotonic() > deadline:
                _kill_tree(proc)
                proc.wait()
                raise subprocess.TimeoutExpired(step, self.config.step_timeout_s)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)
        return False

    def _cancel(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGINT to the step's entry process (never its children), SIGTERM after
        ``cancel_term_after_s``, then the whole process tree killed."""
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=self.config.cancel_term_after_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self.config.cancel_kill_after_s)
        _kill_tree(proc)
        proc.wait()

    @staticmethod
    def _github_env(github: dict[str, Any]) -> dict[str, str]:
        return {
            "GITHUB_EVENT_NAME": github["event_name"],
            "GITHUB_EVENT_PATH": github["event_path"],
            "GITHUB_REPOSITORY": github["repository"],
            "GITHUB_RUN_ID": github["run_id"],
            "GITHUB_RUN_ATTEMPT": github["run_attempt"],
            "GITHUB_SHA": github["sha"],
            "GITHUB_REF": github["ref"],
            "GITHUB_SERVER_URL": github["server_url"],
            "GITHUB_WORKFLOW": github["workflow"],
        }

    def _checkout_beside(self, step_id: str, with_inputs: dict[str, Any]) -> StepResult:
        """A second checkout into ``path`` under the workspace: the tree registered for
        ``ref``, or only its ``sparse-checkout`` directories (and root files, cone mode)."""
        ref = as_text(with_inputs.get("ref"))
        tree = self.config.checkouts.get(ref)
        if tree is None:
            return StepResult(
                step_id,
                "failure",
                stderr=f"checkout: no tree for ref {ref!r} (RunnerConfig.checkouts): a "
                "checkout of a commit the repository does not have fails",
            )
        workspace = self.config.workspace.resolve()
        target = (workspace / as_text(with_inputs["path"])).resolve()
        if workspace not in target.parents:
            return StepResult(step_id, "failure", stderr=f"checkout: {target} is outside")
        if target.exists():
            shutil.rmtree(target)  # `clean: true`, checkout's default
        sparse = [line.strip() for line in as_text(with_inputs.get("sparse-checkout")).split()]
        if sparse:
            target.mkdir(parents=True)
            for item in tree.iterdir():
                if item.is_file() and not item.is_symlink():
                    shutil.copy2(item, target / item.name)
            for name in sparse:
                if (tree / name).is_dir():
                    shutil.copytree(tree / name, target / name, symlinks=True)
        else:
            shutil.copytree(tree, target, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        return StepResult(step_id, "success", {"ref": ref, "commit": ref})

    def _action(self, step: dict[str, Any], evaluator: Evaluator, job: JobResult) -> StepResult:
        uses = str(step["uses"])
        name = uses.split("@", 1)[0]
        with_inputs = render(step.get("with", {}), evaluator)
        step_id = step.get("id", name)
        if "@" in uses and not re.fullmatch(r"[^@]+@[0-9a-f]{40}", uses):
            return StepResult(step_id, "failure", stderr=f"{uses} is not pinned by commit SHA")
        if name == "actions/checkout":
            if with_inputs.get("persist-credentials") is not False:
                return StepResult(
                    step_id, "failure", stderr="checkout without persist-credentials: false"
                )
            if with_inputs.get("path"):
                return self._checkout_beside(step_id, with_inputs)
            return StepResult(step_id, "success", {"ref": "refs/heads/main", "commit": ""})
        if name == "$/.github/actions/setup":
            requirements = {"deploy": "requirements-deploy.txt", "full": "requirements.txt"}
            wanted = requirements.get(as_text(with_inputs.get("requirements", "deploy")))
            if wanted is None or not (self.config.workspace / wanted).is_file():
                return StepResult(step_id, "failure", stderr=f"setup: no {wanted}")
            return StepResult(step_id, "success")
        if name == "actions/upload-artifact":
            target = self.config.artifacts / as_text(with_inputs["name"])
            source = Path(as_text(with_inputs["path"]))
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            elif source.is_file():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
            return StepResult(step_id, "success", {"artifact-id": "1", "artifact-url": str(target)})
        return StepResult(
            step_id,
            "failure",
            stderr=f"{name}: not available to the test runner (a delivery on the local target "
            "must not reach it)",
        )


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """Kill what is left of a step's processes (its session: ``start_new_session``)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _parse_outputs(text: str) -> dict[str, str]:
    outputs: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            body: list[str] = []
            index += 1
            while index < len(lines) and lines[index] != delimiter:
                body.append(lines[index])
                index += 1
            outputs[key] = "\n".join(body)
        elif "=" in line:
            key, value = line.split("=", 1)
            outputs[key] = value
        index += 1
    return outputs
