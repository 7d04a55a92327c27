"""The release tag convention: which model and version a GitHub release delivers.

A release is tagged ``NAME-vVERSION`` (``digits-v3``): ``NAME`` is a directory under
``models/`` (so one repository can release several models) and ``VERSION`` a positive
integer, the TF Serving version directory. It carries two assets:
``NAME-VERSION.tar.gz`` (made by ``python -m scripts package``) and
``NAME-VERSION.tar.gz.sha256``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from scripts.config import MODELS_DIR
from scripts.errors import ConfigError, IntegrityError

TAG_PATTERN = re.compile(r"^(?P<model>[a-z0-9][a-z0-9_.-]*?)-v(?P<version>[1-9][0-9]{0,8})$")
CONVENTION = "NAME-vVERSION, e.g. digits-v3, where models/NAME/model.yaml exists"
_SHA256 = re.compile(r"^(?:sha256:)?([0-9a-fA-F]{64})(?:\s+\*?(\S+))?\s*$")


@dataclass(frozen=True)
class ReleaseModel:
    model: str
    version: int

    @property
    def tag(self) -> str:
        return f"{self.model}-v{self.version}"

    @property
    def archive(self) -> str:
        return f"{self.model}-{self.version}.tar.gz"

    @property
    def checksum(self) -> str:
        return f"{self.archive}.sha256"


def parse_tag(tag: str, models_dir: Path = MODELS_DIR) -> ReleaseModel:
    """The model and version a tag names; ConfigError naming the convention otherwise."""
    match = TAG_PATTERN.match(tag)
    if not match:
        raise ConfigError(
            f"the release tag {tag!r} does not follow the convention {CONVENTION}",
            cause="a tag made for something else, or a model release tagged by hand",
            fix=f"tag model releases as {CONVENTION}",
        )
    found = ReleaseModel(match["model"], int(match["version"]))
    if not (models_dir / found.model / "model.yaml").is_file():
        known = sorted(p.parent.name for p in models_dir.glob("*/model.yaml"))
        raise ConfigError(
            f"the release tag {tag!r} names model {found.model!r}, which has no "
            f"models/{found.model}/model.yaml",
            cause="a typo in the tag, or a model that was never added to the repository",
            fix=f"tag as {CONVENTION}; models here: {', '.join(known) or 'none'}",
        )
    return found


def parse_version(text: str, model: str) -> ReleaseModel:
    """A manual deploy's version: ``3``, ``v3`` or the tag ``digits-v3``."""
    value = text.strip()
    if value.startswith(f"{model}-v"):
        value = value.removeprefix(f"{model}-v")
    value = value.removeprefix("v")
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(
            f"{text!r} is not a version of {model}",
            fix=f"give a version number (3), or the release tag ({model}-v3), or `previous`",
        )
    return ReleaseModel(model, int(value))


def parse_checksum_file(text: str, asset: str) -> str:
    """The sha256 in a ``.sha256`` asset (``sha256sum`` format or the bare digest)."""
    lines = [line for line in text.splitlines() if line.strip()]
    match = _SHA256.match(lines[0].strip()) if len(lines) == 1 else None
    if match is None:
        raise IntegrityError(
            f"the checksum asset {asset}.sha256 is not a sha256 line",
            cause="the file was not made by `python -m scripts package` or `sha256sum`",
            fix=f"upload the {asset}.sha256 that `package` wrote next to the archive",
        )
    named = match[2]
    if named and Path(named).name != asset:
        raise IntegrityError(
            f"the checksum asset {asset}.sha256 is for {named!r}, not {asset!r}",
            cause="the checksum of another archive was uploaded",
            fix=f"upload the {asset}.sha256 that `package` wrote next to {asset}",
        )
    return match[1].lower()
