"""Config values are checked against the annotations they are meant for; learner and regularizer options too."""

from __future__ import annotations

import pytest

import vlprompt.regularizers  # noqa: F401  (registration)
from vlprompt.errors import ConfigError
from vlprompt.learners.registry import build_learner
from vlprompt.regularizers.registry import build_regularizer
from vlprompt.typecheck import describe, fits


@pytest.mark.parametrize("value, hint, ok", [
    (3, int, True), (True, int, False), (3.0, int, False), (3, float, True), (float("nan"), float, False),
    (None, int | None, True), ("a", list[str] | str | None, True), (["a", 1], list[str], False),
    ([], list[str], True), ({}, dict, True), ([], dict, False), (1, bool, False),
])
def test_fits(value, hint, ok):
    assert fits(value, hint) is ok


def test_describe_reads_as_a_sentence():
    assert describe(list[str] | str | None) == "a list of strings or a string or null"


@pytest.mark.parametrize("name, options, message", [
    ("coop", {"ctx_init": 1}, "coop.ctx_init=1 must be a string or null"),
    ("cocoop", {"n_ctx": "four"}, "cocoop.n_ctx='four' must be a whole number or null"),
    ("maple", {"prompt_depth": 2.5}, "maple.prompt_depth=2.5 must be a whole number"),
    ("zeroshot", {"templates": [1]}, "zeroshot.templates=[1] must be a list of strings or a string or null"),
])
def test_learner_options_of_the_wrong_type_are_refused(tiny_backbone, classnames, name, options, message):
    with pytest.raises(ConfigError) as err:
        build_learner(name, tiny_backbone, classnames, **options)
    assert str(err.value) == message


@pytest.mark.parametrize("spec, message", [
    ({"name": "kgcoop", "weight": "abc"}, "kgcoop.weight='abc' must be a finite number"),
    ({"name": "nemesis", "beta": [1], "omega": 1.0}, "nemesis.beta=[1] must be a finite number or null"),
    ({"name": "qprompt", "bits": 2.5}, "qprompt.bits=2.5 must be a whole number or null"),
    ({"name": "npt", "lambda_lmc": 1, "lambda_mmi": 1, "align": "no"}, "npt.align='no' must be true or false"),
])
def test_regularizer_options_of_the_wrong_type_are_refused(spec, message):
    with pytest.raises(ConfigError) as err:
        build_regularizer(spec)
    assert str(err.value) == message
