"""The one config base: every config class round-trips through JSON, refuses unknown keys by name and has presets."""

import pytest

from vfusion3d_core.config import ConfigBase
from vfusion3d_core.lrm.config import ConfigError, LRMConfig
from vfusion3d_core.lrm.train.config import LRMTrainConfig
from vfusion3d_core.video.config import VideoModelConfig

CONFIGS = [(LRMConfig, ConfigError), (LRMTrainConfig, ValueError), (VideoModelConfig, ValueError)]


@pytest.mark.parametrize(("cls", "error"), CONFIGS)
def test_round_trip_unknown_keys_and_presets(cls: type[ConfigBase], error: type[Exception], tmp_path) -> None:
    assert issubclass(cls, ConfigBase)
    for name in ("tiny", "small", "paper"):
        config = cls.preset(name)
        config.save(tmp_path / f"{name}.json")
        assert cls.load(tmp_path / f"{name}.json") == config
        assert cls.from_dict(config.to_dict()) == config
    assert cls.preset("tiny") != cls.preset("paper")
    with pytest.raises(error, match=r"unknown .*'no_such_field'"):
        cls.from_dict({**cls.preset("tiny").to_dict(), "no_such_field": 1})
    with pytest.raises(ValueError, match="unknown preset|unknown LRM preset"):
        cls.preset("huge")
