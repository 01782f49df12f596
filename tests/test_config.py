import pytest

from distgan import presets
from distgan.config import ConfigError, RunConfig, env_seconds, parse_set
from distgan.presets import load


def test_every_preset_validates_and_round_trips():
    for name in presets.PRESETS:
        cfg = presets.get(name)
        assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("overrides, message", [
    ({"optim.lr_g": 0.0}, "optim.lr_g: 0.0 is invalid"),
    ({"optim.lr_d": -1e-4}, "optim.lr_d: -0.0001 is invalid"),
    ({"train.n_d": 0}, "train.n_d: 0 is invalid"),
    ({"model.resolution": 30}, "model.resolution: 30 is invalid"),
    ({"loss.kind": "lsgann"}, "loss.kind: 'lsgann' is invalid"),
    ({"optim.lr_gg": 1e-3}, "optim.lr_gg: unknown config key"),
    ({"train.n_d": "two"}, "train.n_d: 'two' is not a int"),
    ({"model.sn_d": 1}, "model.sn_d: 1 is not a bool"),
])
def test_bad_values_name_the_dotted_key(overrides, message):
    with pytest.raises(ConfigError) as e:
        presets.mnist_smoke().with_overrides(overrides)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_nested_key_in_a_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  widht: 3\n")
    with pytest.raises(ConfigError, match=r"^model.widht: unknown config key$"):
        load(config_file=str(f))


def test_set_values_are_typed_by_yaml():
    assert parse_set(["optim.lr_g=1e-4", "model.sn_g=true", "train.n_d=3"]) == {
        "optim.lr_g": 1e-4, "model.sn_g": True, "train.n_d": 3}
    cfg = load("mnist_smoke", overrides=["optim.lr_g=1e-4", "train.n_d=3", "optim.beta1=0"])
    assert (cfg.optim.lr_g, cfg.train.n_d, cfg.optim.beta1) == (1e-4, 3, 0.0)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="mnist_smoke"):
        presets.get("nope")


def test_mlp_refuses_image_data():
    with pytest.raises(ConfigError, match="model.arch"):
        presets.ring8().with_overrides({"data.builtin": "mnist-embedded"})


def test_shipped_example_configs_validate():
    from pathlib import Path

    examples = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))
    assert len(examples) >= 2
    for f in examples:
        cfg = load(config_file=str(f))
        assert cfg.eval.metrics[0] == "fd", f


def test_resume_changes_name_the_keys_that_fix_the_model_or_the_protocol():
    from distgan.config import resume_changes

    base = presets.mnist_smoke()
    changed = base.with_overrides({"model.z_dim": 64, "eval.num_samples": 1000, "optim.lr_g": 1e-3,
                                   "train.steps": 50, "eval.metrics": ["fd", "kd"]})
    assert resume_changes(base, changed) == ["model.z_dim", "eval.num_samples"]  # lr, steps, metrics may change


def test_non_finite_numbers_and_list_items_are_named():
    with pytest.raises(ConfigError, match=r"^optim.beta1: nan is not a finite number$"):
        presets.mnist_smoke().with_overrides({"optim.beta1": float("nan")})
    with pytest.raises(ConfigError, match=r"^eval.metrics\[1\]: 3 is not a str$"):
        presets.mnist_smoke().with_overrides({"eval.metrics": ["fd", 3]})


@pytest.mark.parametrize("raw", ["abc", "0", "-5", "nan", "10s"])
def test_a_bad_time_limit_in_the_environment_is_one_line_naming_it(monkeypatch, raw):
    monkeypatch.setenv("DISTGAN_SCALE_TIMEOUT_S", raw)
    with pytest.raises(ConfigError, match=rf"^DISTGAN_SCALE_TIMEOUT_S='{raw}': expected a number of seconds above 0$"):
        env_seconds("DISTGAN_SCALE_TIMEOUT_S", 900.0)


def test_a_time_limit_from_the_environment_or_its_default(monkeypatch):
    monkeypatch.delenv("DISTGAN_SCALE_TIMEOUT_S", raising=False)
    assert env_seconds("DISTGAN_SCALE_TIMEOUT_S", 900.0) == 900.0
    monkeypatch.setenv("DISTGAN_SCALE_TIMEOUT_S", " 30 ")
    assert env_seconds("DISTGAN_SCALE_TIMEOUT_S", 900.0) == 30.0
