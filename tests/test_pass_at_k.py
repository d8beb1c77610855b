"""The unbiased pass@k estimator against values computed by hand."""

import pytest


def test_pass_at_k_matches_hand_computed_values():
    from math import comb

    from santacoder.evaluation.pass_at_k import mean_pass_at_k, pass_at_k

    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the fraction correct
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - comb(3, 2) / comb(5, 2))  # 1 - 3/10 = 0.7
    assert pass_at_k(200, 13, 10) == pytest.approx(1 - comb(187, 10) / comb(200, 10))
    assert pass_at_k(200, 195, 10) == 1.0  # fewer than k wrong: some correct one is always drawn
    assert mean_pass_at_k([4, 4], [1, 3], 1) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="pass@10 needs at least 10 samples"):
        pass_at_k(5, 1, 10)
