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


def test_packed_unimp_run_reports_its_budget_and_repeats_exactly(tmp_path):
    """The benchmark's UniMP run (packed next-item recipe) says what it cost and, with one seed, gives the same
    figures twice (the reproducibility target)."""
    from processing_unimp.training.benchmark import run_unimp

    runs = [run_unimp("fashion-shop", "unimp", tmp_path / str(k), "tiny", epochs=1, eval_users=24, test_users=24,
                      tasks_metrics=False, max_steps=4, seed=3)[0] for k in range(2)]
    first, second = runs
    assert first["train_steps"] == 4 and first["seed"] == 3 and first["torch_threads"] >= 1
    assert first["validation_NDCG@10"] is not None and 0 < first["epochs"] < 1
    assert {k: v for k, v in first.items() if k != "train_seconds"} == {k: v for k, v in second.items()
                                                                       if k != "train_seconds"}
