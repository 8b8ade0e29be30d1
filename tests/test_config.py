"""The schema: TrainConfig/TunedConfig validation, files, atomic saves, safe YAML."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from autotune import ConfigError, TrainConfig, TunedConfig, load_tuned_config, save_tuned_config
from autotune.config import (
    BaselineMeasured,
    DeviceInfo,
    EveryK,
    Measured,
    OptimizerConfig,
    Provenance,
    ScheduleConfig,
    Spread,
    load_train_config,
    train_digest,
    validate_train_config,
)

MINIMAL: dict[str, Any] = {"micro_batch_size": 8, "optimizer": {"lr": 1e-3}}


def full_train() -> TrainConfig:
    """A TrainConfig with every field set away from its default."""
    return TrainConfig(
        micro_batch_size=8,
        grad_accum_steps=2,
        world_size=2,
        global_batch_size=32,
        precision="bf16-mixed",
        activation_checkpointing=EveryK(every_k=2),
        compile=True,
        optimizer=OptimizerConfig(name="sgd", lr=1e-5, weight_decay=0.01, momentum=0.9),
        schedule=ScheduleConfig(name="cosine", warmup_steps=5, min_lr_ratio=0.1, total_steps=100),
        gradient_clip_val=1.0,
    )


def full_tuned() -> TunedConfig:
    """A TunedConfig with the evidence and provenance filled in."""
    baseline = TrainConfig(micro_batch_size=32, optimizer=OptimizerConfig(lr=1e-3))
    return TunedConfig(
        task="examples/tiny_gpt.py",
        train=full_train(),
        measured=Measured(
            device=DeviceInfo(kind="cpu", name="Test CPU", count=1, memory_bytes=2**34),
            throughput_samples_per_s=1234.5,
            throughput_spread=Spread(median=1234.5, low=1200.0, high=1250.25, n=5),
            peak_memory_bytes=123_456_789,
            mfu=0.42,
            target_loss=0.6931,
            time_to_target_s=12.5,
            time_to_target_spread=Spread(median=12.5, low=12.0, high=13.0, n=3),
            baseline=BaselineMeasured(
                train=baseline, throughput_samples_per_s=600.0, time_to_target_s=25.0
            ),
            speedup_vs_baseline=2.0,
            speedup_spread=Spread(median=2.0, low=1.9, high=2.1, n=3),
        ),
        provenance=Provenance(
            autotune_version="0.1.0",
            torch_version="2.13.0",
            study="sqlite:///autotune.db",
            study_name="tiny_gpt",
            trial=17,
            hardware="1x cpu",
        ),
    )


def fails(pattern: str, fn: Any, *args: Any) -> str:
    """Call ``fn``; check it raises a one-line ConfigError matching ``pattern``."""
    with pytest.raises(ConfigError, match=pattern) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# -- valid configs round-trip ------------------------------------------------------------


def test_a_schedule_may_be_given_by_its_name() -> None:
    config = validate_train_config({**MINIMAL, "schedule": "cosine"}, "where")
    assert config.schedule == ScheduleConfig(name="cosine")


def test_minimal_train_config_defaults() -> None:
    config = validate_train_config(MINIMAL, "where")
    assert config.global_batch_size == 8 == config.global_batch
    assert config.precision == "32-true"
    assert config.activation_checkpointing == "none"
    assert config.optimizer.name == "adamw"
    assert config.schedule == ScheduleConfig()
    assert config.gradient_clip_val is None


def test_global_batch_is_the_product() -> None:
    config = validate_train_config({**MINIMAL, "grad_accum_steps": 3, "world_size": 2}, "where")
    assert config.global_batch_size == 48 == config.global_batch


@pytest.mark.parametrize("config", [full_train(), validate_train_config(MINIMAL, "where")])
def test_train_config_round_trips_through_json_mode(config: TrainConfig) -> None:
    data = config.model_dump(mode="json")
    json.dumps(data)  # plain JSON types only
    assert TrainConfig.model_validate(data) == config
    assert TrainConfig.model_validate_json(config.model_dump_json()) == config


@pytest.mark.parametrize("value", ["none", "full", {"every_k": 3}])
def test_activation_checkpointing_forms(value: Any) -> None:
    config = validate_train_config({**MINIMAL, "activation_checkpointing": value}, "where")
    expected = EveryK(every_k=3) if isinstance(value, dict) else value
    assert config.activation_checkpointing == expected
    assert TrainConfig.model_validate(config.model_dump(mode="json")) == config


def test_tuned_config_round_trips_through_json_mode() -> None:
    tuned = full_tuned()
    assert TunedConfig.model_validate(tuned.model_dump(mode="json")) == tuned


@pytest.mark.parametrize("name", ["tuned.yaml", "tuned.yml", "tuned.json"])
def test_save_and_load_round_trip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    tuned = full_tuned()
    save_tuned_config(tuned, path)
    assert load_tuned_config(path) == tuned
    assert load_tuned_config(str(path)) == tuned
    assert load_train_config(path) == tuned.train


def test_saved_yaml_is_plain_yaml(tmp_path: Path) -> None:
    path = tmp_path / "tuned.yaml"
    save_tuned_config(full_tuned(), path)
    text = path.read_text()
    assert "!!" not in text  # no python tags
    data = yaml.safe_load(text)
    assert list(data)[:3] == ["schema_version", "task", "train"]
    assert data["schema_version"] == 1
    assert data["train"]["precision"] == "bf16-mixed"
    assert data["train"]["activation_checkpointing"] == {"every_k": 2}
    assert data["train"]["optimizer"] == {
        "name": "sgd",
        "lr": 1e-5,
        "weight_decay": 0.01,
        "momentum": 0.9,
    }
    assert data["measured"]["device"]["kind"] == "cpu"
    assert data["provenance"]["trial"] == 17


def test_saved_json_is_json(tmp_path: Path) -> None:
    path = tmp_path / "tuned.json"
    save_tuned_config(full_tuned(), path)
    data = json.loads(path.read_text())
    assert data["train"]["global_batch_size"] == 32
    assert data["train"]["optimizer"]["lr"] == 1e-5


def test_save_leaves_out_unset_evidence(tmp_path: Path) -> None:
    path = tmp_path / "tuned.yaml"
    save_tuned_config(TunedConfig(train=validate_train_config(MINIMAL, "where")), path)
    data = yaml.safe_load(path.read_text())
    assert set(data) == {"schema_version", "train"}
    assert load_tuned_config(path).measured is None


def test_save_creates_the_folder(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "tuned.yaml"
    save_tuned_config(full_tuned(), path)
    assert load_tuned_config(path) == full_tuned()


# -- invalid values -----------------------------------------------------------------------

INVALID: list[tuple[str, dict[str, Any], str]] = [
    (
        "micro-batch-0",
        {"micro_batch_size": 0},
        r"^where: micro_batch_size: Input should be greater than or equal to 1 \(got 0\)",
    ),
    (
        "precision",
        {"precision": "fp8"},
        r"^where: precision: Input should be '32-true', 'bf16-mixed', '16-mixed' or 'bf16-true' "
        r"\(got 'fp8'\)",
    ),
    (
        "global-batch",
        {"grad_accum_steps": 2, "world_size": 3, "global_batch_size": 50},
        r"^where: global_batch_size must equal micro_batch_size x grad_accum_steps x world_size "
        r"= 8 x 2 x 3 = 48, but got 50; fix one of them or drop global_batch_size\.",
    ),
    (
        "unknown-key",
        {"batch_size": 8},
        r"^where: batch_size: unknown key; remove it or check its spelling "
        r"\(see `autotune schema`\)",
    ),
    (
        "unknown-nested-key",
        {"optimizer": {"lr": 1e-3, "betas": [0.9, 0.95]}},
        r"^where: optimizer\.betas: unknown key; remove it",
    ),
    (
        "world-size-0",
        {"world_size": 0},
        r"^where: world_size: Input should be greater than or equal to 1 \(got 0\)",
    ),
    (
        "warmup-ge-total",
        {"schedule": {"warmup_steps": 10, "total_steps": 10}},
        r"^where: schedule: warmup_steps must be less than total_steps, but got warmup_steps=10, "
        r"total_steps=10; shorten the warmup or lengthen the schedule\.",
    ),
    (
        "min-lr-ratio",
        {"schedule": {"name": "cosine", "min_lr_ratio": 1.5}},
        r"^where: schedule\.min_lr_ratio: Input should be less than or equal to 1 \(got 1\.5\)",
    ),
    (
        "lr-0",
        {"optimizer": {"lr": 0}},
        r"^where: optimizer\.lr: Input should be greater than 0 \(got 0\)",
    ),
    (
        "lr-negative",
        {"optimizer": {"lr": -0.1}},
        r"^where: optimizer\.lr: Input should be greater than 0 \(got -0\.1\)",
    ),
    ("lr-missing", {"optimizer": {}}, r"^where: optimizer\.lr: Field required"),
    ("optimizer-missing", {"optimizer": None}, r"^where: optimizer: Input should be"),
    (
        "optimizer-name",
        {"optimizer": {"lr": 1e-3, "name": "lion"}},
        r"^where: optimizer\.name: Input should be 'sgd', 'adam', 'adamw', 'adagrad', 'rmsprop' "
        r"or 'custom' \(got 'lion'\)",
    ),
    (
        "momentum-1",
        {"optimizer": {"lr": 1e-3, "momentum": 1.0}},
        r"^where: optimizer\.momentum: Input should be less than 1",
    ),
    (
        "checkpointing-word",
        {"activation_checkpointing": "some"},
        r"^where: activation_checkpointing: must be 'none', 'full' or \{every_k: k\} with k >= 1 "
        r"\(got 'some'\)$",
    ),
    (
        "checkpointing-every-0",
        {"activation_checkpointing": {"every_k": 0}},
        r"activation_checkpointing\.every_k: Input should be greater than or equal to 1 \(got 0\)",
    ),
    (
        "checkpointing-every-typo",
        {"activation_checkpointing": {"every": 2}},
        r"activation_checkpointing\.every: unknown key",
    ),
    (
        "schedule-name",
        {"schedule": {"name": "step"}},
        r"^where: schedule\.name: Input should be 'constant', 'linear', 'cosine' or 'onecycle'",
    ),
    (
        "clip-0",
        {"gradient_clip_val": 0},
        r"^where: gradient_clip_val: Input should be greater than 0",
    ),
]


@pytest.mark.parametrize(
    ("change", "pattern"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_value_says_how_to_fix_it(change: dict[str, Any], pattern: str) -> None:
    fails(pattern, validate_train_config, {**MINIMAL, **change}, "where")


def test_missing_micro_batch_size() -> None:
    fails(
        r"^where: micro_batch_size: Field required",
        validate_train_config,
        {"optimizer": {"lr": 1}},
        "where",
    )


def test_not_a_mapping() -> None:
    fails(r"^where: Input should be a valid dictionary", validate_train_config, [1, 2], "where")


def test_several_errors_are_all_reported_on_one_line() -> None:
    message = fails(
        r"micro_batch_size",
        validate_train_config,
        {"micro_batch_size": 0, "optimizer": {"lr": 0}},
        "w",
    )
    assert "optimizer.lr" in message and "; " in message


def test_configs_are_immutable() -> None:
    config = validate_train_config(MINIMAL, "where")
    with pytest.raises(ValueError, match="frozen"):
        config.micro_batch_size = 4


# -- load_tuned_config ---------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_load_train_only_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "train.yaml",
        "train:\n  micro_batch_size: 16\n  precision: bf16-mixed\n  optimizer: {lr: 3.0e-3}\n",
    )
    tuned = load_tuned_config(path)
    assert tuned.task is None and tuned.measured is None and tuned.provenance is None
    assert tuned.train.micro_batch_size == 16
    assert tuned.train.precision == "bf16-mixed"
    assert tuned.train.optimizer.lr == 3e-3


def test_load_full_file_written_by_hand(tmp_path: Path) -> None:
    path = write(
        tmp_path / "tuned.yaml",
        "schema_version: 1\ntask: model.py\n"
        "train: {micro_batch_size: 4, grad_accum_steps: 2, optimizer: {name: adam, lr: 0.01},\n"
        "        activation_checkpointing: {every_k: 2}}\n"
        "measured: {device: {kind: cpu, name: x, count: 1}, throughput_samples_per_s: 10.5}\n"
        "provenance: {autotune_version: 0.1.0, torch_version: 2.13.0}\n",
    )
    tuned = load_tuned_config(path)
    assert tuned.task == "model.py"
    assert tuned.train.global_batch_size == 8
    assert tuned.train.activation_checkpointing == EveryK(every_k=2)
    assert tuned.measured is not None and tuned.measured.throughput_samples_per_s == 10.5
    assert tuned.provenance is not None and tuned.provenance.torch_version == "2.13.0"


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    fails(
        re.escape(f"Config file '{path}' does not exist; check the path."), load_tuned_config, path
    )


def test_load_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad.yaml",
        "train:\n  micro_batch_size: 8\n  optimizer: {lr: 1e-3\n  precision: bf16-mixed\n",
    )
    fails(
        "^" + re.escape(f"{path}:") + r"\d+: malformed YAML \(.+\); fix the syntax\.",
        load_tuned_config,
        path,
    )


def test_load_malformed_yaml_line_is_the_bad_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "train:\n  micro_batch_size: 8\n  optimizer: [\n: :\n")
    message = fails("malformed YAML", load_tuned_config, path)
    line = int(message.removeprefix(f"{path}:").split(":")[0])
    assert 3 <= line <= 5, message


def test_load_tab_indented_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "tabs.yaml", "train:\n\tmicro_batch_size: 8\n")
    fails("^" + re.escape(f"{path}:2: malformed YAML"), load_tuned_config, path)


@pytest.mark.parametrize(
    ("text", "kind"), [("- 1\n- 2\n", "list"), ("just text\n", "str"), ("", "NoneType")]
)
def test_load_not_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = write(tmp_path / "list.yaml", text)
    fails(
        "^"
        + re.escape(f"{path}: expected a YAML mapping with a `train:` section, but got {kind}."),
        load_tuned_config,
        path,
    )


def test_load_without_train_section(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", "micro_batch_size: 8\noptimizer: {lr: 1.0e-3}\n")
    fails(
        "^" + re.escape(f"{path}: no `train:` section; a config file holds `train: {{"),
        load_tuned_config,
        path,
    )


def test_load_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.yaml", "train: {micro_batch_size: 8, optimizer: {lr: 1.0e-3}}\ntrian: 1\n"
    )
    fails(
        "^" + re.escape(f"{path}: trian: unknown key; remove it or check its spelling"),
        load_tuned_config,
        path,
    )


def test_load_bad_value_in_train_only_file(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", "train: {micro_batch_size: 0, optimizer: {lr: 1.0e-3}}\n")
    fails(
        "^" + re.escape(f"{path}: ") + r".*micro_batch_size: Input should be greater",
        load_tuned_config,
        path,
    )


def test_load_bad_value_in_full_file_names_the_path(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.yaml",
        "task: m.py\ntrain: {micro_batch_size: 8, optimizer: {lr: 1.0e-3}, precision: fp8}\n",
    )
    fails("^" + re.escape(f"{path}: train.precision: Input should be"), load_tuned_config, path)


def test_load_wrong_schema_version(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.yaml",
        "schema_version: 2\ntrain: {micro_batch_size: 8, optimizer: {lr: 1.0e-3}}\n",
    )
    fails("^" + re.escape(f"{path}: schema_version: Input should be 1"), load_tuned_config, path)


def test_load_unknown_key_in_evidence(tmp_path: Path) -> None:
    path = tmp_path / "tuned.yaml"
    save_tuned_config(full_tuned(), path)
    data = yaml.safe_load(path.read_text())
    data["measured"]["throughput"] = 5
    path.write_text(yaml.safe_dump(data))
    fails(re.escape(f"{path}: measured.throughput: unknown key"), load_tuned_config, path)


def test_the_train_digest_survives_the_file_and_catches_an_edit(tmp_path: Path) -> None:
    """The search records which train section its numbers are of; a save and a load (YAML
    and JSON) leave it matching, a hand edit of any setting does not, and a file written
    before the digest existed is never called edited."""
    tuned = full_tuned()
    assert tuned.measured is not None
    stamped = tuned.model_copy(
        update={
            "measured": tuned.measured.model_copy(
                update={"train_digest": train_digest(tuned.train)}
            )
        }
    )
    for name in ("tuned.yaml", "tuned.json"):
        save_tuned_config(stamped, tmp_path / name)
        assert not load_tuned_config(tmp_path / name).edited()
    data = yaml.safe_load((tmp_path / "tuned.yaml").read_text())
    data["train"]["optimizer"]["lr"] *= 2
    (tmp_path / "edited.yaml").write_text(yaml.safe_dump(data))
    assert load_tuned_config(tmp_path / "edited.yaml").edited()
    assert not tuned.edited()  # no digest recorded: nothing to compare


# -- atomic saves, safe loads, the schema ----------------------------------------------------


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tuned.yaml"
    save_tuned_config(full_tuned(), path)
    before = path.read_bytes()

    def crash(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("autotune._io.os.replace", crash)
    changed = TunedConfig(train=validate_train_config(MINIMAL, "where"))
    with pytest.raises(OSError, match="disk full"):
        save_tuned_config(changed, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["tuned.yaml"]  # no temp file left behind
    monkeypatch.undo()
    save_tuned_config(changed, path)
    assert load_tuned_config(path) == changed
    assert sorted(os.listdir(tmp_path)) == ["tuned.yaml"]


def test_a_saved_file_gets_the_permissions_open_would_give_it(tmp_path: Path) -> None:
    """Not the temp file's 0600: a teammate or the CI user reads the tuned.yaml too (found
    with umask 022: tuned.yaml and the HTML report came out -rw-------)."""
    path = tmp_path / "tuned.yaml"
    old = os.umask(0o022)
    try:
        save_tuned_config(full_tuned(), path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o077)
        save_tuned_config(full_tuned(), tmp_path / "private.yaml")
        assert stat.S_IMODE((tmp_path / "private.yaml").stat().st_mode) == 0o600
    finally:
        os.umask(old)
    path.chmod(0o664)  # a file the user opened up keeps its bits when rewritten
    save_tuned_config(full_tuned(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o664


def test_save_interrupted_mid_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tuned.json"
    save_tuned_config(full_tuned(), path)
    before = path.read_bytes()

    def crash(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("autotune._io.os.fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        save_tuned_config(TunedConfig(train=validate_train_config(MINIMAL, "w")), path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["tuned.json"]


@pytest.mark.parametrize(
    "template",
    [
        '!!python/object/apply:os.system ["touch {marker}"]\n',
        'train: !!python/object/apply:os.system ["touch {marker}"]\n',
        "train:\n  micro_batch_size: !!python/object/apply:os.system ['touch {marker}']\n"
        "  optimizer: {{lr: 0.001}}\n",
    ],
    ids=["top", "train", "nested"],
)
def test_yaml_is_loaded_safely(tmp_path: Path, template: str) -> None:
    marker = tmp_path / "executed"
    path = write(tmp_path / "evil.yaml", template.format(marker=marker))
    fails("^" + re.escape(f"{path}:") + r"\d+: .*python/object/apply", load_tuned_config, path)
    assert not marker.exists()


def test_json_schema_is_closed() -> None:
    schema = TunedConfig.model_json_schema()
    json.dumps(schema)
    defs = schema["$defs"]
    assert schema["additionalProperties"] is False
    assert defs["TrainConfig"]["additionalProperties"] is False
    for name in ("OptimizerConfig", "ScheduleConfig", "EveryK", "Measured", "Provenance"):
        assert defs[name]["additionalProperties"] is False, name
    train = defs["TrainConfig"]["properties"]
    assert train["micro_batch_size"]["minimum"] == 1
    assert set(train["precision"]["enum"]) == {"32-true", "bf16-mixed", "16-mixed", "bf16-true"}
    assert set(defs["TrainConfig"]["required"]) == {"micro_batch_size", "optimizer"}
