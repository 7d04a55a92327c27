"""``/bench`` on a pull request: from the comment to the results, in three phases.

bench.yml calls one phase per job (the workflow stays thin; the decisions are here):

* :func:`start` (``github bench-start``, no cloud credentials): ignores what is not a
  command (edits, bots, issues, other comments) without a word; reacts 👀; refuses
  commenters without write access (collaborators API, never ``author_association``),
  pull requests from forks unless the repository opts in, closed pull requests and
  malformed commands, each with a reply saying why; answers ``/bench help``. Then it
  reads the pull request's exact head commit, checks the model and overlays against
  that commit's tree, chooses the image (below), writes the sticky comment ("queued")
  and creates the Check run on the head commit. Its :class:`BenchPlan` is the only
  thing the next jobs trust.
* :func:`run` (``github bench-run``, the job with the cloud credentials, the pipeline's
  code from the default branch and the pull request's tree checked out beside it):
  runs the benchmark in-process, editing the sticky comment with each overlay's
  progress (at most once per ``interval_s``, and at once when an overlay is done or
  failed), then writes the results there, reacts 🚀 and completes the Check run.
  A failure is reported the same way (❌ state, 👎, Check run ``failure``); GitHub's
  cancel (SIGINT, then SIGTERM) becomes one KeyboardInterrupt so the engine tears
  down, and is reported as ``cancelled``.
* :func:`finish` (``github bench-finish``, ``if: always()``): when ``run`` did not get
  to report — cancelled before or during it, or killed — marks the sticky comment and
  the Check run failed or cancelled with a link to the run's logs, and reacts 👎.

**Which image.** The model's last successful delivery to the release environment (its
deployment record's digest: what serves today), else the model's newest release
archive (built first), else nothing runs and the reply says so.

**Reactions** (GitHub allows +1, -1, laugh, confused, heart, hooray, rocket, eyes):
``eyes`` when the command is seen, ``confused`` when it is refused (or could not
start), ``rocket`` when the results are posted, ``-1`` when the benchmark failed or was
cancelled.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripts.config import GitHubContext
from scripts.errors import (
    ArtifactNotFoundError,
    AuthError,
    ConfigError,
    IntegrityError,
    PipelineError,
    UsageError,
)
from scripts.github import checks
from scripts.github.bench_command import (
    GRAMMAR_FIX,
    MAX_OVERLAYS,
    MAX_VARIANTS,
    NAME,
    BenchCommand,
    is_command,
    parse,
    shown,
    usage,
)
from scripts.github.client import GitHubApi
from scripts.github.comments import MARKER, acknowledge, require_write_access, upsert_comment
from scripts.github.deployments import DeliveryPayload, task_for
from scripts.github.events import CommentEvent
from scripts.github.markdown import COMMENT_LIMIT_CHARS, fit
from scripts.github.resolve import release_assets
from scripts.github.tags import TAG_PATTERN, ReleaseModel
from scripts.log import log

if TYPE_CHECKING:
    from github.GitRelease import GitRelease

    from scripts.bench.api import BenchRequest, Progress
    from scripts.bench.results import BenchResult

STICKY_KEY = "bench"
CHECK_NAME = "bench"
SEEN, REFUSED, DONE, FAILED = "eyes", "confused", "rocket", "-1"
STATE = "<!-- tf-release-pipeline:bench-state {state} run={run} -->"
_STATE = re.compile(r"<!-- tf-release-pipeline:bench-state (\w+) run=([\w.-]+) -->")
_SHA = re.compile(r"[0-9a-f]{40}")
OVERLAYS_DIR = "kustomize/overlays"
ICONS = {"queued": "🕒", "deploying": "🚢", "measuring": "📈", "done": "✅", "failed": "❌"}


# -- the plan ----------------------------------------------------------------------------
@dataclass(frozen=True)
class StartPolicy:
    """The repository's choices (repository variables, through bench.yml's flags)."""

    allow_forks: bool = False  # BENCH_ALLOW_FORKS
    default_model: str | None = None  # BENCH_MODEL
    environment: str = "production"  # whose last successful delivery is benchmarked


@dataclass(frozen=True)
class BenchPlan:
    """What ``start`` decided: the one input the later jobs take (``--plan`` JSON)."""

    pr: int
    head_sha: str
    fork: bool
    model: str
    overlays: tuple[str, ...]
    image: str  # REPO@sha256:… (last delivery), or "" with source
    source: str  # github://… (newest release), or "" with image
    sha256: str  # the release archive's checksum (its .sha256 asset), "" with image
    origin: str  # where the image comes from, in words
    p99_ms: float | None
    quick: bool
    requested_by: str
    comment_id: int
    comment_url: str
    sticky_id: int
    check_run_id: int
    run_id: str
    run_url: str
    bases: tuple[str, ...] = ()  # --bases: the release built once per base

    @property
    def command(self) -> str:
        return BenchCommand(
            overlays=self.overlays,
            model=self.model,
            p99_ms=self.p99_ms,
            quick=self.quick,
            bases=self.bases,
        ).describe()

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> BenchPlan:
        """The plan ``bench-start`` wrote, checked again (it crossed a job boundary)."""
        try:
            data = json.loads(text)
            plan = cls(
                **{
                    **data,
                    "overlays": tuple(data["overlays"]),
                    "bases": tuple(data.get("bases", ())),
                    "pr": int(data["pr"]),
                    "comment_id": int(data["comment_id"]),
                    "sticky_id": int(data["sticky_id"]),
                    "check_run_id": int(data["check_run_id"]),
                }
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise UsageError(
                f"--plan is not a bench plan: {exc}",
                cause="the workflow passed something other than bench-start's `plan` output",
                fix="pass needs.start.outputs.plan (bench.yml)",
            ) from exc
        names = [plan.model, *plan.overlays, *plan.bases]
        if (
            not _SHA.fullmatch(plan.head_sha)
            or not all(NAME.fullmatch(n) for n in names)
            or not 0 < len(plan.overlays) <= MAX_OVERLAYS
            or bool(plan.image) == bool(plan.source)
            or (plan.bases and not plan.source)
            or len(plan.bases) * len(plan.overlays) > max(MAX_OVERLAYS, MAX_VARIANTS)
            or (plan.sha256 and not re.fullmatch(r"[0-9a-f]{64}", plan.sha256))
            or not (plan.p99_ms is None or isinstance(plan.p99_ms, int | float))
        ):
            raise UsageError(
                "--plan holds values bench-start never writes (a name, the commit or the image)",
                cause="a plan edited by hand, or from another version of the pipeline",
                fix="pass needs.start.outputs.plan unchanged",
            )
        return plan


@dataclass(frozen=True)
class StartOutcome:
    run: bool
    status: str  # ignored | refused | help | queued
    reason: str
    plan: BenchPlan | None = None

    def outputs(self) -> dict[str, str]:
        plan = self.plan
        values = {"run": "true" if self.run else "false", "status": self.status}
        values["reason"] = self.reason.replace("\n", " ")
        if plan is not None:
            values |= {
                "plan": plan.to_json(),
                "pr": str(plan.pr),
                "head-sha": plan.head_sha,
                "model": plan.model,
                "overlays": ",".join(plan.overlays),
                "p99": "" if plan.p99_ms is None else f"{plan.p99_ms:g}",
                "quick": "true" if plan.quick else "false",
                "image": plan.image,
                "source": plan.source,
                "comment-id": str(plan.comment_id),
                "sticky-id": str(plan.sticky_id),
                "check-run-id": str(plan.check_run_id),
            }
        return values


@dataclass(frozen=True)
class ImageChoice:
    image: str
    source: str
    sha256: str
    origin: str


class _Refusal(Exception):
    """A reason not to run, for the reply (not a failure of the job)."""

    def __init__(self, what: str, fix: str = "", *, with_usage: bool = False) -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix
        self.with_usage = with_usage


# -- Markdown ----------------------------------------------------------------------------
def _run_tag(run_id: str) -> str:
    return re.sub(r"[^\w.-]", "_", run_id) or "local"


def _state_line(state: str, run_id: str) -> str:
    return STATE.format(state=state, run=_run_tag(run_id))


def sticky_state(body: str) -> tuple[str, str] | None:
    """(state, run id) of a sticky comment's body, as the last phase wrote it."""
    match = _STATE.search(body)
    return (match[1], match[2]) if match else None


def _context_table(plan: BenchPlan) -> str:
    where = f" ([comment]({plan.comment_url}))" if plan.comment_url else ""
    image = plan.image or plan.source
    logs = f"[workflow run]({plan.run_url})" if plan.run_url else "—"
    return (
        "| | |\n|---|---|\n"
        f"| requested by | **{plan.requested_by}**{where} |\n"
        f"| command | `{plan.command}` |\n"
        f"| commit | `{plan.head_sha[:12]}` (the pull request's head when the command came"
        f"{', from a fork' if plan.fork else ''}) |\n"
        f"| image | `{image}` — {plan.origin} |\n"
        f"| logs | {logs} |\n"
    )


def _cell(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def queued_body(plan: BenchPlan) -> str:
    return (
        f"{_state_line('queued', plan.run_id)}\n### 🕒 `/bench`: queued\n\n"
        f"{_context_table(plan)}\n"
        "Overlays: " + ", ".join(f"`{o}`" for o in plan.overlays) + "\n"
    )


def progress_body(plan: BenchPlan, states: dict[str, tuple[str, str]]) -> str:
    rows = "".join(
        f"| `{overlay}` | {ICONS.get(state, '•')} {state} | {_cell(detail)} |\n"
        for overlay, (state, detail) in states.items()
    )
    return (
        f"{_state_line('running', plan.run_id)}\n### 📈 `/bench`: running\n\n"
        f"{_context_table(plan)}\n| overlay | state | latest |\n|---|---|---|\n{rows}\n"
        f"_Updated {time.strftime('%H:%M:%S', time.gmtime())} UTC._\n"
    )


def results_body(plan: BenchPlan, report: str) -> str:
    return (
        f"{_state_line('done', plan.run_id)}\n{report.rstrip()}\n\n"
        f"<details><summary>Run</summary>\n\n{_context_table(plan)}\n</details>\n"
    )


def failed_body(plan: BenchPlan, what: str, cause: str = "", fix: str = "") -> str:
    lines = [f"**{_cell(what, 1000)}**", ""]
    if cause:
        lines.append(f"- Likely cause: {_cell(cause, 500)}")
    if fix:
        lines.append(f"- Fix: {_cell(fix, 500)}")
    return (
        f"{_state_line('failed', plan.run_id)}\n### ❌ `/bench`: failed\n\n"
        + "\n".join(lines)
        + f"\n\n{_context_table(plan)}"
    )


def cancelled_body(plan: BenchPlan) -> str:
    return (
        f"{_state_line('cancelled', plan.run_id)}\n### ⏹️ `/bench`: cancelled\n\n"
        "The run was cancelled (a newer `/bench` on this pull request, a cancel from the "
        "Actions page, or the job's time limit) before the results; the benchmark's "
        f"objects are removed by its teardown. See the logs.\n\n{_context_table(plan)}"
    )


def _reply(api: GitHubApi, event: CommentEvent, text: str) -> int:
    return api.create_comment(
        event.issue.number, fit(text, COMMENT_LIMIT_CHARS, in_bytes=False, more=None)
    )


def _sticky_text(body: str, more: str | None) -> str:
    marker = MARKER.format(key=STICKY_KEY)
    return fit(f"{marker}\n{body}", COMMENT_LIMIT_CHARS, in_bytes=False, more=more)


def write_sticky(api: GitHubApi, plan: BenchPlan, body: str) -> int:
    """Edit the pull request's sticky comment in place (a new one if it was deleted)."""
    more = f"{plan.run_url}#artifacts" if plan.run_url else None
    try:
        api.edit_comment(plan.sticky_id, _sticky_text(body, more))
        return plan.sticky_id
    except ArtifactNotFoundError:
        log.warning("the sticky comment %d is gone: writing a new one", plan.sticky_id)
        return upsert_comment(api, plan.pr, STICKY_KEY, body, more=more)


# -- start -------------------------------------------------------------------------------
def _ignored(reason: str) -> StartOutcome:
    log.info("not a /bench to run: %s", reason)
    return StartOutcome(run=False, status="ignored", reason=reason)


def start(
    api: GitHubApi, event: CommentEvent, context: GitHubContext, policy: StartPolicy
) -> StartOutcome:
    """Decide whether the comment runs a benchmark, and prepare it (see the module doc)."""
    comment = event.comment
    if event.action != "created":
        return _ignored(f"the comment was {event.action}, not created")
    if not event.on_pull_request:
        return _ignored(f"#{event.issue.number} is an issue, not a pull request")
    if comment.user.is_bot:
        return _ignored(f"{comment.user.login} is a bot")
    if not is_command(comment.body):
        return _ignored("the comment does not start with /bench")

    acknowledge(api, comment.id, SEEN)
    try:
        return _start(api, event, context, policy)
    except _Refusal as refusal:
        text = f"@{comment.user.login} `/bench` was not run: {refusal.what}\n"
        if refusal.fix:
            text += f"\n{refusal.fix}\n"
        if refusal.with_usage:
            text += f"\n<details><summary>Usage</summary>\n\n{usage()}\n</details>\n"
        _reply(api, event, text)
        acknowledge(api, comment.id, REFUSED)
        return StartOutcome(run=False, status="refused", reason=refusal.what)
    except PipelineError as exc:
        # GitHub (or the repository's setup) failed us: say so where the command was given.
        logs = f" ([logs]({context.run_url}))" if context.run_url else ""
        with contextlib.suppress(PipelineError):
            _reply(
                api,
                event,
                f"@{comment.user.login} `/bench` could not start{logs}: {_cell(exc.what, 600)}"
                + (f"\n\nFix: {_cell(exc.fix, 400)}" if exc.fix else ""),
            )
            acknowledge(api, comment.id, REFUSED)
        raise


def _start(
    api: GitHubApi, event: CommentEvent, context: GitHubContext, policy: StartPolicy
) -> StartOutcome:
    comment = event.comment
    login = comment.user.login
    try:
        require_write_access(api, login, "run /bench")
    except AuthError as exc:
        if exc.__cause__ is not None:  # GitHub refused *us* (a 401/403): a real failure
            raise
        raise _Refusal(
            f"{login} does not have write access to {api.full_name}",
            "Benchmarks use the repository's cloud credentials, so only collaborators with "
            "write access may start them: ask a maintainer to comment `/bench`.",
        ) from None

    try:
        command = parse(comment.body)
    except UsageError as exc:
        fix = "" if exc.fix == GRAMMAR_FIX else exc.fix  # the usage follows anyway
        raise _Refusal(exc.what, fix, with_usage=True) from None
    if command is None:  # not reached: start() saw the comment begin with /bench
        return _ignored("the comment does not start with /bench")
    if command.help:
        _reply(api, event, f"@{login} {usage()}")
        return StartOutcome(run=False, status="help", reason="usage sent")

    pr = api.pull_request(event.issue.number)
    if pr.state != "open":
        raise _Refusal(f"pull request #{pr.number} is {pr.state}", "Reopen it to benchmark it.")
    if pr.from_fork and not policy.allow_forks:
        raise _Refusal(
            f"pull request #{pr.number} comes from a fork ({pr.head_repo or 'deleted'})",
            "A benchmark deploys the pull request's overlays with this repository's cloud "
            "credentials, so forks are refused unless a maintainer sets the repository "
            "variable `BENCH_ALLOW_FORKS` to `true` (the pipeline's code still runs from the "
            "default branch; only the fork's models and overlays at the exact head commit "
            "are benchmarked).",
        )
    model = _model(api, pr.head_sha, command, policy)
    overlays = _overlays(api, pr.number, pr.head_sha, command)
    if command.bases and len(overlays) * len(command.bases) > MAX_VARIANTS:
        raise _Refusal(
            f"{len(overlays)} overlays × {len(command.bases)} bases is more than "
            f"{MAX_VARIANTS} benchmarks",
            "Name fewer overlays or bases.",
        )
    try:
        # Bases compare builds of one release: its archive, not a delivered digest.
        choice = choose_image(api, model, policy.environment, source_only=bool(command.bases))
    except (ArtifactNotFoundError, IntegrityError) as exc:
        raise _Refusal(exc.what, exc.fix) from None

    run_id = context.run_id or "local"
    draft = BenchPlan(
        pr=pr.number,
        head_sha=pr.head_sha,
        fork=pr.from_fork,
        model=model,
        overlays=overlays,
        image=choice.image,
        source=choice.source,
        sha256=choice.sha256,
        origin=choice.origin,
        p99_ms=command.p99_ms,
        quick=command.quick,
        bases=command.bases,
        requested_by=login,
        comment_id=comment.id,
        comment_url=comment.html_url,
        sticky_id=0,
        check_run_id=0,
        run_id=run_id,
        run_url=context.run_url or "",
    )
    more = f"{draft.run_url}#artifacts" if draft.run_url else None
    sticky_id = upsert_comment(api, pr.number, STICKY_KEY, queued_body(draft), more=more)
    draft = replace(draft, sticky_id=sticky_id)
    try:
        check = checks.create(
            api,
            name=CHECK_NAME,
            head_sha=pr.head_sha,
            title=f"queued: {model} on {len(overlays)} overlay(s)",
            summary=f"`{draft.command}` requested by {login}. Results: the pull request's "
            "bench comment, when done.",
            details_url=draft.run_url or None,
            external_id=f"bench-{pr.number}-{run_id}",
        )
    except PipelineError as exc:  # no run follows: the comment must not stay "queued"
        body = failed_body(draft, exc.what, exc.cause, exc.fix)
        _best_effort("mark the bench comment failed", lambda: write_sticky(api, draft, body))
        raise
    plan = replace(draft, check_run_id=check.id)
    log.info("bench queued: %s at %s (%s)", plan.command, plan.head_sha, plan.origin)
    return StartOutcome(run=True, status="queued", reason=plan.command, plan=plan)


def _dirs(api: GitHubApi, path: str, ref: str) -> list[str]:
    return sorted(
        name
        for name, kind in api.directory(path, ref).items()
        if kind == "dir" and NAME.fullmatch(name)
    )


def _model(api: GitHubApi, sha: str, command: BenchCommand, policy: StartPolicy) -> str:
    models = _dirs(api, "models", sha)
    have = ", ".join(f"`{m}`" for m in models) or "none"
    wanted = command.model or policy.default_model
    if wanted is None:
        if len(models) == 1:
            return models[0]
        raise _Refusal(
            "which model? This pull request has several under `models/`",
            f"Name one with `--model NAME` ({have}), or set the repository variable "
            "`BENCH_MODEL` to the default.",
            with_usage=True,
        )
    if wanted not in models:
        origin = "" if command.model else " (the repository variable `BENCH_MODEL`)"
        raise _Refusal(
            f"no model {shown(wanted)}{origin} under `models/` at {sha[:12]}",
            f"Models there: {have}.",
        )
    return wanted


def _overlays(api: GitHubApi, number: int, sha: str, command: BenchCommand) -> tuple[str, ...]:
    available = _dirs(api, OVERLAYS_DIR, sha)
    have = ", ".join(f"`{o}`" for o in available) or "none"
    if command.overlays:
        missing = [o for o in command.overlays if o not in available]
        if missing:
            raise _Refusal(
                f"no overlay {', '.join(f'`{o}`' for o in missing)} under `{OVERLAYS_DIR}/` "
                f"at {sha[:12]}",
                f"Overlays there: {have}.",
            )
        return command.overlays
    changed: list[str] = []
    for path in api.pull_request_files(number):
        parts = path.split("/")
        inside = path.startswith(OVERLAYS_DIR + "/") and len(parts) > 3
        if inside and parts[2] in available and parts[2] not in changed:
            changed.append(parts[2])
    if not changed:
        raise _Refusal(
            "no overlays named, and this pull request changes none",
            f"Name them: `/bench OVERLAY …` (overlays there: {have}).",
            with_usage=True,
        )
    if len(changed) > MAX_OVERLAYS:
        raise _Refusal(
            f"this pull request changes {len(changed)} overlays; a benchmark takes at most "
            f"{MAX_OVERLAYS}",
            "Name the ones to compare: `/bench A B C`.",
        )
    return tuple(changed)


def newest_delivery(api: GitHubApi, environment: str, model: str) -> DeliveryPayload | None:
    """The model's newest deployment to ``environment`` that succeeded (what serves, or
    served last): the same records and payloads a deliberate rollback reads."""
    for deployment in api.deployments(environment, task_for(model)):
        payload = DeliveryPayload.from_dict(deployment.payload)
        if payload is not None and "success" in api.states(deployment):
            return payload
    return None


def newest_release(api: GitHubApi, model: str) -> tuple[GitRelease, ReleaseModel] | None:
    """The model's highest released version (published: no drafts)."""
    best: tuple[GitRelease, ReleaseModel] | None = None
    for release in api.releases():
        match = TAG_PATTERN.match(release.tag_name or "")
        if release.draft or match is None or match["model"] != model:
            continue
        found = ReleaseModel(model, int(match["version"]))
        if best is None or found.version > best[1].version:
            best = (release, found)
    return best


def choose_image(
    api: GitHubApi, model: str, environment: str, *, source_only: bool = False
) -> ImageChoice:
    """What to benchmark: the last successful delivery's digest, else the newest release
    (``source_only``: the newest release, to build once per base)."""
    delivered = None if source_only else newest_delivery(api, environment, model)
    if delivered is not None:
        return ImageChoice(
            image=delivered.image,
            source="",
            sha256="",
            origin=f"{model} v{delivered.version}, its last successful delivery to {environment}",
        )
    newest = newest_release(api, model)
    if newest is not None:
        release, wanted = newest
        archive, sha256 = release_assets(api, release, wanted, 0.0)
        return ImageChoice(
            image="",
            source=f"github://{api.full_name}/releases/{release.id}/{archive.name}",
            sha256=sha256,
            origin=f"{model} v{wanted.version}, its newest release (never delivered to "
            f"{environment}: built for the benchmark)",
        )
    raise ArtifactNotFoundError(
        f"nothing to benchmark for {model}: no successful delivery to {environment} and no release",
        cause="the model was never released",
        fix=f"publish a release `{model}-vN` with its archive first (docs/github-actions.md)",
    )


# -- run ---------------------------------------------------------------------------------
def refuse_links(root: Path) -> None:
    """Refuse a checked-out tree holding symbolic links: a link in a pull request could
    make the benchmark read files outside the checkout (the cloud credentials file is
    in the same workspace)."""
    for directory, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            path = Path(directory) / name
            if path.is_symlink():
                raise ConfigError(
                    f"the pull request's tree holds a symbolic link: {path.relative_to(root)}",
                    cause="links could point outside the checkout, at the job's credentials",
                    fix="replace the link by the file it points at",
                )


class ProgressComment:
    """The engine's progress callback: edits the sticky comment, throttled.

    An edit at most every ``interval_s`` seconds, and at once when an overlay is done or
    failed. A failed edit is logged and skipped: progress never fails a benchmark.
    """

    def __init__(
        self,
        api: GitHubApi,
        plan: BenchPlan,
        *,
        interval_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.plan = plan
        self.interval_s = interval_s
        self.clock = clock
        waiting = ("queued", "waiting")
        self.states: dict[str, tuple[str, str]] = dict.fromkeys(plan.overlays, waiting)
        self.edits = 0
        self._last: float | None = None
        self._lock = threading.Lock()

    def begin(self) -> None:
        """The first edit ("running", every overlay queued); the throttle starts here."""
        self._last = self.clock()
        self.write()

    def write(self) -> None:
        try:
            write_sticky(self.api, self.plan, progress_body(self.plan, self.states))
            self.edits += 1
        except PipelineError as exc:
            log.warning("could not update the bench comment (the benchmark goes on): %s", exc.what)

    def __call__(self, progress: Progress) -> None:
        with self._lock:
            self.states[progress.overlay] = (progress.state, progress.detail)
            now = self.clock()
            due = self._last is None or now - self._last >= self.interval_s
            if due or progress.state in ("done", "failed"):
                self._last = now
                self.write()


@dataclass(frozen=True)
class RunOutcome:
    conclusion: str  # success | neutral
    title: str
    sticky_id: int
    check_run_id: int
    edits: int
    report: str = ""  # the results in Markdown, as the comment shows them
    data: dict[str, Any] = field(default_factory=dict)


Prepare = Callable[[], "BenchRequest"]
RunBench = Callable[["BenchRequest", Callable[["Progress"], None]], "BenchResult"]
Markdown = Callable[["BenchResult", str | None, int], str]
SummaryLine = Callable[["BenchResult"], str]


def _best_effort(what: str, call: Callable[[], object]) -> None:
    try:
        call()
    except PipelineError as exc:  # reporting a failure must not hide the failure itself
        log.warning("could not %s: %s", what, exc)


def run(
    api: GitHubApi,
    plan: BenchPlan,
    *,
    prepare: Prepare,
    run_bench: RunBench,
    markdown: Markdown,
    summary_line: SummaryLine,
    out: Path | None = None,
    interval_s: float = 15.0,
    clock: Callable[[], float] = time.monotonic,
) -> RunOutcome:
    """Run the planned benchmark and report it (see the module doc)."""
    progress = ProgressComment(api, plan, interval_s=interval_s, clock=clock)
    try:
        progress.begin()
        checks.start(
            api,
            plan.check_run_id,
            title=f"running: {plan.model} on {len(plan.overlays)} overlay(s)",
            summary=f"`{plan.command}` at `{plan.head_sha[:12]}`; progress in the pull "
            "request's bench comment.",
        )
        request = prepare()
        result = run_bench(request, progress)
    except PipelineError as exc:
        _report_failure(api, plan, exc.what, exc.cause, exc.fix)
        raise
    except KeyboardInterrupt:
        _report_cancelled(api, plan)
        raise
    except Exception as exc:
        _report_failure(
            api,
            plan,
            f"internal error: {type(exc).__name__}: {exc}",
            "a bug in the pipeline",
            "report it with the run's logs",
        )
        raise
    return _report_results(
        api,
        plan=plan,
        result=result,
        markdown=markdown,
        summary_line=summary_line,
        out=out,
        edits=progress.edits,
    )


def _report_results(
    api: GitHubApi,
    *,
    plan: BenchPlan,
    result: BenchResult,
    markdown: Markdown,
    summary_line: SummaryLine,
    out: Path | None,
    edits: int,
) -> RunOutcome:
    artifacts = f"{plan.run_url}#artifacts" if plan.run_url else None
    room = COMMENT_LIMIT_CHARS - len(results_body(plan, "")) - 200
    report = markdown(result, artifacts, room)
    sticky_id = write_sticky(api, plan, results_body(plan, report))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "github-comment.md").write_text(report, encoding="utf-8")
    acknowledge(api, plan.comment_id, DONE)
    measured = any(o.capacity_rps for o in result.overlays)
    conclusion = "success" if measured else "neutral"
    title = summary_line(result)
    check = checks.complete(
        api,
        plan.check_run_id,
        conclusion=conclusion,
        title=title,
        summary=markdown(result, artifacts, checks.SUMMARY_LIMIT_BYTES // 2),
        more=artifacts,
    )
    log.info("bench reported: %s (check run %d: %s)", title, check.id, conclusion)
    return RunOutcome(
        conclusion=conclusion,
        title=title,
        sticky_id=sticky_id,
        check_run_id=check.id,
        edits=edits + 1,
        report=report,
        data={"winner": result.winner, "summary": result.summary},
    )


def _report_failure(api: GitHubApi, plan: BenchPlan, what: str, cause: str, fix: str) -> None:
    _best_effort(
        "mark the bench comment failed",
        lambda: write_sticky(api, plan, failed_body(plan, what, cause, fix)),
    )
    _best_effort("react to the command", lambda: acknowledge(api, plan.comment_id, FAILED))
    _best_effort(
        "complete the check run",
        lambda: checks.complete(
            api,
            plan.check_run_id,
            conclusion="failure",
            title=f"failed: {what}"[:200],
            summary=failed_body(plan, what, cause, fix),
        ),
    )


def _report_cancelled(api: GitHubApi, plan: BenchPlan) -> None:
    _best_effort(
        "mark the bench comment cancelled", lambda: write_sticky(api, plan, cancelled_body(plan))
    )
    _best_effort("react to the command", lambda: acknowledge(api, plan.comment_id, FAILED))
    _best_effort(
        "complete the check run",
        lambda: checks.complete(
            api,
            plan.check_run_id,
            conclusion="cancelled",
            title="cancelled",
            summary=cancelled_body(plan),
        ),
    )


# -- finish ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FinishOutcome:
    action: str  # reported (bench-run had) | cancelled | failed
    conclusion: str | None


def finish(api: GitHubApi, plan: BenchPlan, job_result: str) -> FinishOutcome:
    """Close what ``run`` left open (``job_result``: the bench job's ``needs.*.result``)."""
    check = checks.read(api, plan.check_run_id)
    if check.completed:
        log.info("bench-run reported (check run %s: %s): nothing to do", check.id, check.conclusion)
        return FinishOutcome("reported", check.conclusion)
    conclusion = "cancelled" if job_result == "cancelled" else "failure"
    if conclusion == "cancelled":
        body = cancelled_body(plan)
    else:
        body = failed_body(
            plan,
            f"the benchmark job ended ({job_result or 'unknown'}) without reporting",
            "the job failed before the benchmark started (checkout, set-up, cloud "
            "credentials), or the runner died",
            "see the run's logs; comment `/bench` again to retry",
        )
    state = sticky_state(api.comment_body(plan.sticky_id)) if plan.sticky_id else None
    mine = state is not None and state[1] == _run_tag(plan.run_id)
    if state is None or (mine and state[0] in ("queued", "running")):
        write_sticky(api, plan, body)
    else:
        log.info("the bench comment holds %s of run %s: left as it is", *state)
    acknowledge(api, plan.comment_id, FAILED)
    checks.complete(
        api,
        plan.check_run_id,
        conclusion=conclusion,
        title="cancelled" if conclusion == "cancelled" else "failed before reporting",
        summary=body,
    )
    return FinishOutcome("cancelled" if conclusion == "cancelled" else "failed", conclusion)
