"""`autotune check`: a tuned.yaml re-measured in interleaved pairs with its baseline."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from autotune import cli
from autotune.cli import app
from autotune.config import Rejected, Spread, TrainConfig, TunedConfig, save_tuned_config
from autotune.errors import ConfigError
from autotune.search import Recheck, recheck
from autotune.search._confirm import Confirmation, Pairing
from autotune.search._recheck import pairing_of
from autotune.search._types import Measured
from tests._tuned import BASELINE, make_tuned
from tests.conftest import TINY_TASK
from tests.test_show import row

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _run(train: TrainConfig, samples_per_s: float) -> Measured:
    return Measured(train=train, losses=[1.0], elapsed_s=[0.1], samples_per_s=samples_per_s)


def _found(
    speedups: list[float],
    tuned_rate: float = 812.5,
    base_rate: float = 400.0,
    seeds: tuple[int, ...] = (),
    recorded_seeds: tuple[int, ...] = (),
) -> Recheck:
    tuned = make_tuned()
    if recorded_seeds:
        measured = tuned.measured.model_copy(update={"confirmation_seeds": list(recorded_seeds)})  # type: ignore[union-attr]
        tuned = tuned.model_copy(update={"measured": measured})
    found = Confirmation(
        seeds=list(seeds),
        winner=[_run(tuned.train, tuned_rate) for _ in speedups],
        baseline=[_run(BASELINE, base_rate) for _ in speedups],
        speedups=speedups,
        rate_ratios=[tuned_rate / base_rate for _ in speedups],
        sample_ratios=[speedup * base_rate / tuned_rate for speedup in speedups],
        pairs=max(3, len(speedups)),
        peak_memory_bytes=123_456_789,
    )
    return Recheck(tuned=tuned, found=found)


def test_the_pairs_run_both_configs_to_the_recorded_target_within_3x_their_times() -> None:
    tuned = make_tuned()  # tuned: 4.2 s at 812.5 samples/s, global 64; baseline 9.1 s at 400
    pairing = pairing_of(tuned)
    assert (pairing.winner, pairing.baseline) == (tuned.train, BASELINE)
    assert pairing.target == 0.4321
    assert pairing.winner_steps == 160  # 3 x 4.2 s x 812.5 / 64, rounded up
    assert pairing.baseline_steps == 683  # 3 x 9.1 s x 400 / 16
    assert pairing.cap_s == pytest.approx(27.3)
    scheduled = make_tuned(schedule={"name": "cosine", "total_steps": 90})
    assert pairing_of(scheduled).winner_steps == 90  # the schedule's length, where shorter


def test_a_file_without_a_speedup_to_check_is_refused_with_the_fix() -> None:
    bare = TunedConfig(task="model.py", train=make_tuned().train)
    with pytest.raises(ConfigError, match=r"no time to a target loss.*autotune search"):
        pairing_of(bare)
    tuned = make_tuned()
    assert tuned.measured is not None
    kept = tuned.model_copy(
        update={
            "measured": tuned.measured.model_copy(
                update={"speedup_vs_baseline": None, "rejected": Rejected(train=BASELINE)}
            )
        }
    )
    with pytest.raises(ConfigError, match=r"kept the baseline: see `autotune show`"):
        pairing_of(kept)


def test_a_file_with_only_a_bounded_speedup_is_refused_with_the_fix() -> None:
    tuned = make_tuned()
    assert tuned.measured is not None and tuned.measured.baseline is not None
    base = tuned.measured.baseline.model_copy(update={"time_to_target_s": None})
    bound = Spread(median=5.9, low=5.5, high=6.1, n=8)
    measured = tuned.measured.model_copy(
        update={
            "baseline": base,
            "speedup_vs_baseline": None,
            "speedup_spread": None,
            "speedup_at_least": bound,
        }
    )
    with pytest.raises(
        ConfigError, match=r"never reached the target loss 0.4321.*5.90x or more.*--target-loss"
    ):
        pairing_of(tuned.model_copy(update={"measured": measured}))


def test_a_train_section_edited_after_the_search_is_not_checked_against_its_numbers() -> None:
    """tuned.yaml's speed-up is of the config the search measured; a user who changed the
    micro-batch since would have the new config held to it (exit 2, with the fix)."""
    tuned = make_tuned()
    edited = tuned.model_copy(update={"train": make_tuned(micro_batch_size=16).train})
    assert edited.edited() and not tuned.edited()
    with pytest.raises(ConfigError, match=r"edited after the search.*autotune search"):
        pairing_of(edited)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_a_config_measured_on_cuda_is_not_checked_without_it(tmp_path: Path) -> None:
    tuned = make_tuned()
    assert tuned.measured is not None
    on_gpu = tuned.measured.device.model_copy(update={"kind": "cuda", "name": "NVIDIA H200"})
    cuda = tuned.model_copy(
        update={"measured": tuned.measured.model_copy(update={"device": on_gpu})}
    )
    with pytest.raises(ConfigError, match=r"measured on CUDA \(1 x NVIDIA H200\).*no CUDA"):
        recheck(cuda, ROOT / "examples" / "mlp_digits.py", tmp_path)


def test_the_versions_that_changed_since_the_search_are_named() -> None:
    check = _found([2.0, 2.1, 2.2])  # tests._tuned: autotune 0.1.0, torch 2.13.0
    changed = check.changed()
    assert ("torch 2.13.0 -> " in " ".join(changed)) == (torch.__version__ != "2.13.0")
    assert all(line.startswith(("torch ", "autotune ")) for line in changed)
    upgraded = check.tuned.model_copy(
        update={
            "provenance": check.tuned.provenance.model_copy(  # type: ignore[union-attr]
                update={"torch_version": "2.12.1"}
            )
        }
    )
    again = Recheck(tuned=upgraded, found=check.found)
    assert f"torch 2.12.1 -> {torch.__version__}" in again.changed()
    assert again.summary()["changed"] == again.changed()


def test_a_speedup_within_its_recorded_range_holds() -> None:
    check = _found([2.0, 1.95, 2.2])  # recorded 2.17x, range 1.9-2.3
    assert check.holds()
    assert check.verdict() == "holds: 2.00x now against 2.17x recorded"
    assert check.speedup.ratio == pytest.approx(2.0 / 2.17)
    assert check.samples_per_s.within() is True


def test_a_speedup_below_its_range_and_the_tolerance_does_not_hold() -> None:
    check = _found([1.6, 1.7, 1.65])
    assert not check.holds()
    assert check.verdict().startswith("does not hold: 1.65x now against 2.17x recorded (")
    assert check.verdict().endswith("; run `autotune search` on this machine")
    slower = _found([0.8, 0.9, 0.85])
    assert "slower than the baseline here" in slower.verdict()


def test_a_speedup_that_no_longer_holds_says_which_factor_lost_it() -> None:
    """tests._tuned records 2.17x to the target at 2.03x the samples/s: 1.07x fewer samples."""
    check = _found([1.6, 1.7, 1.65])  # the same samples/s edge, more samples to the target
    assert check.sample_ratio.recorded == pytest.approx(2.17 / 2.03)
    assert check.sample_ratio.now is not None and check.sample_ratio.now.n == 3
    assert (
        "(fewer samples to target 76% of tuned.yaml's, throughput speed-up 100%: the "
        "training itself changed (a kernel's numerics, the data or the seed))" in check.verdict()
    )
    rate = _found([1.5, 1.5, 1.5], tuned_rate=560.0)  # 1.4x the samples/s, 1.07x fewer samples
    assert (
        "(throughput speed-up 69% of tuned.yaml's, fewer samples to target 100%: this "
        "machine or torch runs the tuned settings differently)" in rate.verdict()
    )
    both = _found([1.0, 1.0, 1.0], tuned_rate=560.0)
    assert (
        "(throughput speed-up 69% of tuned.yaml's, fewer samples to target 67% of "
        "tuned.yaml's)" in both.verdict()
    )


def test_no_pair_at_the_target_is_no_check() -> None:
    check = _found([])
    assert not check.holds()
    assert check.verdict().startswith("not checked: no pair had both runs at the target")


def test_samples_per_s_that_moved_with_the_baselines_are_put_down_to_the_machine() -> None:
    machine = _found([2.1, 2.2, 2.0], tuned_rate=600.0, base_rate=300.0)  # 74% and 75%
    assert machine.holds()
    assert machine.verdict().endswith(
        "samples/s moved with the machine: the tuned config's is 74% of tuned.yaml's, "
        "the baseline's 75%"
    )
    config = _found([2.1, 2.2, 2.0], tuned_rate=600.0, base_rate=400.0)
    assert "while the baseline's is 100%" in config.verdict()


def test_the_table_shows_recorded_beside_remeasured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tuned.yaml"
    save_tuned_config(make_tuned(task=str(ROOT / "examples" / "mlp_digits.py")), path)
    monkeypatch.setattr(cli, "recheck", lambda *args, **kwargs: _found([1.6, 1.7, 1.65]))
    saved = tmp_path / "check.json"
    result = runner.invoke(app, ["check", str(path), "--json", str(saved)], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output  # the speed-up does not hold
    written = json.loads(saved.read_text())
    assert written["holds"] is False and written["pairs"] == 3
    assert written["verdict"].startswith("does not hold: 1.65x now against 2.17x recorded")
    speedup = written["rows"][0]
    assert (speedup["what"], speedup["recorded"], speedup["now"]["median"]) == (
        "time-to-target speed-up", 2.17, 1.65,
    )  # fmt: skip
    out = result.stdout
    assert row(out, "time-to-target speed-up")[1:] == [
        "2.17x", "1.65x (1.60x-1.70x, n=3)", "76%", "no",
    ]  # fmt: skip
    assert row(out, "fewer samples to target")[1:] == [
        "1.07x", "0.81x (0.79x-0.84x, n=3)", "76%", "no",
    ]  # fmt: skip
    assert row(out, "baseline samples/s")[1:] == [
        "400.0", "400.0 (400.0-400.0, n=3)", "100%", "yes",
    ]  # fmt: skip
    assert row(out, "tuned peak memory")[1:] == ["117.7 MiB", "117.7 MiB", "100%", "yes"]
    assert "does not hold" in out


def test_a_task_file_is_needed(tmp_path: Path) -> None:
    path = tmp_path / "tuned.yaml"
    save_tuned_config(make_tuned(task=None), path)
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 2  # a file it cannot check; 1 is a claim that does not hold
    assert "names no task file; pass it with --task model.py" in result.output


def test_check_reruns_a_real_tuned_config_and_its_baseline(tmp_path: Path) -> None:
    """Real pairs on mlp_digits to an easy target: a claim of 0.05x holds whatever the
    machine does, so the exit code is 0 and every row is re-measured."""
    tuned = make_tuned(
        task=str(ROOT / "examples" / "mlp_digits.py"),
        micro_batch_size=64,
        grad_accum_steps=1,
        precision="32-true",
        activation_checkpointing="none",
        optimizer={"name": "adamw", "lr": 1e-2},
        schedule={"name": "constant"},
        gradient_clip_val=None,
    )
    assert tuned.measured is not None
    easy = tuned.measured.model_copy(
        update={
            "target_loss": 1.0,
            "time_to_target_s": 2.0,
            "speedup_vs_baseline": 0.05,
            "speedup_spread": Spread(median=0.05, low=0.04, high=0.06, n=3),
            "throughput_samples_per_s": 2000.0,
            "baseline": tuned.measured.baseline.model_copy(  # type: ignore[union-attr]
                update={"time_to_target_s": 5.0, "throughput_samples_per_s": 1000.0}
            ),
        }
    )
    path = tmp_path / "tuned.yaml"
    save_tuned_config(tuned.model_copy(update={"measured": easy}), path)
    result = runner.invoke(
        app, ["check", str(path), "--pairs", "3", "--most", "3"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("pair ")] == [
        line for line in result.stderr.splitlines() if " to the target, " in line
    ]
    assert result.stderr.count(" to the target, ") == 3  # both sides reached it in each pair
    assert row(result.stdout, "time-to-target speed-up")[1] == "0.05x"
    said = " ".join(result.stdout.split())
    # a file without confirmation_seeds ran every pair on the search's seed, 0: from there
    assert re.search(
        r"3 interleaved pairs on seeds 0-2 \((the same torch|torch |autotune ).*\); holds:", said
    )


def test_another_task_file_is_not_checked_against_the_numbers(
    write_task: Callable[[str], Path], tmp_path: Path
) -> None:
    from autotune.config import file_sha256

    tuned = make_tuned()
    assert tuned.measured is not None
    recorded = write_task(TINY_TASK)
    measured = tuned.measured.model_copy(update={"task_sha256": file_sha256(recorded)})
    other = write_task(
        TINY_TASK.replace(
            "nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2)",
            "nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 2)",
        ),
        "other.py",
    )
    with pytest.raises(ConfigError, match=r"not the one the search measured.*autotune search"):
        recheck(tuned.model_copy(update={"measured": measured}), other, tmp_path)


def test_a_speedup_lost_on_another_seed_is_put_down_to_the_seed() -> None:
    """Was "run `autotune search` on this machine" for a transformer task whose pick held
    1.44x on seed 1 and fell to 0.48x on seed 2, needing 31% of its recorded samples/target
    edge (scripts/dogfood/stdlib_lines.py): a search there would not find that out."""
    speedups = [0.5, 0.48, 0.46]  # the samples/s edge kept, the samples edge gone
    other = _found(speedups, seeds=(5, 6, 7), recorded_seeds=(1, 2, 3))
    assert other.verdict().endswith(
        "; on seeds 5-7 the tuned config needed more samples to the target than the "
        "search's confirmation measured on seeds 1-3: its speed-up depends on the data "
        "order and initial weights; check more seeds before relying on it"
    )
    same = _found(speedups, seeds=(1, 2, 3), recorded_seeds=(1, 2, 3))  # its own seeds
    assert same.verdict().endswith("; run `autotune search` on this machine")
    # A file from before the seeds were recorded ran every pair on the search's seed, 0.
    old = _found(speedups, seeds=(0, 1, 2))
    assert "on seeds 0-2 the tuned config needed more samples" in old.verdict()
    assert "measured on seed 0:" in old.verdict()
    # samples/s lost too: the machine or torch, not the seed
    machine = _found([1.0, 1.0, 1.0], tuned_rate=560.0, seeds=(5, 6, 7), recorded_seeds=(1, 2, 3))
    assert machine.verdict().endswith("; run `autotune search` on this machine")


def test_the_check_repeats_the_confirmations_seeds_unless_told_another() -> None:
    """Pair k runs on first_seed + k: by default the search's confirmation's own seeds; for
    a file that does not record them, its search's seed (0 where that is not recorded)."""
    tuned = make_tuned()
    assert pairing_of(tuned).first_seed == 0
    assert pairing_of(tuned, 7).first_seed == 7
    measured = tuned.measured.model_copy(update={"confirmation_seeds": [4, 5, 6]})  # type: ignore[union-attr]
    assert pairing_of(tuned.model_copy(update={"measured": measured})).first_seed == 4
    where = tuned.provenance.model_copy(update={"seed": 3})  # type: ignore[union-attr]
    assert pairing_of(tuned.model_copy(update={"provenance": where})).first_seed == 3
    assert [Pairing(*[None] * 6, first_seed=4).seed(pair) for pair in range(3)] == [4, 5, 6]  # type: ignore[arg-type]
