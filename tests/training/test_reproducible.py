"""Stable training: the same seed gives the same weights and metrics; another seed does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from siam.training.engine import fit

from .helpers import tiny_config, write_folder


def _chain(data: Path, out: Path, seed: int, **optim: Any) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """sun (2 epochs, flips on, validated) then son-head from it; the final weights and both stages'
    metrics (training losses, validation SUN mAP and SoN RMSE)."""
    common = {"root": str(data), "batch_size": 8, "val_batch_size": 16}
    trainer = {"max_epochs": 2, "seed": seed, "val_every_n_epochs": 1}
    sun = fit(tiny_config(out / "sun", "sun", data=common, trainer=trainer, optim={"lr_decay_every": 0, **optim},
                          preprocessing={"hflip": True}))
    head = fit(tiny_config(out / "head", "son-head", data=common, trainer=trainer, init_from=str(sun.model_path),
                           preprocessing={"hflip": True}))
    assert head.model is not None
    metrics = {f"sun/{k}": v for k, v in sun.metrics.items()} | {f"head/{k}": v for k, v in head.metrics.items()}
    return {k: v.detach().clone() for k, v in head.model.state_dict().items()}, metrics


def test_same_seed_same_weights_and_metrics_other_seed_differs(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "data", n_sun=40, n_son=40)
    w1, m1 = _chain(data, tmp_path / "a", seed=5)
    w2, m2 = _chain(data, tmp_path / "b", seed=5)
    assert "sun/val/sun_map" in m1 and "head/val/son_rmse" in m1
    assert m1 == m2  # bit-identical metrics
    assert all(torch.equal(w1[k], w2[k]) for k in w1)  # bit-identical weights
    w3, m3 = _chain(data, tmp_path / "c", seed=6)
    assert any(not torch.equal(w1[k], w3[k]) for k in w1 if w1[k].is_floating_point())
    assert m3 != m1


def test_rare_attribute_options_change_training(tmp_path: Path) -> None:
    """The balanced positive weight and balanced sampling reach the training loop (same seed, other
    weights), and a run with them is reproducible too."""
    data = write_folder(tmp_path / "data", n_sun=40, n_son=8)
    common = {"root": str(data), "batch_size": 8}

    def run(name: str, **extra: Any) -> dict[str, torch.Tensor]:
        data_opts = {**common, **extra.get("data", {})}
        res = fit(tiny_config(tmp_path / name, "sun", data=data_opts, trainer={"max_steps": 3},
                              optim={"lr_decay_every": 0, **extra.get("optim", {})}))
        assert res.model is not None
        return res.model.state_dict()

    plain = run("plain")
    balanced = {"optim": {"presence_pos_weight": "balanced"}, "data": {"balanced_sampling": 0.4}}
    a, b = run("bal_a", **balanced), run("bal_b", **balanced)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], plain[k]) for k in a if a[k].is_floating_point())


class _Noisy(torch.utils.data.Dataset):
    """Sample i: a SoN row whose score is i plus a random draw (as an augmentation would make)."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> Any:
        from siam.data.samples import Sample

        return Sample(image=torch.zeros(3, 2, 2), id=str(i), source="son", score=float(i) + float(torch.rand(())))


def _epoch(seed: int | None, workers: int, global_seed: int) -> list[float]:
    from siam.data.datamodule import SiamDataModule

    torch.manual_seed(global_seed)  # what else the process drew before does not matter...
    dm = SiamDataModule(train={"son": _Noisy()}, batch_sizes={"son": 4}, num_workers=workers, seed=seed)
    return [float(s) for b in dm.train_dataloader().iterables["son"] for s in b.score]


def test_data_order_and_worker_draws_follow_the_data_seed_only() -> None:
    """The order (and, in worker processes, the random draws) depend on the datamodule's seed, not
    on the global RNG; in the main process (0 workers) draws use the global RNG, which the run seeds."""
    order = [int(v) for v in _epoch(3, 0, global_seed=0)]
    assert order == [int(v) for v in _epoch(3, 0, global_seed=1)]
    assert order != [int(v) for v in _epoch(4, 0, global_seed=0)]
    a = _epoch(3, 1, global_seed=0)
    assert a == _epoch(3, 1, global_seed=1)  # order and in-worker draws
    assert [int(v) for v in a] == order and a != _epoch(4, 1, global_seed=0)
    # Without a seed of its own the loaders follow the run's seed (torch.initial_seed()).
    assert _epoch(None, 0, global_seed=9) == _epoch(None, 0, global_seed=9) != _epoch(None, 0, global_seed=8)


def test_deterministic_kernels_are_on_by_default(tmp_path: Path) -> None:
    from siam.training.config import config_from_dict

    assert config_from_dict({}).trainer.deterministic == "warn"
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        torch.use_deterministic_algorithms(False)
        data = write_folder(tmp_path / "data", n_sun=8, n_son=8)
        fit(tiny_config(tmp_path / "run", "sun", data={"root": str(data), "batch_size": 4},
                        trainer={"max_steps": 1}))
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def test_epoch_shuffle_depends_on_seed_and_epoch_only() -> None:
    """A resumed run (a fresh sampler told its epoch) draws the order of the uninterrupted run."""
    from siam.data.datamodule import EpochShuffle

    data = list(range(20))
    running = EpochShuffle(data, seed=2)
    orders = [list(running) for _ in range(4)]  # four passes
    assert len({tuple(o) for o in orders}) == 4 and sorted(orders[0]) == data
    resumed = EpochShuffle(data, seed=2)
    resumed.set_epoch(3)
    assert list(resumed) == orders[3]
    other = EpochShuffle(data, seed=3)
    assert list(other) != orders[0]
