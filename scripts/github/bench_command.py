"""The ``/bench`` pull-request command: its grammar, parsed from an untrusted comment.

::

    /bench [OVERLAY …] [--model NAME] [--slo p99=40ms] [--bases A,B] [--quick]
    /bench help

A comment is a command only when its body *starts* with ``/bench`` (compared without
regard to case, as GitHub's ``startsWith`` does in bench.yml's concurrency group: the
two must agree, or a comment could cancel a benchmark without being one, or start a
second one beside it). Anything else is not a command and is ignored without a word.

Only the first line is the command; later lines are free text and are ignored, except
that a second ``/bench`` line is refused (one command per comment: a smuggled second
command is never half-run). The body is untrusted, so nothing is interpreted: no
quoting, no escapes, no expansion. The line must be printable ASCII (a lookalike
character from another script is refused, naming its code point), at most
:data:`MAX_LINE` characters, split on spaces and tabs; every token must be ``help``, a
known option, or a name matching :data:`NAME` (overlays may also be separated by
commas). Names are checked against the pull request's own tree later.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from scripts.errors import UsageError

COMMAND = "/bench"
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
P99 = re.compile(r"p99=(?P<value>[0-9]{1,6}(?:\.[0-9]{1,3})?)(?P<unit>ms)?")
MAX_OVERLAYS = 6
MAX_BASES = 3
MAX_VARIANTS = 8  # overlays × bases measured in one benchmark
MAX_LINE = 400
MAX_P99_MS = 60_000.0
HELP_WORDS = frozenset({"help", "--help", "-h"})
GRAMMAR_FIX = "see `/bench help`"

USAGE = f"""\
**Usage** (on a pull request; collaborators with write access):

```
/bench [OVERLAY …] [--model NAME] [--slo p99=40ms] [--bases A,B] [--quick]
/bench help
```

- `OVERLAY …` — up to {MAX_OVERLAYS} overlays under `kustomize/overlays/` of this pull
  request's head commit, separated by spaces (or commas). Default: the overlays the pull
  request adds or changes.
- `--model NAME` — a model under `models/` (default: the repository's bench model, or
  the only model).
- `--slo p99=40ms` — the p99 latency an overlay must meet (default: the model's
  `model.yaml`).
- `--bases A,B` — up to {MAX_BASES} serving bases of `kustomize/bases.yaml` (e.g.
  `stock,c2-cascadelake`): the model's newest release is built once per base and each
  overlay measured on each, capacity and $/1M side by side (at most {MAX_VARIANTS}
  overlay × base pairs).
- `--quick` — a shorter search: fewer, shorter steps (a rough answer).

The image benchmarked is the model's last successful delivery (its digest) or, if it
was never delivered, its newest release. One benchmark per pull request at a time: a
new `/bench` cancels the running one.
"""


@dataclass(frozen=True)
class BenchCommand:
    """A well-formed ``/bench`` command (names are checked against the PR's tree later)."""

    overlays: tuple[str, ...] = ()
    model: str | None = None
    p99_ms: float | None = None
    quick: bool = False
    help: bool = False
    bases: tuple[str, ...] = ()

    def describe(self) -> str:
        """The command as it will run, normalised (safe to echo: every part validated)."""
        if self.help:
            return f"{COMMAND} help"
        parts = [COMMAND, *self.overlays]
        if self.model:
            parts += ["--model", self.model]
        if self.p99_ms is not None:
            parts += ["--slo", f"p99={self.p99_ms:g}ms"]
        if self.bases:
            parts += ["--bases", ",".join(self.bases)]
        if self.quick:
            parts.append("--quick")
        return " ".join(parts)


def usage() -> str:
    """The usage text (Markdown), as ``/bench help`` replies."""
    return USAGE


def is_command(body: str) -> bool:
    """Whether a comment is meant as ``/bench``: its body starts with it (any case).

    Exactly the test bench.yml's concurrency group makes (GitHub's ``startsWith`` ignores
    case), so the comments that may cancel a running benchmark are the ones parsed here.
    """
    return body[: len(COMMAND)].lower() == COMMAND


def shown(token: str, limit: int = 40) -> str:
    """Untrusted text, safe to put in a Markdown reply: one inline code span, cut short,
    with no backticks and no control characters (no mention, link or HTML can escape)."""
    text = "".join(
        ch if ch.isprintable() and ch != "`" else "\N{REPLACEMENT CHARACTER}" for ch in token
    )
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"`{text}`"


def _refuse(what: str, fix: str = GRAMMAR_FIX) -> UsageError:
    return UsageError(what, cause="a malformed /bench command", fix=fix)


def _check_characters(line: str) -> None:
    for column, ch in enumerate(line, start=1):
        if ch == "\t" or " " <= ch <= "~":
            continue
        name = unicodedata.name(ch, "a control character")
        raise _refuse(
            f"the command contains U+{ord(ch):04X} ({name}) at column {column}; only plain "
            "ASCII letters, digits, `-`, `=`, `.` and spaces are allowed",
            fix="retype the command (a pasted lookalike character, or a smart dash?)",
        )


def _name(token: str, what: str) -> str:
    if NAME.fullmatch(token):
        return token
    hint = ""
    if "=" in token and not token.startswith("-"):
        hint = "; name overlays directly, e.g. `/bench 4x-4cpu 8x-2cpu`"
    elif token.lower() != token and NAME.fullmatch(token.lower()):
        hint = "; names are lower case"
    raise _refuse(
        f"{shown(token)} is not a valid {what} name: lower-case letters, digits and `-`, "
        f"starting with a letter or digit, at most 63 characters{hint}"
    )


def _p99(value: str) -> float:
    match = P99.fullmatch(value)
    if match is None:
        if "=" in value and not value.startswith("p99="):
            raise _refuse(
                f"`--slo` {shown(value)}: only the p99 latency can be set here",
                fix="write `--slo p99=40ms`; other objectives come from the model's model.yaml",
            )
        raise _refuse(
            f"`--slo` {shown(value)} is not `p99=<milliseconds>`", fix="e.g. `--slo p99=40ms`"
        )
    p99 = float(match["value"])
    if not 0 < p99 <= MAX_P99_MS:
        raise _refuse(
            f"`--slo p99={match['value']}ms` is out of range (more than 0, at most "
            f"{MAX_P99_MS:g} ms)"
        )
    return p99


def _command_line(body: str) -> str:
    lines = body.replace("\r\n", "\n").split("\n")
    first = lines[0]
    for number, later in enumerate(lines[1:], start=2):
        if is_command(later.strip()):
            raise _refuse(
                f"line {number} holds a second `/bench`: one command per comment",
                fix="post each /bench as its own comment",
            )
    return first


def parse(body: str) -> BenchCommand | None:
    """The command in a comment's body; ``None`` when the comment is not a command;
    :class:`UsageError` naming exactly what is wrong when it is a malformed one."""
    if not is_command(body):
        return None
    line = _command_line(body)
    if len(line) > MAX_LINE:
        raise _refuse(f"the command line is {len(line)} characters long; at most {MAX_LINE}")
    _check_characters(line)
    tokens = line.split()
    head, args = tokens[0], tokens[1:]
    if head.lower() != COMMAND:
        raise _refuse(f"{shown(head)} is not a command; did you mean `/bench`?")
    if any(arg.lower() in HELP_WORDS for arg in args):
        if len(args) != 1:
            raise _refuse("`help` stands alone: `/bench help`")
        return BenchCommand(help=True)

    overlays: list[str] = []
    model: str | None = None
    p99: float | None = None
    quick = False
    bases: list[str] = []
    seen: set[str] = set()
    queue = list(args)
    while queue:
        token = queue.pop(0)
        if token.startswith("-"):
            option, eq, inline = token.partition("=")
            if option not in ("--model", "--slo", "--bases", "--quick"):
                raise _refuse(
                    f"unknown option {shown(option)}; the options are `--model NAME`, "
                    "`--slo p99=40ms`, `--bases A,B` and `--quick`"
                )
            if option in seen:
                raise _refuse(f"`{option}` is given twice")
            seen.add(option)
            if option == "--quick":
                if eq:
                    raise _refuse("`--quick` takes no value")
                quick = True
                continue
            if eq:
                value = inline
            elif queue and not queue[0].startswith("-"):
                value = queue.pop(0)
            else:
                raise _refuse(f"`{option}` needs a value")
            if option == "--model":
                model = _name(value, "model")
            elif option == "--bases":
                bases = _bases(value)
            else:
                p99 = _p99(value)
            continue
        _add_names(token, "overlay", overlays)
    if len(overlays) > MAX_OVERLAYS:
        raise _refuse(
            f"{len(overlays)} overlays named; at most {MAX_OVERLAYS} per benchmark",
            fix="split them over several /bench comments, one after the other finishes",
        )
    if bases and overlays and len(overlays) * len(bases) > MAX_VARIANTS:
        raise _refuse(
            f"{len(overlays)} overlays × {len(bases)} bases is {len(overlays) * len(bases)} "
            f"benchmarks; at most {MAX_VARIANTS} per /bench",
            fix="name fewer overlays or bases",
        )
    return BenchCommand(
        overlays=tuple(overlays), model=model, p99_ms=p99, quick=quick, bases=tuple(bases)
    )


def _add_names(text: str, what: str, names: list[str]) -> None:
    """Comma-separated names into ``names``, each valid and named once."""
    for part in text.split(","):
        if not part:
            raise _refuse(f"{shown(text)}: an empty {what} name between commas")
        name = _name(part, what)
        if name in names:
            raise _refuse(f"{what} `{name}` is named twice")
        names.append(name)


def _bases(value: str) -> list[str]:
    names: list[str] = []
    _add_names(value, "base", names)
    if len(names) > MAX_BASES:
        raise _refuse(f"{len(names)} bases named; at most {MAX_BASES} per benchmark")
    return names
