"""`autotune show`: the recommendation beside the baseline, the evidence, the provenance."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner, Result

from autotune._host import CpuShare
from autotune._tuned_view import allocator_difference, reproduction
from autotune.cli import app
from autotune.config import save_tuned_config
from tests._tuned import make_tuned
from tests.test_cli_errors import error_line

runner = CliRunner()


def show(path: Path) -> Result:
    return runner.invoke(app, ["show", str(path)], env={"COLUMNS": "160"})


def row(output: str, name: str) -> list[str]:
    """The cells of the table row that starts with ``name``."""
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line) if c.strip()]
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no row {name!r} in:\n{output}")


def test_baseline_beside_tuned(tmp_path: Path) -> None:
    path = tmp_path / "tuned.yaml"
    save_tuned_config(make_tuned(), path)
    result = show(path)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert row(out, "precision") == ["precision", "32-true", "bf16-mixed"]
    assert row(out, "micro-batch") == ["micro-batch", "16", "32"]
    assert row(out, "grad accumulation") == ["grad accumulation", "1", "2"]
    assert row(out, "global batch") == ["global batch", "16", "64"]
    assert row(out, "world size") == ["world size", "1", "1"]
    assert row(out, "activation checkpointing") == ["activation checkpointing", "none", "full"]
    assert row(out, "compile") == ["compile", "no", "no"]
    assert row(out, "optimizer")[1:] == ["adamw lr 0.001", "adamw lr 0.003, weight decay 0.1"]
    assert row(out, "schedule")[2] == "cosine, warmup 10 steps, min lr x0.1"


def test_evidence_with_spreads(tmp_path: Path) -> None:
    path = tmp_path / "tuned.yaml"
    save_tuned_config(make_tuned(), path)
    out = show(path).stdout
    assert row(out, "throughput speed-up")[1] == "2.03x (range 1.95-2.10, n=3)"
    assert row(out, "time-to-target speed-up")[1] == "2.17x (range 1.90-2.30, n=3)"
    assert "812.5 samples/s (range 790.0-830.1, n=3) (baseline 400.0)" in row(out, "throughput")[1]
    assert row(out, "time to target")[1] == "4.20 s (range 4.00-4.90, n=3) (baseline 9.10 s)"
    assert row(out, "peak memory")[1] == "117.7 MiB"
    assert row(out, "MFU")[1] == "23.1%"
    assert row(out, "target loss")[1] == "0.4321"
    assert row(out, "trial")[1] == "17"


def test_the_pairs_seeds_and_the_searchs_seed_are_shown_where_recorded(tmp_path: Path) -> None:
    tuned = make_tuned()
    assert tuned.measured is not None and tuned.provenance is not None
    path = tmp_path / "tuned.yaml"
    save_tuned_config(tuned, path)
    old = show(path).stdout
    assert "pairs trained on" not in old and row(old, "search seed")[1] == "-"
    measured = tuned.measured.model_copy(update={"confirmation_seeds": [1, 2, 3, 4]})
    where = tuned.provenance.model_copy(update={"seed": 0})
    save_tuned_config(tuned.model_copy(update={"measured": measured, "provenance": where}), path)
    out = show(path).stdout
    assert row(out, "pairs trained on")[1] == "seeds 1-4"
    assert row(out, "search seed")[1] == "0"


def test_user_text_is_escaped_and_passwords_hidden(tmp_path: Path) -> None:
    path = tmp_path / "tuned.yaml"
    save_tuned_config(make_tuned(task="models/[red]gpt[/].py"), path)
    out = show(path).stdout
    assert row(out, "task")[1] == "models/[red]gpt[/].py"
    assert row(out, "study name")[1] == "model [bold]x[/]"
    assert row(out, "study")[1] == "postgresql://user:***@db/autotune"
    assert "secret" not in out


def test_hand_written_config_shows_what_there_is(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("train:\n  micro_batch_size: 8\n  optimizer: {lr: 0.01}\n")
    result = show(path)
    assert result.exit_code == 0, result.output
    assert row(result.stdout, "micro-batch") == ["micro-batch", "-", "8"]
    assert "no baseline recorded" in result.stdout
    assert "Evidence" not in result.stdout
    assert "not recorded" in row(result.stdout, "source")[1]


def test_missing_file(tmp_path: Path) -> None:
    result = show(tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert "does not exist; check the path" in error_line(result)


def test_malformed_yaml(tmp_path: Path) -> None:
    path = tmp_path / "tuned.yaml"
    path.write_text("train: [1, 2\n")
    result = show(path)
    assert result.exit_code == 2
    assert re.search(r"tuned\.yaml:\d+: malformed YAML", error_line(result))


def test_reproduction_is_judged_against_the_recorded_rate_and_range() -> None:
    measured = make_tuned().measured  # records 812.5 samples/s, its runs 790.0-830.1
    assert measured is not None
    same, line = reproduction(750.0, measured)  # 92%
    assert same and line.startswith("92% of the 812.5 samples/s")
    assert "reproduced within 10%" in line
    drift, line = reproduction(725.0, measured)  # 89%: outside, and below the recorded range
    assert not drift and "not reproduced" in line and "Run `autotune search` here" in line
    wide = measured.model_copy(
        update={"throughput_spread": measured.throughput_spread.model_copy(update={"low": 700.0})}
    )
    inside, line = reproduction(725.0, wide)
    assert not inside and "inside the range the search's own runs spanned" in line
    for miss in (line, reproduction(725.0, measured)[1]):  # either miss names the check
        assert "`autotune check` re-runs it beside the baseline" in miss


def test_a_miss_under_contention_names_it_instead_of_asking() -> None:
    measured = make_tuned().measured
    assert measured is not None
    busy = CpuShare(cores=2, others_cores=1.3, seconds=12.0)
    same, line = reproduction(725.0, measured, busy)
    assert not same and "not reproduced, and other processes kept 1.3 of this" in line
    assert "Is this machine busy" not in line
    quiet = CpuShare(cores=2, others_cores=0.1, seconds=12.0)
    assert "Is this machine busy" in reproduction(725.0, measured, quiet)[1]
    assert reproduction(750.0, measured, busy)[0]  # within 10%: reproduced all the same


def test_a_run_under_another_allocator_than_the_search_says_so() -> None:
    plain = make_tuned()  # its search ran without GLIBC_TUNABLES
    assert plain.provenance is not None
    assert allocator_difference(plain, None) is None
    said = allocator_difference(plain, "glibc.malloc.hugetlb=1")
    assert said is not None and "GLIBC_TUNABLES=(unset)" in said
    assert "this run has glibc.malloc.hugetlb=1" in said
    provenance = plain.provenance.model_copy(update={"glibc_tunables": "glibc.malloc.hugetlb=1"})
    huge = plain.model_copy(update={"provenance": provenance})
    assert allocator_difference(huge, "glibc.malloc.hugetlb=1") is None
    assert allocator_difference(plain.model_copy(update={"provenance": None}), "x") is None


def test_a_rejected_pick_and_the_warnings_are_shown_with_the_evidence(tmp_path: Path) -> None:
    from autotune.config import Rejected, Spread
    from tests._tuned import BASELINE, make_train

    tuned = make_tuned()
    assert tuned.measured is not None
    rejected = Rejected(
        train=make_train(), trial=11, speedup=Spread(median=0.57, low=0.42, high=0.83, n=8)
    )
    measured = tuned.measured.model_copy(
        update={"rejected": rejected, "warnings": ["the baseline ran 30 steps"]}
    )
    path = tmp_path / "tuned.yaml"
    save_tuned_config(tuned.model_copy(update={"train": BASELINE, "measured": measured}), path)
    out = show(path).stdout
    pick = row(out, "rejected pick")[1]
    assert "micro=32" in pick and "0.57x (range 0.42-0.83, 8 pairs)" in pick
    assert "the baseline is kept" in out
    assert row(out, "warning")[1] == "the baseline ran 30 steps"


def test_why_it_is_faster_splits_the_speedup_into_its_two_measured_factors(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tuned.yaml"
    save_tuned_config(make_tuned(), path)  # 2.17x to the target at 2.03x the samples/s
    out = show(path).stdout
    assert "Why it is faster (both factors measured)" in out
    assert row(out, "in short")[1] == (
        "2.17x sooner to loss 0.4321 = 2.03x the samples/s x 1.07x fewer samples to get there"
    )
    assert row(out, "where from")[1].startswith("91% of it (on a log scale)")
    assert row(out, "samples/s 2.03x")[1].startswith("precision 32-true -> bf16-mixed")
    assert row(out, "samples to target 1.07x fewer")[1] == (
        "4.28x fewer optimizer steps (of 64 samples, not 16)"
    )
    assert "which setting within a factor did most is not measured" in out


def test_the_search_result_says_why_in_one_row() -> None:
    from rich.console import Console

    from autotune._search_view import result_table
    from autotune.search import SearchOutcome

    outcome = SearchOutcome(make_tuned(), [], None, [], {})  # type: ignore[arg-type]
    console = Console(width=400, record=True)
    console.print(result_table(outcome, "tuned.yaml"))
    why = row(console.export_text(), "why")[1]
    assert why.startswith("2.17x sooner to loss 0.4321 = 2.03x the samples/s")
    assert why.endswith("from fewer samples to the target.")


def test_an_edited_train_section_is_flagged_above_the_evidence(tmp_path: Path) -> None:
    tuned = make_tuned()
    edited = tuned.model_copy(update={"train": make_tuned(micro_batch_size=64).train})
    path = tmp_path / "tuned.yaml"
    save_tuned_config(edited, path)
    said = " ".join(show(path).stdout.split())
    assert "the train section was edited after the search measured it" in said
    assert "the evidence below is not of this config" in said
    save_tuned_config(tuned, path)
    assert "was edited" not in " ".join(show(path).stdout.split())


def test_a_speedup_the_baseline_never_measured_shows_as_its_lower_bound(tmp_path: Path) -> None:
    from rich.console import Console

    from autotune._search_view import result_table
    from autotune.config import Spread
    from autotune.search import SearchOutcome

    tuned = make_tuned()
    assert tuned.measured is not None
    bound = Spread(median=5.9, low=5.5, high=6.1, n=8)
    update = {"speedup_vs_baseline": None, "speedup_spread": None, "speedup_at_least": bound}
    tuned = tuned.model_copy(update={"measured": tuned.measured.model_copy(update=update)})
    path = tmp_path / "tuned.yaml"
    save_tuned_config(tuned, path)
    assert row(show(path).stdout, "time-to-target speed-up")[1] == (
        "at least 5.90x (range 5.50-6.10, n=8; the baseline never reached the target)"
    )
    console = Console(width=400, record=True)
    console.print(result_table(SearchOutcome(tuned, [], None, [], {}), "tuned.yaml"))  # type: ignore[arg-type]
    assert row(console.export_text(), "time-to-target speed-up")[1].startswith(
        "at least 5.90x (range 5.50-6.10, 8 pairs;"
    )


def test_parameters_without_a_gradient_are_named_with_what_ddp_needs(tmp_path: Path) -> None:
    tuned = make_tuned()
    assert tuned.measured is not None
    measured = tuned.measured.model_copy(update={"unused_parameters": ["aux.weight"]})
    path = tmp_path / "tuned.yaml"
    save_tuned_config(tuned.model_copy(update={"measured": measured}), path)
    assert row(show(path).stdout, "no gradient")[1].startswith("aux.weight: DDP must look")


def test_a_task_that_declares_unused_parameters_is_shown_as_declared(tmp_path: Path) -> None:
    tuned = make_tuned()
    assert tuned.measured is not None
    measured = tuned.measured.model_copy(update={"find_unused_parameters": True})
    path = tmp_path / "tuned.yaml"
    save_tuned_config(tuned.model_copy(update={"measured": measured}), path)
    assert row(show(path).stdout, "no gradient")[1].startswith(
        "the task declares Task(find_unused_parameters=True): DDP must look"
    )
