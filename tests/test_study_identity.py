"""A search resumes only a study begun for the same task file and options."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from autotune.errors import ConfigError
from autotune.search import SearchOptions, StudyIdentity, resolve_study
from autotune.search._study import IDENTITY_KEY
from tests.conftest import TINY_TASK


@pytest.fixture
def options(write_task: Callable[[str], Path], tmp_path: Path) -> SearchOptions:
    return SearchOptions(task_path=write_task(TINY_TASK), storage=f"sqlite:///{tmp_path}/s.db")


def _begin(options: SearchOptions, name: str, identity: StudyIdentity | None) -> None:
    """A study ``name`` as a search of ``identity`` (None: before identities) left it."""
    study = optuna.create_study(storage=options.storage, study_name=name)
    if identity is not None:
        study.set_user_attr(IDENTITY_KEY, identity.model_dump_json())


def test_the_identity_is_the_task_files_contents_and_the_options_that_shape_the_study(
    options: SearchOptions, tmp_path: Path
) -> None:
    mine = StudyIdentity.of(options)
    moved = tmp_path / "elsewhere.py"
    moved.write_bytes(options.task_path.read_bytes())
    same = [
        replace(options, task_path=moved),  # the same file at another path (another worker)
        replace(options, budget_s=30.0, trials=4, output=tmp_path / "other.yaml"),
    ]
    for other in same:
        assert mine.differences(StudyIdentity.of(other)) == []
    edited = tmp_path / "edited.py"
    edited.write_text(TINY_TASK.replace("lr=1e-2", "lr=3e-3"))
    differing = {
        "the task file differs": replace(options, task_path=edited),
        "the search space (--space) differs": replace(options, space="transformer"),
        "--target-loss 0.5, the study's none": replace(options, target_loss=0.5),
        "--memory-limit 1000000, the study's none": replace(options, memory_limit_bytes=10**6),
        "--seed 1, the study's 0": replace(options, seed=1),
    }
    for phrase, other in differing.items():
        found = StudyIdentity.of(other).differences(mine)
        assert len(found) == 1 and found[0].startswith(phrase), found


def test_an_edited_task_file_starts_a_new_study_and_the_same_one_resumes(
    options: SearchOptions, write_task: Callable[[str], Path]
) -> None:
    """Two task files of one name (another baseline LR) in one storage: the second
    search resumed the first one's study, its baseline and its trials as its own."""
    first = resolve_study(options)
    assert first.options.study_name == "model" and first.note is None
    _begin(options, "model", first.identity)
    assert resolve_study(options).options.study_name == "model"  # the same: resumed

    write_task(TINY_TASK.replace("lr=1e-2", "lr=3e-3"))  # model.py edited
    edited = resolve_study(options)
    assert edited.options.study_name == "model-2"
    assert edited.note is not None and "study 'model' was begun for another setup" in edited.note
    assert "the task file differs" in edited.note and "is study 'model-2'" in edited.note
    _begin(options, "model-2", edited.identity)
    assert resolve_study(options).options.study_name == "model-2"  # resumed in its turn


def test_a_named_study_of_another_setup_is_refused_with_the_fix(options: SearchOptions) -> None:
    _begin(options, "mine", StudyIdentity.of(replace(options, target_loss=0.5)))
    with pytest.raises(
        ConfigError,
        match=r"study 'mine' .* was begun for another setup: --target-loss none, the study's "
        r"0.5\. .*give another --study-name \(e.g\. mine-2\)",
    ):
        resolve_study(replace(options, study_name="mine"))
    asked = replace(options, study_name="mine", target_loss=0.5)
    assert resolve_study(asked).options.study_name == "mine"


def test_a_study_begun_before_identities_is_resumed(options: SearchOptions) -> None:
    _begin(options, "model", None)
    assert resolve_study(options).options.study_name == "model"
