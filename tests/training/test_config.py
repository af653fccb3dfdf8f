from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from siam.errors import ConfigError
from siam.training.config import TrainConfig, config_from_dict, load_config, parse_override

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_authors() -> None:
    cfg = config_from_dict({})
    assert cfg.optim.lr == 1e-3 and cfg.optim.son_weight == 0.1 and cfg.optim.lr_decay_every > 0
    assert cfg.preprocessing.resize == 500 and cfg.preprocessing.crop == 450


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"optimm": {}}, "unknown config key(s) ['optimm']"),
        ({"optim": {"learning_rate": 1}}, "['optim.learning_rate']"),
        ({"trainer": {"precision": "fp8"}}, "trainer.precision: got 'fp8'"),
        ({"stage": "finetune"}, "stage: got 'finetune'"),
        ({"data": {"batch_size": "big"}}, "data.batch_size: got 'big'"),
        ({"data": {"batch_size": 0}}, "data.batch_size: got 0"),
        ({"optim": {"lr": -1.0}}, "optim.lr: got -1.0"),
        ({"model": {"backbone": "vgg"}}, "model.backbone: got 'vgg'"),
        ({"preprocessing": {"resize": 100, "crop": 200}}, "crop <= resize"),
        ({"stages": {"warmup": {}}}, "unknown stage(s) ['warmup']"),
        ({"trainer": {"channels_last": "yes"}}, "trainer.channels_last"),
        ({"optim": {"lr_schedule": "linear"}}, "optim.lr_schedule: got 'linear'; allowed: 'step' | 'cosine'"),
        ({"optim": {"template_smoothness": -0.1}}, "optim.template_smoothness: got -0.1"),
    ],
)
def test_rejects_bad_keys_and_values(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert fragment in str(err.value)


def test_allowed_keys_listed_in_error() -> None:
    with pytest.raises(ConfigError, match=r"allowed in optim: \['lr'"):
        config_from_dict({"optim": {"lr_rate": 1}})


def test_precedence_file_stage_overrides(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump({
        "trainer": {"max_epochs": 5},
        "optim": {"lr": 0.01},
        "stages": {"son-head": {"trainer": {"max_epochs": 2}, "optim": {"lr": 0.1}}},
    }))
    assert load_config(p, stage="sun").trainer.max_epochs == 5
    cfg = load_config(p, stage="son-head")
    assert (cfg.trainer.max_epochs, cfg.optim.lr, cfg.stage) == (2, 0.1, "son-head")
    cfg = load_config(p, stage="son-head", overrides=["optim.lr=0.5", {"trainer": {"max_epochs": 9}}])
    assert (cfg.trainer.max_epochs, cfg.optim.lr) == (9, 0.5)


def test_roundtrip_and_override_parsing() -> None:
    cfg = config_from_dict({"attributes": ["a", "b"], "model": {"pretrained": "imagenet"}})
    assert cfg.attributes == ("a", "b")
    again = config_from_dict(cfg.to_dict())
    assert again == cfg
    assert parse_override("trainer.devices=2") == {"trainer": {"devices": 2}}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("trainer.devices")
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent.yaml")


@pytest.mark.parametrize("name", ["paper.yaml", "quickstart.yaml"])
def test_shipped_recipes_load_for_every_stage(name: str) -> None:
    for stage in ("sun", "son-head", "joint", "baseline"):
        cfg = load_config(ROOT / "configs" / name, stage=stage)
        assert isinstance(cfg, TrainConfig) and cfg.stage == stage


def test_paper_recipe_is_full_scale() -> None:
    cfg = load_config(ROOT / "configs" / "paper.yaml", stage="joint")
    assert cfg.model.backbone == "resnet50" and cfg.model.pretrained == "imagenet"
    assert (cfg.preprocessing.resize, cfg.preprocessing.crop) == (500, 450)
    assert cfg.optim.son_weight == 0.1
