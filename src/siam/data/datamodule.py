"""The LightningDataModule: one SUN batch and one ScenicOrNot batch per training step.

Training uses a :class:`lightning.pytorch.utilities.CombinedLoader` in ``max_size_cycle`` mode
over ``{"sun": loader, "son": loader}``: every step yields ``{"sun": Batch, "son": Batch}``, the
shorter dataset is cycled, and an epoch is one pass over the longer one. A stage that uses one
dataset gets a dict with that key only. Under DDP, Lightning gives each loader of the combined
loader its own ``DistributedSampler``, so ranks see disjoint samples.

Datasets are any ``torch.utils.data.Dataset`` of :class:`~siam.data.samples.Sample`;
:class:`CachedImages` decodes a small data set once into memory (uint8) and applies the random
part of the training transform per access.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset

from siam.data.csv_folder import SPLITS_FILE, csv_attribute_names, csv_target_names, data_layout
from siam.data.samples import Sample, collate
from siam.errors import DatasetError

__all__ = ["SiamDataModule", "CachedImages", "EpochShuffle", "STAGE_DATASETS", "datamodule_from_config", "data_roots",
           "csv_root", "CSV_ROWS", "SCORE_TARGET"]

#: The name of the one target of the 'siam synth' / ScenicOrNot layout (the scenicness rating);
#: a CSV folder names its targets in targets.csv.
SCORE_TARGET = "score"

# Which rows of a CSV folder play each dataset's role (siam.data.csv_folder.CsvDataset ``rows``).
CSV_ROWS: dict[str, str] = {"sun": "attributes", "son": "targets"}

_SEED_STRIDE = 1_000_003  # spreads (seed, dataset) pairs over distinct generator seeds

# Which datasets each training stage draws batches from.
STAGE_DATASETS: dict[str, tuple[str, ...]] = {
    "sun": ("sun",),
    "son-head": ("son",),
    "joint": ("sun", "son"),
    "baseline": ("son",),
}


class CachedImages(Dataset):
    """Materialise ``dataset`` once (images as uint8), then apply ``augment`` on each access.

    ``dataset`` must yield samples whose ``image`` is a uint8 (3, H, W) tensor (e.g. built with a
    deterministic decode transform); ``augment`` maps it to the model input (random flip,
    normalisation, ...). Memory: 3 H W bytes per image (49 KB at 128 px).
    """

    def __init__(self, dataset: Dataset, augment: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.augment = augment
        self.samples: list[Sample] = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
        bad = [s.id for s in self.samples if s.image.dtype != torch.uint8]
        if bad:
            raise ValueError(
                f"CachedImages needs uint8 images from the wrapped dataset, got {self.samples[0].image.dtype} "
                f"for {bad[:3]}"
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        s = self.samples[index]
        return Sample(
            image=self.augment(s.image), id=s.id, source=s.source, attributes=s.attributes,
            scores=s.scores, variances=s.variances,
        )


class EpochShuffle(RandomSampler):
    """A shuffle whose permutation is a function of (seed, epoch) only: epoch e of a resumed run
    sees the same order as epoch e of an uninterrupted one. Lightning sets the epoch before each
    pass (and, being a RandomSampler, replaces it with a DistributedSampler under DDP)."""

    def __init__(self, data_source: Any, *, seed: int) -> None:
        super().__init__(data_source)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Any:
        g = torch.Generator().manual_seed((self.seed * _SEED_STRIDE + self.epoch) % 2**63)
        self.epoch += 1  # a loop that does not call set_epoch still draws a new order each pass
        return iter(torch.randperm(len(self.data_source), generator=g).tolist())


class SiamDataModule(L.LightningDataModule):
    """Loaders over named datasets (``"sun"``, ``"son"``) for training and validation.

    ``batch_sizes`` maps a dataset name to its per-step batch size. Training loaders shuffle and
    drop the last incomplete batch (BatchNorm needs > 1 row); validation loaders are sequential.

    ``targets``: the names of the T targets the batches' ``scores`` columns hold (data order).
    ``seed``: the data order's seed (each training loader shuffles with an :class:`EpochShuffle`
    and seeds its workers from it and the dataset's name; None: ``torch.initial_seed()`` when the
    loaders are made, i.e. the run's seed after ``seed_everything``). ``balanced_sampling``: a
    target rate for attribute-balanced sampling of the ``"sun"`` set
    (:class:`siam.data.balance.BalancedSampler`; None: shuffling).
    """

    def __init__(
        self,
        *,
        train: Mapping[str, Dataset],
        val: Mapping[str, Dataset] | None = None,
        batch_sizes: Mapping[str, int],
        val_batch_size: int = 64,
        num_workers: int = 0,
        mode: str = "max_size_cycle",
        seed: int | None = None,
        balanced_sampling: float | None = None,
        targets: tuple[str, ...] = (SCORE_TARGET,),
    ) -> None:
        super().__init__()
        self.targets = tuple(targets)
        if not train:
            raise ValueError("SiamDataModule needs at least one training dataset")
        missing = sorted(set(train) - set(batch_sizes))
        if missing:
            raise ValueError(f"no batch size for dataset(s) {missing}; got batch_sizes for {sorted(batch_sizes)}")
        for name, ds in train.items():
            if len(ds) == 0:  # type: ignore[arg-type]
                raise ValueError(f"training dataset {name!r} is empty")
        self.train_sets = dict(train)
        self.val_sets = {k: v for k, v in (val or {}).items() if len(v)}  # type: ignore[arg-type]
        self.batch_sizes = dict(batch_sizes)
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.mode = mode
        self.seed = seed
        if balanced_sampling is not None and "sun" not in self.train_sets:
            balanced_sampling = None  # nothing to balance in a stage without SUN images
        self.balanced_sampling = balanced_sampling
        self.sampling_rates: dict[str, Any] | None = None  # filled by the balanced sampler

    def _loader(self, ds: Dataset, batch_size: int, *, train: bool, name: str = "") -> DataLoader:
        n = len(ds)  # type: ignore[arg-type]
        generator = sampler = None
        if train:
            seed = self.seed if self.seed is not None else torch.initial_seed()
            seed = (int(seed) * _SEED_STRIDE + sum(name.encode())) % 2**63  # one stream per dataset
            generator = torch.Generator().manual_seed(seed)  # seeds the workers
            if name == "sun" and self.balanced_sampling is not None:
                sampler = self._balanced_sampler(ds, seed)
            else:
                sampler = EpochShuffle(ds, seed=seed)
        return DataLoader(
            ds,
            batch_size=min(batch_size, n),
            sampler=sampler,
            drop_last=train and n > batch_size,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=generator,
        )

    def _balanced_sampler(self, ds: Dataset, seed: int) -> Any:
        from siam.data.balance import PRESENT, BalancedSampler, balanced_weights, dataset_labels, expected_rates
        from siam.errors import ConfigError

        world = getattr(self.trainer, "world_size", 1) if self.trainer is not None else 1
        if world > 1:
            raise ConfigError(
                f"data.balanced_sampling={self.balanced_sampling} supports single-process training only; this "
                f"run has {world} processes (DDP). Set data.balanced_sampling=null or train on one device."
            )
        labels = dataset_labels(ds)
        weights = balanced_weights(labels, self.balanced_sampling)  # type: ignore[arg-type]
        present = (labels >= PRESENT).float()
        before, after = present.mean(0), expected_rates(present, weights)
        self.sampling_rates = {"before": before.tolist(), "after": after.tolist()}
        lifted = (after > before + 1e-9).nonzero().flatten().tolist()
        if lifted:
            k = min(lifted, key=lambda i: float(before[i]))
            print(f"siam train: balanced sampling lifts {len(lifted)} attribute(s) towards {self.balanced_sampling:g} "
                  f"of the draws (rarest: {float(before[k]):.1%} -> {float(after[k]):.1%})", flush=True)
        return BalancedSampler(weights, seed=seed)

    def train_dataloader(self) -> Any:
        from lightning.pytorch.utilities import CombinedLoader

        loaders = {k: self._loader(ds, self.batch_sizes[k], train=True, name=k) for k, ds in self.train_sets.items()}
        return CombinedLoader(loaders, mode=self.mode)

    def val_dataloader(self) -> Any:
        from lightning.pytorch.utilities import CombinedLoader

        if not self.val_sets:
            return []
        loaders = {k: self._loader(ds, self.val_batch_size, train=False) for k, ds in self.val_sets.items()}
        return CombinedLoader(loaders, mode="sequential")


# --- from a config ------------------------------------------------------------------------------


class _DecodeUint8:
    """PIL image -> (3, size, size) uint8 (antialiased resize): what :class:`CachedImages` keeps."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Any) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as tvf

        from siam.data.transforms import to_uint8_tensor

        x = to_uint8_tensor(image)  # (3, H, W)
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = tvf.resize(x, [self.size, self.size], antialias=True)
        return x.contiguous()


def data_roots(cfg: Any) -> tuple[Path, Path]:
    """(SUN folder, SoN folder) of a :class:`~siam.training.config.TrainConfig`'s ``data`` (the
    ``siam synth`` layout; a CSV folder raises: see :func:`csv_root`)."""
    d = cfg.data
    if d.root is None and (d.sun is None or d.son is None):
        raise DatasetError(
            "no data given: set data.root (a folder in the 'siam synth' layout or the CSV format, e.g. "
            "--data DIR) or both data.sun and data.son"
        )
    root = Path(d.root) if d.root is not None else None
    if root is not None and (d.sun is None or d.son is None) and data_layout(root) == "csv":
        raise DatasetError(f"data.root {str(root)!r} is a CSV folder, not the 'siam synth' layout")
    sun = Path(d.sun) if d.sun is not None else root / "sun"  # type: ignore[operator]
    son = Path(d.son) if d.son is not None else root / "son"  # type: ignore[operator]
    for name, p in (("SUN", sun), ("ScenicOrNot", son)):
        if not p.is_dir():
            raise DatasetError(f"{name} data folder {str(p)!r} does not exist (data.root={d.root!r})")
    return sun, son


def csv_root(cfg: Any) -> Path | None:
    """``data.root`` when it is a folder in the CSV format (:mod:`siam.data.csv_folder`), else None.

    Raises :class:`DatasetError` when ``data.root`` is neither layout, or a CSV folder given
    together with ``data.sun`` / ``data.son``.
    """
    d = cfg.data
    if d.root is None or (d.sun is not None and d.son is not None):
        return None
    root = Path(d.root)
    if data_layout(root) != "csv":
        return None
    if d.sun is not None or d.son is not None:
        raise DatasetError(f"data.root {str(root)!r} is a CSV folder; data.sun / data.son apply to the "
                           "'siam synth' layout only")
    return root


def _keep_uint8(image: torch.Tensor) -> torch.Tensor:
    """The identity: :class:`CachedImages` keeps uint8 images for :class:`MaskedImages` to augment."""
    return image


def uses_masks(cfg: Any) -> bool:
    """Whether ``cfg`` trains with mask supervision (``optim.mask_weight`` > 0, sun/joint stage)."""
    return cfg.optim.mask_weight > 0 and "sun" in STAGE_DATASETS[cfg.stage] and cfg.stage != "baseline"


def mask_grid(cfg: Any) -> int:
    """The model grid m the mask coverage is pooled to: ``model.grid`` or the backbone's default."""
    from siam.errors import ConfigError
    from siam.models.backbones import BACKBONES
    from siam.models.timm_backbones import is_timm_name

    if cfg.model.grid is not None:
        return int(cfg.model.grid)
    if is_timm_name(cfg.model.backbone):
        raise ConfigError(f"optim.mask_weight > 0 with backbone {cfg.model.backbone!r}: set model.grid "
                          "explicitly, the grid the masks are pooled to")
    return int(BACKBONES[cfg.model.backbone][0].default_grid)


def mask_folder(cfg: Any) -> Path:
    """``data.masks``, or the planted ``truth/masks/sun`` of ``data.root`` when present."""
    from siam.errors import ConfigError

    d = cfg.data
    if d.masks is not None:
        return Path(d.masks)
    for base in [Path(d.root)] if d.root is not None else []:
        if (base / "truth" / "masks" / "sun").is_dir():
            return base / "truth" / "masks" / "sun"
    raise ConfigError(f"optim.mask_weight={cfg.optim.mask_weight:g} needs masks: set data.masks to a folder with "
                      "mask_classes.csv and masks/<image stem>.png, or to a 'siam synth' world "
                      f"(data.root {d.root!r} has no truth/masks/sun)")


def _limit(ds: Dataset, n: int | None) -> Dataset:
    if n is None or n >= len(ds):  # type: ignore[arg-type]
        return ds
    return Subset(ds, range(n))


def _mask_source(cfg: Any, ds: Any, names: Any) -> dict[str, Any]:
    """The mask source of a SUN training set and the ids that keep their masks; raises when no
    training image has one."""
    from siam.data.masks import masks_fraction_ids, open_mask_source

    folder = mask_folder(cfg)
    source = open_mask_source(folder, names, dict(zip(ds.ids, ds.paths)))
    with_file = [i for i in ds.ids if source.has(i)]
    if not with_file:
        raise DatasetError(f"data.masks {str(folder)!r}: none of the {len(ds.ids)} SUN training images has a mask "
                           f"(first ids: {list(ds.ids[:3])})")
    keep = None if cfg.data.mask_fraction >= 1.0 else masks_fraction_ids(with_file, cfg.data.mask_fraction,
                                                                         cfg.data.split_seed)
    return {"source": source, "keep": keep, "folder": folder, "with_masks": len(with_file if keep is None else keep)}


def datamodule_from_config(cfg: Any) -> tuple[SiamDataModule, tuple[str, ...] | None, tuple[float, ...] | None]:
    """Build the stage's datasets from ``cfg`` (a TrainConfig).

    ``data.root`` may be a CSV folder (:mod:`siam.data.csv_folder`): its attributes.csv rows play
    the SUN role and its targets.csv rows the ScenicOrNot role; a split drawn for rows without a
    ``split`` column is written to (and reused from) ``OUT/splits.csv``.

    Returns (datamodule, attribute names of the SUN labels (None: a CSV folder without
    attributes.csv, baseline stage), the mean SoN training score of each target or None). The
    datamodule's ``targets`` name the targets: targets.csv's columns for a CSV folder (even in a
    stage that reads no target rows, so that stages chain), else ``("score",)``.
    Training sets are wrapped in :class:`~siam.data.robust.SkipBadImages` (bad images are logged
    to ``OUT/bad_images.jsonl`` and replaced, up to ``data.max_bad_fraction``). With mask
    supervision (:func:`uses_masks`) the SUN training set is decoded to uint8 and wrapped in
    :class:`~siam.data.masks.MaskedImages`, which augments image and masks with the same draw.
    """
    from siam.data.csv_folder import CsvDataset
    from siam.data.masks import MaskedImages
    from siam.data.robust import SkipBadImages
    from siam.data.scenic_or_not import ScenicOrNot
    from siam.data.sun_attributes import SunAttributes, read_sun_labels
    from siam.data.transforms import eval_transform, train_transform

    d = cfg.data
    pre = cfg.preprocessing.build(backbone=cfg.model.backbone)
    wanted = STAGE_DATASETS[cfg.stage]
    out = Path(cfg.out)
    log = out / "bad_images.jsonl"
    csv_dir = csv_root(cfg)
    targets: tuple[str, ...] = (SCORE_TARGET,)
    if csv_dir is not None:
        targets = csv_target_names(csv_dir) or targets
        names = csv_attribute_names(csv_dir, cfg.attributes)
        if names is None and cfg.stage != "baseline":
            raise DatasetError(f"{csv_dir}: attributes.csv not found; stage {cfg.stage!r} trains a SIAM "
                               "model, whose attributes it names (only the baseline stage needs targets.csv alone)")
    else:
        sun_root, son_root = data_roots(cfg)
        names = read_sun_labels(sun_root, attributes=cfg.attributes).names

    masked = uses_masks(cfg)

    def make(kind: str, split: str, train: bool) -> Dataset:
        with_masks = masked and kind == "sun" and train
        if d.cache or with_masks:
            transform: Callable[[Any], torch.Tensor] = _DecodeUint8(pre.resize)
        else:
            transform = train_transform(pre) if train else eval_transform(pre)
        if csv_dir is not None:
            ds: Dataset = CsvDataset(
                csv_dir, split, rows=CSV_ROWS[kind], transform=transform,  # type: ignore[arg-type]
                attributes=cfg.attributes, with_variance=cfg.model.predict_variance and kind == "son",
                seed=d.split_seed, splits_file=out / SPLITS_FILE,
                report_path=out / f"missing_images_{kind}_{split}.json",
            )
        elif kind == "sun":
            ds = SunAttributes(sun_root, split, transform=transform, attributes=cfg.attributes)
        else:
            ds = ScenicOrNot(son_root, split, transform=transform, with_variance=cfg.model.predict_variance)
        if with_masks:
            mask_state.update(_mask_source(cfg, ds, names))
        limit = d.limit_train if train else d.limit_val
        if kind == "son" and train:
            values = getattr(ds, "all_scores", None)
            scores["train"] = (values if values is not None else ds.scores[:, None])[:limit]  # type: ignore[attr-defined]
        ds = _limit(ds, limit)
        if train:
            ds = SkipBadImages(ds, log_path=log, max_bad_fraction=d.max_bad_fraction, name=f"{kind}:{split}")
        if d.cache:
            ds = CachedImages(ds, _keep_uint8 if with_masks else train_transform(pre) if train else eval_transform(pre))
        if with_masks:
            ds = MaskedImages(ds, train_transform(pre), mask_state["source"], mask_grid(cfg), keep=mask_state["keep"])
        return ds

    mask_state: dict[str, Any] = {}
    scores: dict[str, torch.Tensor] = {}
    train = {k: make(k, "train", True) for k in wanted}
    val = {k: make(k, "val", False) for k in wanted} if cfg.trainer.val_every_n_epochs > 0 else {}
    son_mean = _target_means(scores["train"], targets) if "train" in scores else None
    son_bs = d.son_batch_size or d.batch_size
    dm = SiamDataModule(
        train=train, val=val, batch_sizes={"sun": d.batch_size, "son": son_bs},
        val_batch_size=d.val_batch_size, num_workers=d.num_workers, seed=cfg.trainer.seed,
        balanced_sampling=d.balanced_sampling, targets=targets,
    )
    return dm, names, son_mean


def _target_means(values: torch.Tensor, targets: tuple[str, ...]) -> tuple[float, ...]:
    """Mean training value of each target over its rows with a value; values (N, T), NaN = none."""
    means = []
    for t, name in enumerate(targets):
        v = values[:, t]
        v = v[~torch.isnan(v)]
        if not v.numel():
            raise DatasetError(f"target {name!r} has no value in the training split ({values.shape[0]} rows); "
                               "give some training images a value of it, or drop its column")
        means.append(float(v.mean()))
    return tuple(means)
