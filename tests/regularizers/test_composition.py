"""The composition matrix, derived from capabilities (DESIGN.md principle 1): every pair whose learner
offers what the regularizer requires trains, and the regularizer's own term shows in the history and
changes the trained prompt; every other pair is refused naming each missing capability."""

from __future__ import annotations

import method_matrix
import pytest


@pytest.mark.parametrize("learner_name,reg_name", method_matrix.all_pairs())
def test_pair_trains_with_its_own_term_or_is_refused_naming_the_missing_capability(
        tiny_backbone, classnames, training_batches, learner_name, reg_name):
    method_matrix.check_composition(learner_name, reg_name, tiny_backbone, classnames, training_batches)
