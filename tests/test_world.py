"""The shapes world: prompts, the skewed distribution, reproducible data."""

import numpy as np
import pytest

from find_rl.worlds.shapes.world import all_prompts, combination_probs, is_common, make_dataset, parse_prompt, rare_prompts


def test_prompts_parse_and_round_trip():
    assert len(all_prompts()) == 9 and len(rare_prompts()) == 6
    for p in all_prompts():
        assert parse_prompt(p).text == p
    assert parse_prompt("A Green circle.").text == "a green circle"
    assert is_common("a red circle") and not is_common("a green circle")


@pytest.mark.parametrize("bad, msg", [("a purple circle", "unknown word 'purple'"), ("a red blue square", "more than one"),
                                      ("a dog", "unknown word 'dog'")])
def test_bad_prompts_give_one_line_errors(bad, msg):
    with pytest.raises(ValueError, match=msg) as e:
        parse_prompt(bad)
    assert "\n" not in str(e.value)


def test_skewed_distribution_and_determinism():
    p = combination_probs(0.02)
    assert p.sum() == pytest.approx(1.0) and p.max() == pytest.approx((1 - 6 * 0.02) / 3)
    a, ca = make_dataset(3000, seed=1)
    b, cb = make_dataset(3000, seed=1)
    assert np.array_equal(a, b) and np.array_equal(ca, cb)
    freq = np.bincount(ca, minlength=9) / len(ca)
    assert freq[[0, 4, 8]].min() > 0.25 and freq[[1, 2, 3, 5, 6, 7]].max() < 0.035
    assert a.min() == -1.0 and a.max() == 1.0
    with pytest.raises(ValueError, match="rare_p"):
        combination_probs(0.2)
