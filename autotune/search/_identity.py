"""Which study a search resumes: only one begun for the same task file and options.

A study holds facts computed once (the probe, the baseline and its target, the systems
phase) and trials measured against them. Resumed by a search of an edited task file, or
with another ``--target-loss``, ``--memory-limit``, ``--space`` or ``--seed``, it would
hand back that other setup's baseline and trials as this one's. So each study records
its :class:`StudyIdentity` when it begins, and :func:`resolve_study` compares:

- with ``--study-name``: a study of another identity is refused, with the fix;
- without it: the study is the task file's stem, or else the first of ``stem-2``,
  ``stem-3``, ... that is this identity's or new, so that editing model.py and searching
  again starts afresh by itself, and running the same command again still resumes.

A study begun before identities were recorded is taken as this one's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
from pydantic import BaseModel, ConfigDict, Field

from autotune import space as spaces
from autotune.config import file_sha256
from autotune.errors import ConfigError
from autotune.search._study import IDENTITY_KEY, open_storage, redact
from autotune.search._types import SearchOptions
from autotune.task import checked_task_path

__all__ = ["IDENTITY_KEY", "Resolved", "StudyIdentity", "resolve_study"]

_NUMBERED = 100  # stem-2 .. stem-100: past that, a name is asked for


class StudyIdentity(BaseModel):
    """What a study's facts and trials depend on, beyond the budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_file: str = Field(description="The task file's path at the study's start (not compared).")
    task_sha256: str = Field(description="sha256 of the task file's bytes.")
    space_sha256: str = Field(description="sha256 of the validated search space, as JSON.")
    target_loss: float | None = None
    memory_limit_bytes: int | None = None
    seed: int = 0

    @classmethod
    def of(cls, options: SearchOptions) -> StudyIdentity:
        """The identity of a search with ``options`` (reads the task file and the space)."""
        path = checked_task_path(options.task_path)
        try:
            task_sha256 = file_sha256(path)
        except OSError as exc:
            raise ConfigError(
                f"the task file {path} cannot be read ({exc.strerror}); check the path."
            ) from None
        space = spaces.load_space(options.space).model_dump_json()
        return cls(
            task_file=str(path.resolve()),
            task_sha256=task_sha256,
            space_sha256=hashlib.sha256(space.encode()).hexdigest(),
            target_loss=options.target_loss,
            memory_limit_bytes=options.memory_limit_bytes,
            seed=options.seed,
        )

    def differences(self, other: StudyIdentity) -> list[str]:
        """What differs from ``other`` (the study's), each as a short phrase."""
        found = []
        if self.task_sha256 != other.task_sha256:
            found.append(f"the task file differs from the study's ({other.task_file})")
        if self.space_sha256 != other.space_sha256:
            found.append("the search space (--space) differs")
        for name, flag in (
            ("target_loss", "--target-loss"),
            ("memory_limit_bytes", "--memory-limit"),
            ("seed", "--seed"),
        ):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                found.append(f"{flag} {_shown(mine)}, the study's {_shown(theirs)}")
        return found


def _shown(value: object) -> str:
    return "none" if value is None else str(value)


@dataclass(frozen=True)
class Resolved:
    """The search's options with the study it runs in, its identity, and why the study is
    not the task file's stem, where it is not."""

    options: SearchOptions
    identity: StudyIdentity
    note: str | None = None


def resolve_study(options: SearchOptions) -> Resolved:
    """``options`` with ``study_name`` set to the study this search runs in (see the
    module docstring); raises :class:`ConfigError` for a ``--study-name`` of another
    identity, with the fix."""
    identity = StudyIdentity.of(options)
    storage = open_storage(options.storage)
    if options.study_name is not None:
        theirs = _identity_of(storage, options.study_name)
        if theirs is not None and identity.differences(theirs):
            raise ConfigError(_refusal(options, identity, theirs, storage))
        return Resolved(options=options, identity=identity)
    stem = Path(options.task_path).stem
    first = _identity_of(storage, stem)  # the default study's, told when this one moves on
    for name in [stem, *(f"{stem}-{k}" for k in range(2, _NUMBERED + 1))]:
        theirs = first if name == stem else _identity_of(storage, name)
        if theirs is None or not identity.differences(theirs):
            note = None if first is None or name == stem else _moved(stem, name, identity, first)
            return Resolved(options=replace(options, study_name=name), identity=identity, note=note)
    raise ConfigError(
        f"studies {stem!r} to {stem}-{_NUMBERED} in {redact(options.storage)} were all begun "
        f"for other versions of the task or options; give --study-name NAME."
    )


def _identity_of(storage: optuna.storages.BaseStorage, name: str) -> StudyIdentity | None:
    """The identity study ``name`` recorded; None if there is no such study, or it began
    before identities were recorded."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    stored = storage.get_study_user_attrs(study_id).get(IDENTITY_KEY)
    return None if stored is None else StudyIdentity.model_validate_json(stored)


def _refusal(
    options: SearchOptions,
    identity: StudyIdentity,
    theirs: StudyIdentity,
    storage: optuna.storages.BaseStorage,
) -> str:
    name = options.study_name
    free = _first_free(storage, str(name))
    return (
        f"study {name!r} in {redact(options.storage)} was begun for another setup: "
        f"{'; '.join(identity.differences(theirs))}. Its baseline and trials are not this "
        f"search's: give another --study-name (e.g. {free}) for a new study, or resume it "
        f"with its own task file and options."
    )


def _moved(stem: str, name: str, identity: StudyIdentity, theirs: StudyIdentity) -> str:
    what = "; ".join(identity.differences(theirs))
    return (
        f"study {stem!r} was begun for another setup ({what}), so this search is study "
        f"{name!r}; the same command resumes it"
    )


def _first_free(storage: optuna.storages.BaseStorage, stem: str) -> str:
    for k in range(2, _NUMBERED + 1):
        try:
            storage.get_study_id_from_name(f"{stem}-{k}")
        except KeyError:
            return f"{stem}-{k}"
    return f"{stem}-new"
