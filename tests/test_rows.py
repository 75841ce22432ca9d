"""The row-name contract: builders and parsers agree, and the stored strings never change."""

from ribench.core import rows


def test_stored_names_are_fixed():
    # these strings are in every results store ever written; a change would orphan old runs
    assert (rows.SUMMARY, rows.ANALYSIS, rows.PRETRAINED, rows.MERGED) == ("*", "analysis", "pretrained", "merged")
    assert rows.curve(0.5) == "curve/alpha=0.5"
    assert rows.attack("pgd_linf", 0.1) == "attack/pgd_linf/eps=0.1"
    assert rows.attack("pgd_linf", 0.1, "uci") == "attack/pgd_linf/eps=0.1/uci"
    assert rows.transfer("fgsm", 0.25) == "transfer/fgsm/eps=0.25"
    assert rows.diag("linear_cka", "task") == "diag/linear_cka/task"


def test_builders_and_parsers_round_trip():
    for a in (0.0, 0.1, 0.35, 1.0):
        assert rows.parse_curve(rows.curve(a)) == a
    assert rows.parse_attack(rows.attack("apgd_ce", 8 / 255, "mnistm")) == rows.AttackRow(
        "apgd_ce", float(f"{8 / 255:g}"), False, "mnistm")
    assert rows.parse_attack(rows.transfer("pgd_l2", 0.5)) == rows.AttackRow("pgd_l2", 0.5, True, None)


def test_other_names_do_not_parse():
    for s in ("*", "uci", "mnist-c/fog/3", "curve/alpha=x", "attack/pgd/eps=big", "diag/summary"):
        assert rows.parse_attack(s) is None
    assert rows.parse_curve("uci") is None and rows.parse_curve("curve/alpha=x") is None
    assert not rows.is_special("mnist-c/fog/3") and rows.is_special("*") and rows.is_special("diag/layers")
