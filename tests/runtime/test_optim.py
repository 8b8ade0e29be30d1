"""LR schedules (pure) and optimizers by name."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from autotune.config import OptimizerConfig, ScheduleConfig
from autotune.errors import ConfigError
from autotune.runtime import LRMultiplier, build_optimizer, build_scheduler
from autotune.runtime._optim import clip_gradients, sparse_parameters
from autotune.task import Task


def _curve(name: str, warmup: int, total: int = 100, min_ratio: float = 0.1) -> list[float]:
    schedule = ScheduleConfig(name=name, warmup_steps=warmup, min_lr_ratio=min_ratio)
    multiplier = LRMultiplier(schedule, total)
    return [multiplier(step) for step in range(total)]


@pytest.mark.parametrize("name", ["constant", "linear", "cosine"])
def test_warmup_rises_linearly_to_the_peak(name: str) -> None:
    curve = _curve(name, warmup=10)
    assert curve[:10] == pytest.approx([(i + 1) / 11 for i in range(10)])
    assert curve[10] == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["linear", "cosine", "onecycle"])
def test_decaying_schedules_end_at_min_ratio(name: str) -> None:
    curve = _curve(name, warmup=10)
    assert curve[-1] == pytest.approx(0.1)
    after_peak = curve[curve.index(max(curve)) :]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(after_peak))


def test_constant_stays_at_peak_after_warmup() -> None:
    assert set(_curve("constant", warmup=5)[5:]) == {1.0}


def test_cosine_is_halfway_at_the_middle_of_the_decay() -> None:
    curve = _curve("cosine", warmup=0, total=101, min_ratio=0.0)
    assert curve[50] == pytest.approx(0.5)


def test_onecycle_starts_low_peaks_after_warmup() -> None:
    curve = _curve("onecycle", warmup=20)
    assert curve[0] == pytest.approx(1 / 25)
    assert curve.index(max(curve)) == 20
    assert max(curve) == pytest.approx(1.0)


def test_onecycle_without_warmup_rises_for_30_percent() -> None:
    curve = _curve("onecycle", warmup=0)
    assert curve.index(max(curve)) == 30


def test_warmup_longer_than_the_run_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"warmup_steps=50 for 40 steps; shorten the warmup"):
        LRMultiplier(ScheduleConfig(name="cosine", warmup_steps=50), 40)


def test_scheduler_state_round_trips() -> None:
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = build_scheduler(opt, ScheduleConfig(name="cosine", warmup_steps=2), run_steps=10)
    for _ in range(4):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.SGD(model.parameters(), lr=1.0)
    sched2 = build_scheduler(opt2, ScheduleConfig(name="cosine", warmup_steps=2), run_steps=10)
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert not math.isclose(sched.get_last_lr()[0], 1.0)


def _task(optimizer: object = "adamw") -> Task:
    return Task(model=nn.Identity, dataset=list, loss=lambda m, b: b, optimizer=optimizer)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("sgd", torch.optim.SGD),
        ("adam", torch.optim.Adam),
        ("adamw", torch.optim.AdamW),
        ("adagrad", torch.optim.Adagrad),
        ("rmsprop", torch.optim.RMSprop),
    ],
)
def test_optimizers_by_name(name: str, cls: type) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    opt = build_optimizer(model, OptimizerConfig(name=name, lr=0.5, weight_decay=0.1), _task())  # type: ignore[arg-type]
    assert isinstance(opt, cls)
    decay, rest = opt.param_groups
    assert decay["lr"] == 0.5
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert [p.ndim for p in decay["params"]] == [2]


def test_custom_optimizer_comes_from_the_task() -> None:
    made: list[float] = []

    def factory(params: object, lr: float) -> torch.optim.Optimizer:
        made.append(lr)
        return torch.optim.SGD(params, lr=lr)  # type: ignore[arg-type]

    opt = build_optimizer(nn.Linear(2, 2), OptimizerConfig(name="custom", lr=0.25), _task(factory))
    assert isinstance(opt, torch.optim.SGD) and made == [0.25]


def test_custom_name_without_a_callable_is_an_error() -> None:
    with pytest.raises(ConfigError, match="set optimizer.name: adamw"):
        build_optimizer(nn.Linear(2, 2), OptimizerConfig(name="custom", lr=0.1), _task("adamw"))


class _Recommender(nn.Module):
    """A sparse bag-of-ids embedding (sparse gradients) under a dense head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.EmbeddingBag(50, 4, sparse=True)
        self.dense = nn.Embedding(50, 4)  # sparse=False: dense gradients, decayed as usual
        self.head = nn.Linear(4, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(ids) + self.dense(ids).mean(1))


def _backward(model: nn.Module) -> None:
    torch.manual_seed(0)
    model(torch.randint(0, 50, (8, 5))).pow(2).sum().backward()


def test_sparse_parameters_are_the_sparse_embeddings_weights() -> None:
    model = _Recommender()
    assert list(sparse_parameters(model)) == ["emb.weight"]
    _backward(model)
    grads = {n: p.grad.is_sparse for n, p in model.named_parameters() if p.grad is not None}
    assert [n for n, sparse in grads.items() if sparse] == ["emb.weight"] and len(grads) == 4


@pytest.mark.parametrize("name", ["sgd", "adagrad"])
def test_sparse_gradients_step_with_weight_decay_on_the_dense_matrices_only(name: str) -> None:
    model = _Recommender()
    config = OptimizerConfig(name=name, lr=0.1, weight_decay=0.01, momentum=0.9)  # type: ignore[arg-type]
    opt = build_optimizer(model, config, _task(name))
    decayed = [id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]]
    assert decayed == [id(model.dense.weight), id(model.head.weight)]
    before = model.emb.weight.detach().clone()
    _backward(model)
    opt.step()  # torch raises here if a sparse gradient is in a decayed group
    assert not torch.equal(before, model.emb.weight)


@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop"])
def test_an_optimizer_without_sparse_support_is_refused_before_any_step(name: str) -> None:
    config = OptimizerConfig(name=name, lr=0.1)  # type: ignore[arg-type]
    fix = r"emb.weight gets them .* name one of sgd, adagrad .* sparse=False to keep"
    refusal = f"optimizer '{name}' cannot update sparse gradients.*{fix}"
    with pytest.raises(ConfigError, match=refusal):
        build_optimizer(_Recommender(), config, _task(name))


def test_clipping_sparse_gradients_matches_clipping_their_dense_copies() -> None:
    sparse, dense = _Recommender(), _Recommender()
    dense.load_state_dict(sparse.state_dict())
    dense.emb.sparse = False
    _backward(sparse)
    _backward(sparse)  # two backwards: an uncoalesced gradient with repeated rows
    _backward(dense)
    _backward(dense)
    want = torch.nn.utils.clip_grad_norm_(dense.parameters(), 0.5)
    got = clip_gradients(sparse.parameters(), 0.5)
    assert float(got) == pytest.approx(float(want), rel=1e-5) and float(want) > 0.5
    for (name, p), q in zip(sparse.named_parameters(), dense.parameters(), strict=True):
        grad = p.grad.to_dense() if p.grad.is_sparse else p.grad
        assert torch.allclose(grad, q.grad, atol=1e-6), name
