"""``autotune report``: one offline HTML page of a study, its CLI, and its errors.

The studies here are built with ``optuna.trial.create_trial`` in the shape a real search
stores (checked against ``autotune search examples/mlp_digits.py``'s database: the same
params and distributions, the same user attrs, run/baseline JSON from the search's own
models), so the tests take seconds, not a search's minutes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from typer.testing import CliRunner, Result

from autotune.cli import app
from autotune.config import BaselineMeasured, DeviceInfo, Measured, Provenance, TrainConfig
from autotune.config import TunedConfig as Tuned
from autotune.report import SECTIONS, load_report_data, render, write_report
from autotune.report._figures import pareto_optimal
from autotune.search import SearchOptions, run_search
from autotune.search._study import open_storage
from autotune.search._types import BaselineRun
from autotune.search._types import Measured as Run
from tests.conftest import ROOT, TINY_TASK

runner = CliRunner()
NAME = "digits"
HOSTILE = "<script>alert('x')</script>"  # must reach the page escaped, never as a tag

_D = optuna.distributions
CONVERGENCE_SPACE: dict[str, _D.BaseDistribution] = {
    "systems": _D.CategoricalDistribution([0, 1, 2]),
    "grad_accum_steps": _D.CategoricalDistribution([1, 2, 4, 8]),
    "lr_multiplier": _D.FloatDistribution(0.25, 8.0, log=True),
    "schedule": _D.CategoricalDistribution(["constant", "linear", "cosine", "onecycle"]),
    "warmup_fraction": _D.FloatDistribution(0.0, 0.2),
}
SYSTEMS_SPACE: dict[str, _D.BaseDistribution] = {
    "micro_batch_size": _D.CategoricalDistribution([8, 16, 32, 64, 128, 256, 512]),
    "precision": _D.CategoricalDistribution(["32-true", "bf16-mixed", "bf16-true"]),
    "activation_checkpointing": _D.CategoricalDistribution(["none"]),
    "world_size": _D.CategoricalDistribution([1, 2]),
    "compile": _D.CategoricalDistribution([False, True]),
}


def _train(micro: int, lr: float = 1e-3, accum: int = 1, precision: str = "32-true") -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "micro_batch_size": micro,
            "grad_accum_steps": accum,
            "precision": precision,
            "optimizer": {"lr": lr},
        }
    )


def _run(train: TrainConfig, rate: float, tt: float | None, peak: int | None = None) -> Run:
    return Run(
        train=train,
        losses=[2.3, 1.2, 0.5, 0.3],
        elapsed_s=[0.1, 0.2, 0.3, 0.4],
        samples_per_s=rate,
        time_to_target_s=tt,
        peak_memory_bytes=peak,
    )


def _systems_trial(micro: int, rate: float | None, predicted: int) -> optuna.trial.FrozenTrial:
    params = {
        "micro_batch_size": micro,
        "precision": "32-true",
        "activation_checkpointing": "none",
        "world_size": 1 if rate is not None else 2,
        "compile": False,
    }
    if rate is None:  # pruned by the memory model before any process started
        attrs: dict[str, Any] = {"status": "PRUNED", "reason": "predicted 9 GiB > budget 8 GiB"}
        state = optuna.trial.TrialState.PRUNED
    else:
        attrs = {
            "status": "ok",
            "reason": f"trained 12 steps: {rate:,.1f} samples/s",
            "predicted_samples_per_s": rate * 3,
            "predicted_peak_bytes": predicted,
            "run": _run(_train(micro), rate, None).model_dump_json(),
        }
        state = optuna.trial.TrialState.COMPLETE
    return optuna.trial.create_trial(
        params=params, distributions=SYSTEMS_SPACE, value=rate, state=state, user_attrs=attrs
    )


def _convergence_trial(
    i: int, outcome: str, value: float | None = None
) -> optuna.trial.FrozenTrial:
    train = _train(256, lr=1e-3 * (1 + i), accum=[1, 2, 4, 8][i % 4])
    params = {
        "systems": i % 3,
        "grad_accum_steps": train.grad_accum_steps,
        "lr_multiplier": 0.5 + 0.7 * i,
        "schedule": ["constant", "linear", "cosine", "onecycle"][i % 4],
        "warmup_fraction": 0.02 * (i % 10),
    }
    attrs: dict[str, Any] = {
        "global_batch_size": train.global_batch,
        "train": train.model_dump_json(),
        "status": "pruned",  # what the trial runner says of a run the search stopped
        "reason": "pruned at step 40 (loss 0.1211) by on_step",
    }
    state = optuna.trial.TrialState.COMPLETE
    if outcome in ("reached", "missed"):
        attrs["run"] = _run(train, 900.0, value if outcome == "reached" else None).model_dump_json()
        attrs["stability"] = "all 40 losses are finite"
        attrs["reached"] = outcome == "reached"
    elif outcome == "gave up":
        attrs["pruned_by"] = "not at the target after 3.1 s"
        state, value = optuna.trial.TrialState.PRUNED, None
    elif outcome == "UNSTABLE":
        attrs["status"] = outcome
        attrs["stability"] = "diverged: smoothed loss rose 115% above its minimum"
        state, value = optuna.trial.TrialState.FAIL, None
    else:  # oom, crash, timeout: the trial runner's status and reason
        attrs["status"], attrs["reason"] = outcome, f"out of memory in {HOSTILE}"
        state, value = optuna.trial.TrialState.FAIL, None
    return optuna.trial.create_trial(
        params=params,
        distributions=CONVERGENCE_SPACE,
        value=value,
        state=state,
        user_attrs=attrs,
    )


BASELINE = BaselineRun(
    run=_run(_train(16), 1150.0, 3.8), steps=500, target_loss=0.311, target_from="baseline: 90%"
)


def make_study(
    storage: str | optuna.storages.BaseStorage, name: str, outcomes: list[tuple[str, float | None]]
) -> None:
    """A stored search: the convergence study (baseline attr, trials) and its systems study."""
    conv = optuna.create_study(storage=storage, study_name=name, direction="minimize")
    conv.set_user_attr("baseline", BASELINE.model_dump_json())
    conv.set_user_attr("probe", '{"schema_version": 1}')
    for i, (outcome, value) in enumerate(outcomes):
        conv.add_trial(_convergence_trial(i, outcome, value))
    systems = optuna.create_study(
        storage=storage, study_name=f"{name}/systems", direction="maximize"
    )
    for micro, rate, predicted in (
        (512, 7000.0, 2_000_000),
        (256, 1100.0, 1_700_000),
        (128, 1500.0, 1_500_000),  # beats 256 on both axes: 256 is dominated
        (16, 100.0, 1_400_000),
        (512, None, 0),
    ):
        systems.add_trial(_systems_trial(micro, rate, predicted))


FULL = [
    ("reached", 5.2),
    ("UNSTABLE", None),
    ("reached", 2.5),
    ("missed", 13.7),
    ("reached", 1.1),
    ("gave up", None),
    ("reached", 0.9),
    ("oom", None),
    ("reached", 1.4),
    ("reached", 0.7),
]


def tuned_config(study: str = NAME, task: str = "examples/mlp_digits.py") -> Tuned:
    base = BaselineMeasured(train=_train(16), throughput_samples_per_s=1150.0, time_to_target_s=3.8)
    measured = Measured(
        device=DeviceInfo(kind="cpu", name="test", count=1),
        throughput_samples_per_s=2400.0,
        peak_memory_bytes=3_262_664,
        target_loss=0.311,
        time_to_target_s=1.9,
        baseline=base,
        speedup_vs_baseline=2.0,
    )
    provenance = Provenance(
        autotune_version="0", torch_version="0", study_name=study, trial=9, study="sqlite://"
    )
    return Tuned(task=task, train=_train(128), measured=measured, provenance=provenance)


@dataclass(frozen=True)
class Stored:
    storage: str
    tuned: Path
    directory: Path


@pytest.fixture(scope="session")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Stored:
    """One storage with a full study, and the tuned.yaml of its search."""
    directory = tmp_path_factory.mktemp("report")
    storage = f"sqlite:///{directory / 'autotune.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    make_study(storage, NAME, FULL)
    tuned = directory / "tuned.yaml"
    tuned.write_text(yaml.safe_dump(tuned_config(task=HOSTILE).model_dump(mode="json")))
    return Stored(storage, tuned, directory)


@pytest.fixture(scope="session")
def page(stored: Stored, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("page") / "report.html"
    write_report(stored.storage, output, tuned=stored.tuned)
    return output


@pytest.fixture(autouse=True)
def _no_tuned_yaml_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report reads ./tuned.yaml by default: run every test where there is none."""
    monkeypatch.chdir(tmp_path)


class _Links(HTMLParser):
    """Every src/href of every tag (script bodies are not parsed as tags)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v or "" for k, v in attrs if k in ("src", "href")]


def test_report_is_self_contained_and_has_every_section(page: Path) -> None:
    html = page.read_text()
    parser = _Links()
    parser.feed(html)
    external = [u for u in parser.links if re.match(r"\s*(https?:)?//", u)]
    assert external == []
    assert "<script src" not in html  # plotly.js is inlined
    for section, heading in SECTIONS:
        assert f"<section id='{section}'>" in html
        assert heading in html
    assert html.count('class="plotly-graph-div"') == 4  # history, pareto, importance, status
    assert "optuna-dashboard sqlite:///" in html
    assert (
        "<b>Why:</b> 2.00x sooner to loss 0.3110 = 2.09x the samples/s x 1.04x more samples "
        "to get there. All of it comes from more samples per second" in html
    )


def test_study_and_config_strings_are_escaped(page: Path) -> None:
    html = page.read_text()
    assert HOSTILE not in html
    escaped = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
    assert f"task: {escaped}" in html  # tuned.yaml's task
    assert f"out of memory in {escaped}" in html  # a failed trial's reason
    assert "PRUNED: not at the target after 3.1 s (pruned at step 40" in html


def test_a_study_with_no_trial_yet_still_gets_every_section(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.create_study(storage=storage, study_name="killed", direction="minimize")
    data = load_report_data(storage)
    html = render(data)
    for section, _ in SECTIONS:
        assert f"<section id='{section}'>" in html
    assert "No convergence trial has completed yet" in html
    assert "The study holds no baseline run yet" in html
    assert "plotly-graph-div" not in html


def test_report_reads_what_the_search_stored(stored: Stored) -> None:
    data = load_report_data(stored.storage, tuned=stored.tuned)
    assert data.study_name == NAME  # the only study; also the one tuned.yaml names
    outcomes = [t.outcome for t in data.convergence]
    assert outcomes.count("OK (reached target)") == 6
    assert {"OK (missed target)", "PRUNED", "UNSTABLE", "OOM"} <= set(outcomes)
    assert [t.outcome for t in data.systems].count("PRUNED") == 1
    assert set(data.importances.values) == set(CONVERGENCE_SPACE)
    assert data.comparison.speedup == 2.0 and data.comparison.tuned is not None
    assert data.comparison.tuned.peak_memory_bytes == 3_262_664
    why = data.comparison.why  # no paired throughput ratio here: its two recorded rates
    assert why is not None and why.throughput == pytest.approx(2400.0 / 1150.0)
    assert why.optimisation[0].line().startswith("global batch 16 -> 128")
    assert data.tuned_yaml is not None and "micro_batch_size: 128" in data.tuned_yaml


def test_pareto_front_marks_only_undominated_configs(stored: Stored) -> None:
    data = load_report_data(stored.storage)
    measured = [t for t in data.systems if t.samples_per_s is not None]
    front = {t.params["micro_batch_size"] for t in pareto_optimal(measured)}
    assert front == {512, 128, 16}  # 256: 128 is faster on less memory
    assert all(not t.memory_measured for t in measured)  # CPU systems runs: predicted peaks


def test_without_tuned_yaml_the_best_trial_stands_in(stored: Stored) -> None:
    data = load_report_data(stored.storage)
    assert data.comparison.tuned is not None
    assert data.comparison.tuned.label == "best trial #9"  # 0.7 s, the fastest to target
    assert data.comparison.speedup == pytest.approx(3.8 / 0.7)
    assert "not confirmed" in data.comparison.source
    assert "best trial #9" in data.tuned_yaml_source


def test_the_confirmation_a_search_stored_stands_in_for_tuned_yaml(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'confirmed.db'}"
    make_study(storage, "confirmed", FULL[:4])
    study = optuna.load_study(study_name="confirmed", storage=storage)
    study.set_user_attr("tuned/4", tuned_config("confirmed").model_dump_json())  # as search does
    data = load_report_data(storage)
    assert data.comparison.speedup == 2.0
    assert data.comparison.source.startswith("the study's confirmed result after 4 trials")
    assert data.tuned_yaml is not None and "micro_batch_size: 128" in data.tuned_yaml


def test_too_few_trials_for_importances_says_so_plainly(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'small.db'}"
    make_study(storage, "small", FULL[:3])
    data = load_report_data(storage)
    assert data.importances.values == {}
    assert "Too few completed trials for parameter importances: 2 of the 5" in render(data)


def test_a_journal_storage_reports_like_sqlite(tmp_path: Path) -> None:
    url = f"journal:///{tmp_path / 'autotune.log'}"  # four slashes: an absolute path
    make_study(open_storage(url), "journaled", FULL[:6])
    data = load_report_data(url)
    assert data.study_name == "journaled" and len(data.convergence) == 6
    assert len(data.systems) == 5


def test_cli_writes_the_report(stored: Stored, tmp_path: Path) -> None:
    output = tmp_path / "out.html"
    result = runner.invoke(
        app,
        ["report", "--storage", stored.storage, "--tuned", str(stored.tuned), "-o", str(output)],
    )
    assert result.exit_code == 0, result.output
    assert output.is_file() and "<section id='history'>" in output.read_text()
    assert f"optuna-dashboard {stored.storage}" in result.stdout


def test_the_dashboard_command_quotes_a_storage_path_with_a_space(
    stored: Stored, tmp_path: Path
) -> None:
    """`optuna-dashboard sqlite:///my db.db` was printed unquoted: a shell splits it."""
    spaced = tmp_path / "my dir" / "autotune.db"
    spaced.parent.mkdir()
    shutil.copyfile(stored.storage.removeprefix("sqlite:///"), spaced)
    storage = f"sqlite:///{spaced}"
    output = tmp_path / "out.html"
    result = runner.invoke(app, ["report", "--storage", storage, "-o", str(output)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert f"optuna-dashboard '{storage}'" in said
    assert f"optuna-dashboard &#x27;{storage}&#x27;" in output.read_text()


def _stderr(result: Result) -> list[str]:
    text = re.sub(r"\x1b\[[0-?]*[ -/]*[@-~]", "", result.stderr)
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--storage", "sqlite:///missing.db"], "missing.db does not exist; run `autotune search"),
        (["--study", "nope"], "no study 'nope' in sqlite:///"),
        (["--tuned", "absent.yaml"], "absent.yaml' does not exist"),
        (["--storage", "nonsense"], "is not a storage URL; use sqlite:///autotune.db"),
        (["--storage", "journal:///missing.log"], "missing.log does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    stored: Stored, args: list[str], expected: str, tmp_path: Path
) -> None:
    if "--storage" not in args:
        args = ["--storage", stored.storage, *args]
    result = runner.invoke(app, ["report", *args, "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2
    lines = _stderr(result)
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert expected in lines[0]
    assert not (tmp_path / "r.html").exists()


def test_unknown_study_lists_the_studies_there(stored: Stored, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'two.db'}"
    make_study(storage, "alpha", FULL[:2])
    make_study(storage, "beta", FULL[:2])
    result = runner.invoke(app, ["report", "--storage", storage])
    assert result.exit_code == 2
    assert "several studies (alpha, beta); pick one with --study NAME" in _stderr(result)[0]
    result = runner.invoke(app, ["report", "--storage", storage, "--study", "gamma"])
    assert "the studies there are: alpha, beta; pass one with --study" in _stderr(result)[0]
    # ./tuned.yaml names its study: that one is the default.
    Path("tuned.yaml").write_text(yaml.safe_dump(tuned_config("beta").model_dump(mode="json")))
    assert load_report_data(storage).study_name == "beta"


def test_unreadable_tuned_yaml_is_one_line(stored: Stored, tmp_path: Path) -> None:
    bad = tmp_path / "tuned.yaml"
    bad.write_text("train: [\n")
    result = runner.invoke(app, ["report", "--storage", stored.storage, "--tuned", str(bad)])
    assert result.exit_code == 2
    assert _stderr(result) == [
        f"error: {bad}:2: malformed YAML (expected the node content, "
        "but found '<stream end>'); fix the syntax."
    ]


def test_storage_password_is_never_printed(tmp_path: Path) -> None:
    url = "postgresql://tuner:s3cret@127.0.0.1:1/autotune"
    result = runner.invoke(app, ["report", "--storage", url, "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 2
    assert "s3cret" not in result.output + result.stderr
    assert "tuner:***@" in _stderr(result)[0]


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="Chromium is not installed (Debian: apt-get install -y chromium); the report is "
    "checked in a real browser only where one is",
)
def test_report_renders_in_headless_chromium(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    deep = tmp_path / ("d" * 100)  # a TMPDIR too long for Chromium's socket (it aborted)
    deep.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "report_check.py"),
            str(page),
            "--screenshot",
            str(shot),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TMPDIR": str(deep)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok:")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_browser_that_crashes_is_named_with_its_exit_code_and_log(
    page: Path, tmp_path: Path
) -> None:
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 3\n")
    fake.chmod(0o755)
    command = [sys.executable, str(ROOT / "scripts" / "report_check.py"), str(page)]
    result = subprocess.run(
        [*command, "--chromium", str(fake)], capture_output=True, text=True, timeout=60
    )
    said = "Chromium closed its pipe (exit code 3); its log: cannot open display"
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.splitlines() == [f"error: {said}"]


@pytest.mark.slow
def test_the_synthetic_study_has_the_shape_of_a_real_search(
    write_task: Callable[[str], Path], tmp_path: Path
) -> None:
    """A real (tiny) search: the attrs and params the tests fake are the ones it stores,
    and its report reads every trial."""
    storage = f"sqlite:///{tmp_path / 'real.db'}"
    options = SearchOptions(
        task_path=write_task(TINY_TASK),
        budget_s=30,
        trials=2,
        target_loss=0.5,
        storage=storage,
        output=tmp_path / "tuned.yaml",
        confirm_pairs=1,
        confirm_max_pairs=1,
        systems_measured=2,
        workdir=tmp_path / "trials",
    )
    run_search(options)
    make_study(storage, "fake", FULL)
    for real_name, fake_name in (("model", "fake"), ("model/systems", "fake/systems")):
        real = optuna.load_study(study_name=real_name, storage=storage)
        fake = optuna.load_study(study_name=fake_name, storage=storage)
        assert set(fake.user_attrs) <= set(real.user_attrs)
        done = [t for t in real.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert done, real_name
        fake_done = next(t for t in fake.trials if t.state == optuna.trial.TrialState.COMPLETE)
        assert set(fake_done.params) == set(done[0].params)
        assert set(fake_done.user_attrs) <= set(done[0].user_attrs)
    data = write_report(storage, tmp_path / "r.html", "model", tmp_path / "tuned.yaml")
    comparison = data.comparison
    assert "the confirmation of the search" in comparison.source, comparison.source
    # one confirming pair on a busy 2-core machine may reject the pick (the baseline is kept):
    # the report must then say so instead of showing a speed-up
    kept = any("the baseline is kept" in w for w in comparison.warnings)
    assert kept or comparison.speedup is not None or comparison.throughput_speedup is not None
    assert all(t.train is not None for t in data.convergence if t.outcome.startswith("OK"))
    assert all(t.samples_per_s for t in data.systems if t.outcome == "OK")


def test_a_rejected_pick_and_the_warnings_are_shown_beside_the_comparison(
    stored: Stored, tmp_path: Path
) -> None:
    from autotune.config import Rejected, Spread

    tuned = tuned_config(task="model.py")
    assert tuned.measured is not None
    rejected = Rejected(train=_train(64), speedup=Spread(median=0.57, low=0.42, high=0.83, n=8))
    measured = tuned.measured.model_copy(
        update={"rejected": rejected, "warnings": ["the baseline ran <30> steps"]}
    )
    path = tmp_path / "tuned.yaml"
    path.write_text(
        yaml.safe_dump(tuned.model_copy(update={"measured": measured}).model_dump(mode="json"))
    )
    html = render(load_report_data(stored.storage, tuned=path))
    assert "The search&#x27;s pick was measured 0.57x against the baseline" in html
    assert "<b>Warning:</b> the baseline ran &lt;30&gt; steps" in html


def test_an_edited_train_section_is_warned_of_beside_the_comparison(
    stored: Stored, tmp_path: Path
) -> None:
    """The report's tuned column shows the file's train section beside the search's
    numbers: after a hand edit those numbers are of another config, and it says so."""
    from autotune.config import train_digest

    tuned = tuned_config(task="model.py")
    assert tuned.measured is not None
    stamped = tuned.measured.model_copy(update={"train_digest": train_digest(_train(64))})
    path = tmp_path / "tuned.yaml"
    path.write_text(
        yaml.safe_dump(tuned.model_copy(update={"measured": stamped}).model_dump(mode="json"))
    )
    assert tuned.train != _train(64)
    html = render(load_report_data(stored.storage, tuned=path))
    assert "<b>Warning:</b> the train section was edited after the search" in html


def test_a_speedup_only_bounded_is_shown_as_its_lower_bound(stored: Stored, tmp_path: Path) -> None:
    from autotune.config import Spread

    tuned = tuned_config(task="model.py")
    assert tuned.measured is not None
    update = {
        "speedup_vs_baseline": None,
        "speedup_spread": None,
        "speedup_at_least": Spread(median=5.5, low=5.25, high=5.63, n=3),
    }
    measured = tuned.measured.model_copy(update=update)
    path = tmp_path / "tuned.yaml"
    path.write_text(
        yaml.safe_dump(tuned.model_copy(update={"measured": measured}).model_dump(mode="json"))
    )
    html = render(load_report_data(stored.storage, tuned=path))
    assert "time to target: at least <b>5.50x</b> the baseline's speed (the baseline" in html
