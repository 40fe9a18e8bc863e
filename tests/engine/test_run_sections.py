"""Every run section (backbone, data, train, and a paper preset's protocol) is a typed Options class: each
option has a default and a doc, `vlprompt describe SECTION` lists them, and a bad value is refused when the
config is parsed, naming the option and its valid values; run ids stay those of earlier versions."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from vlprompt.api import RUN_SECTIONS
from vlprompt.engine.config import SECTIONS, TrainConfig, load_preset, resolve_config
from vlprompt.errors import ConfigError
from vlprompt.protocols.common import as_protocol_preset, method_config
from vlprompt.protocols.reproduce import plan_reproduction, reproduce_spec


def test_every_section_documents_every_option():
    assert set(RUN_SECTIONS) == {"backbone", "data", "train", "protocol"}
    for name, cls in RUN_SECTIONS.items():
        rows = cls.describe()
        assert [r[0] for r in rows] == [f.name for f in dataclasses.fields(cls)], name
        undocumented = [option for option, _, _, doc in rows if not doc.strip()]
        assert undocumented == [], f"{name}: {undocumented}"


@pytest.mark.parametrize("section", ["train", "data", "backbone", "protocol"])
def test_describe_lists_a_section_from_the_command_line(section):
    done = subprocess.run([sys.executable, "-m", "vlprompt", "describe", section], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    cls = RUN_SECTIONS[section]
    for option, type_, default, _ in cls.describe():
        assert f"  {option}" in done.stdout and f"{type_}  default {default}" in done.stdout, option


# one bad value per section, with what the message must name: the option, the value and the valid values
BAD_VALUES = {
    "backbone.precision=fp8": r"backbone\.precision='fp8' is not valid; choose one of: 'fp32', 'fp16', 'bf16'",
    "backbone.name=[1]": r"backbone\.name=\[1\] must be a string",
    "data.subsample=half": r"data\.subsample='half' is not valid; choose one of: 'all', 'base', 'new'",
    "data.eval_subsets=[all, most]": r"data\.eval_subsets='most' is not valid; choose one of: 'all', 'base', 'new'",
    "data.shots=0": r"data\.shots=0 must be at least 1 \(or null for the full split\)",
    "data.workers=-1": r"data\.workers=-1 must be a whole number >= 0",
    "data.imbalance_ratio=high": r"data\.imbalance_ratio='high' must be a finite number or null",
    "data.imbalance_ratio=2": r"data\.imbalance_ratio=2 must be in \(0, 1\] \(1: balanced\), or null",
    "train.optimizer=lbfgs": r"train\.optimizer='lbfgs' is not valid; choose one of: 'sgd', 'adamw', 'adam'",
    "train.model_selection=best": r"train\.model_selection='best' is not valid; choose one of: 'last', 'best_val'",
    "train.precision=fp8": r"train\.precision='fp8' is not valid; choose one of: 'fp32', 'bf16', 'fp16'",
    "train.device=gpu": r"train\.device='gpu' is not valid; choose one of: auto, cpu, cuda, cuda:N or mps",
    "train.text_chunk=some": r"train\.text_chunk='some' is not valid; give a number of classes, 0 \(never chunk\)",
    "train.epochs=0": r"train\.epochs=0 must be at least 1",
    "train.weight_decay=-1": r"train\.weight_decay=-1 must not be negative",
    "train.lr=abc": r"train\.lr='abc' must be a finite number",
}


@pytest.mark.parametrize("override", list(BAD_VALUES))
def test_a_bad_value_is_refused_when_the_config_is_parsed(override):
    with pytest.raises(ConfigError, match=BAD_VALUES[override]):
        resolve_config("world-demo", [override])


def test_a_section_built_in_python_is_checked_too():
    with pytest.raises(ConfigError, match=r"train\.batch_size=0 must be at least 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match=r"train\.epochs='3' must be a whole number"):
        TrainConfig(epochs="3")
    with pytest.raises(ConfigError, match=r"unknown option data\.shot; valid options of data: dataset, "):
        resolve_config(None, ["data.shot=4"])
    assert {name: cls.owner for name, cls in SECTIONS.items()} == {"backbone": "backbone", "data": "data",
                                                                   "train": "train"}


PROTOCOL = {"protocol": "base_to_new", "datasets": ["dtd"], "seeds": [1]}


@pytest.mark.parametrize("section, message", [
    ({**PROTOCOL, "protocol": "b2n"}, r"preset x: reproduce\.protocol='b2n' is not valid; choose one of: "
                                      r"'base_to_new', 'cross_dataset'"),
    ({**PROTOCOL, "seeds": ["one"]}, r"reproduce\.seeds=\['one'\] must be a list of whole numbers"),
    ({**PROTOCOL, "datasets": []}, r"reproduce\.datasets must be a non-empty list"),
    ({**PROTOCOL, "protocol": "few_shot"}, r"reproduce\.shots is for the few_shot protocol, which needs it"),
    ({**PROTOCOL, "ratios": [0.5]}, r"reproduce\.ratios is for the imbalanced protocol"),
    ({**PROTOCOL, "targets": ["imagenetv2"]}, r"reproduce\.targets is for the cross_dataset and domain_generalization protocols"),
    ({**PROTOCOL, "per_dataset": {"dtd": "train.epochs=5"}}, r"reproduce\.per_dataset\.dtd must be a list"),
    ({**PROTOCOL, "seed": [1]}, r"reproduce has no option seed; valid options of reproduce: protocol, datasets"),
])
def test_a_bad_protocol_section_is_refused_naming_the_key(section, message):
    with pytest.raises(ConfigError, match=message):
        reproduce_spec("x", {"reproduce": section})


def test_imbalance_ratios_of_a_protocol_section_are_numbers_as_written_or_widened():
    spec = reproduce_spec("x", {"reproduce": {**PROTOCOL, "protocol": "imbalanced", "ratios": [1, 0.25]}})
    assert spec.ratios == [1.0, 0.25] and all(isinstance(r, float) for r in spec.ratios)


def test_run_ids_are_those_computed_before_the_sections_became_options(tmp_path):
    """Users' finished runs are found by these ids (computed with vlprompt before this change), so a
    resumed sweep skips them; an int written for a float option stays an int in the hash."""
    assert resolve_config(None).run_id() == "59cf4b4a9574"
    assert resolve_config("world-demo", ["learner.name=coop", "train.epochs=3", "train.weight_decay=0", "data.shots=4",
                                         "regularizers=[{name: kgcoop, weight: 2}]"]).run_id() == "a10b19af417c"
    nemesis = method_config("coop+nemesis", as_protocol_preset(load_preset("coop-nemesis-pan-fewshot-rn50")),
                            ["train.lr=1"], data={"dataset": "world:objects", "shots": 2}, train={"seed": 3},
                            output_dir="x")
    assert (nemesis.run_id(), nemesis.train.epochs) == ("0524d7e89000", 100)  # epochs_by_shots[2]
    promptsrc = method_config("ivlp+promptsrc", as_protocol_preset(load_preset("promptsrc-b2n-vitb16")), [],
                              data={"dataset": "world:objects", "shots": 16}, train={"seed": 1}, output_dir="x")
    assert (promptsrc.run_id(), promptsrc.train.epochs, promptsrc.train.lr) == ("f317c7d7d761", 20, 0.0025)
    npt = plan_reproduction("npt-imbalanced-vitb16", "/tmp/r", tmp_path, seeds=[1], datasets=["dtd"])  # plans, writes nothing
    assert [(p.keys["ratio"], p.config.run_id()) for p in npt.plans] == [  # the preset writes ratio 1 as an int
        (1.0, "3b6d8eeaf0cc"), (0.25, "cc01cae7c014"), (0.0625, "044678bae653")]
