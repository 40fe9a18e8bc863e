"""Configuration: presets + key=value overrides, validation with messages that name the option."""

from __future__ import annotations

import pytest

from vlprompt.engine.config import RunConfig, apply_overrides, expand_preset, list_presets, load_preset, resolve_config
from vlprompt.errors import ConfigError
from vlprompt.learners.registry import LEARNERS


def test_overrides_parse_yaml_values_into_nested_sections():
    d = apply_overrides({}, ["train.epochs=5", "train.lr=1e-3", "learner.options.ctx_init=a photo of a",
                             "data.eval_datasets=[world:shapes, world:colours]", "backbone.pretrained=null"])
    assert d["train"] == {"epochs": 5, "lr": 1e-3}
    assert d["learner"]["options"]["ctx_init"] == "a photo of a"
    assert d["data"]["eval_datasets"] == ["world:shapes", "world:colours"]
    assert d["backbone"]["pretrained"] is None


def test_unknown_options_name_the_option_and_the_valid_ones():
    with pytest.raises(ConfigError, match=r"train\.epoch\b.*epochs"):
        RunConfig.from_dict({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="unknown option config.trian"):
        RunConfig.from_dict({"trian": {}})
    with pytest.raises(ConfigError, match="data.subsample"):
        RunConfig.from_dict({"data": {"subsample": "half"}})
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(ConfigError, match="available presets"):
        load_preset("no-such-preset")


def test_run_id_depends_on_what_changes_results_only():
    a = RunConfig.from_dict({"train": {"epochs": 3}})
    b = RunConfig.from_dict({"train": {"epochs": 3}, "output_dir": "elsewhere", "cache_dir": "/tmp/x"})
    c = RunConfig.from_dict({"train": {"epochs": 4}})
    assert a.run_id() == b.run_id() != c.run_id()


def test_preset_method_defaults_and_epochs_by_shots():
    preset = {"learners": {"coop": {"n_ctx": 4}}, "regularizers_defaults": {"kgcoop": {"weight": 8.0}},
              "epochs_by_shots": {1: 50, 16: 200}, "data": {"shots": 1},
              "regularizers": [{"name": "kgcoop"}]}
    d = expand_preset(preset)
    assert d["learner"] == {"name": "coop", "options": {"n_ctx": 4}}
    assert d["regularizers"] == [{"name": "kgcoop", "weight": 8.0}]
    assert d["train"]["epochs"] == 50
    d = expand_preset(preset, ["data.shots=16", "learner.options.n_ctx=8"])
    assert d["train"]["epochs"] == 200 and d["learner"]["options"]["n_ctx"] == 8
    assert expand_preset(preset, ["train.epochs=7"])["train"]["epochs"] == 7


def test_schedules_per_method_part_with_regularizers_over_learners_and_overrides_over_both():
    preset = {"train": {"epochs": 200, "batch_size": 32, "lr": 0.002},
              "schedules": {"coop": {"epochs": 150}, "kgcoop": {"epochs": 100, "batch_size": 128},
                            "nemesis": {"lr": 0.01}, "nemesis-pan": {"lr": 0.02}},
              "regularizers_defaults": {"nemesis-pan": {"name": "nemesis", "beta": 0}}}

    def train(regularizers, overrides=()):
        return expand_preset({**preset, "regularizers": regularizers}, list(overrides))["train"]

    assert train([]) == {"epochs": 150, "batch_size": 32, "lr": 0.002}  # the learner's own schedule
    assert train([{"name": "kgcoop"}]) == {"epochs": 100, "batch_size": 128, "lr": 0.002}
    assert train([{"name": "nemesis-pan"}])["lr"] == 0.02  # the variant label over its regularizer's name
    assert train([{"name": "nemesis"}])["lr"] == 0.01
    assert train([{"name": "kgcoop"}], ["train.batch_size=8"]) == {"epochs": 100, "batch_size": 8, "lr": 0.002}
    with pytest.raises(ConfigError, match="schedules.kgcoop must be a mapping"):
        expand_preset({"schedules": {"kgcoop": 100}})
    world = resolve_config("world-methods", ["regularizers=[{name: kgcoop}]"])
    assert (world.train.epochs, world.train.batch_size) == (100, 128)  # KgCoOp's paper schedule (methods.md §6)


@pytest.mark.parametrize("name", list_presets())
def test_every_shipped_preset_resolves(name):
    config = resolve_config(name)
    explicit = (load_preset(name).get("learner") or {}).get("name")
    assert config.learner.name in LEARNERS and explicit in (None, config.learner.name)


def test_regularizer_variant_labels_and_default_method_list():
    preset = {"methods": ["coop", "coop+nemesis-pun"],
              "regularizers_defaults": {"nemesis-pun": {"name": "nemesis", "beta": 1, "omega": 1.0}},
              "regularizers": [{"name": "nemesis-pun", "omega": 10.0}]}
    d = expand_preset(preset)
    assert "methods" not in d
    assert d["regularizers"] == [{"name": "nemesis", "beta": 1, "omega": 10.0}]


@pytest.mark.parametrize("override, message", [
    ("train.epochs=abc", "train.epochs='abc' must be a whole number"),
    ("train.epochs=2.5", "train.epochs=2.5 must be a whole number"),
    ("train.epochs=true", "train.epochs=True must be a whole number"),
    ("train.lr=[1]", "train.lr=[1] must be a finite number"),
    ("train.lr=nan", "train.lr=nan must be a finite number"),
    ("data.shots=a", "data.shots='a' must be a whole number or null"),
    ("data.eval_subsets=base", "data.eval_subsets='base' must be a list of strings"),
    ("data.dataset=5", "data.dataset=5 must be a string"),
    ("output_dir=[1]", "output_dir=[1] must be a string"),
    ("learner.options=3", "learner.options must be a mapping"),
    ("learner=5", "learner must be a mapping"),
    ("regularizers=[5]", "regularizers must be a list of mappings"),
    ("learners.coop=3", "learners.coop must be a mapping"),
    ("train.momentum=-1", "train.momentum=-1 must not be negative"),
    ("train.warmup_lr=-0.1", "train.warmup_lr=-0.1 must not be negative"),
    ("data.shots=[]", "data.shots=[] must be a whole number or null"),
    ("train.lr=[1", "override 'train.lr=[1': the value is not valid YAML"),
    ("train.epochs=\x1f", r"override 'train.epochs=\x1f': the value is not valid YAML"),  # a control character
])
def test_wrongly_typed_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        resolve_config("world-demo", [override])
    assert str(err.value).startswith(message)


def test_well_typed_values_pass_ints_as_floats_and_null_where_allowed():
    config = resolve_config("world-demo", ["train.lr=1", "data.shots=null", "data.imbalance_ratio=0.5"])
    assert (config.train.lr, config.data.shots, config.data.imbalance_ratio) == (1, None, 0.5)
