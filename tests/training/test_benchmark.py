"""The benchmark's reference rows and tables."""

from processing_unimp.training.benchmark import markdown, reference_rows


def test_fashion_shop_ships_labelled_reference_rows_and_movielens_none():
    rows = reference_rows("fashion-shop")
    oracle = next(row for name, row in rows.items() if "Oracle" in name)
    assert all(name.startswith("reference: ") for name in rows)
    assert oracle["NDCG@10"] > 3 * rows["reference: Text-profile heuristic"]["NDCG@10"]
    assert reference_rows("movielens-small") == {}
    table = markdown({"datasets": {"fashion-shop": {"protocol": "p", "models": rows}}})
    assert "| reference: Oracle" in table and "0.2627" in table
