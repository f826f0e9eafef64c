"""The benchmark's reference rows and tables."""

import os
from pathlib import Path

import pytest

from processing_unimp.benchmark.report import markdown
from processing_unimp.benchmark.runs import reference_rows


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
    from processing_unimp.benchmark.runs import run_unimp

    runs = [run_unimp("fashion-shop", "unimp", tmp_path / str(k), "tiny", epochs=1, eval_users=24, test_users=24,
                      max_steps=4, seed=3)[0] for k in range(2)]
    first, second = runs
    assert first["train_steps"] == 4 and first["seed"] == 3 and first["torch_threads"] >= 1
    assert first["validation_NDCG@10"] is not None and 0 < first["epochs"] < 1
    assert {k: v for k, v in first.items() if k != "train_seconds"} == {k: v for k, v in second.items()
                                                                       if k != "train_seconds"}


def test_seed_rows_are_summarised_as_mean_and_std(tmp_path):
    from processing_unimp.benchmark.report import plot, row_name, seed_summary

    models = {row_name("unimp", seed): {"NDCG@10": value} for seed, value in enumerate([0.10, 0.12, 0.14])}
    models.update({"unimp-no-images": {"NDCG@10": 0.05}, "sasrec": {"NDCG@10": 0.2},
                   row_name("sasrec", 1): {"NDCG@10": 0.18}, "popularity": {"NDCG@10": 0.01}})
    assert list(models)[:2] == ["unimp", "unimp (seed 1)"]
    summary = seed_summary(models)
    assert set(summary) == {"unimp", "sasrec"}  # single runs have no spread to report
    mean, std, runs = summary["unimp"]
    assert runs == 3 and abs(mean - 0.12) < 1e-9 and abs(std - 0.02) < 1e-9
    table = markdown({"datasets": {"d": {"protocol": "p", "models": models}}})
    assert "| unimp | 0.1200 ± 0.0200 | 3 |" in table and "| sasrec | 0.1900 ± 0.0141 | 2 |" in table
    plot({"datasets": {"d": {"models": models}}}, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_long_row_names_keep_distinct_plot_labels_and_bars(tmp_path, monkeypatch):
    import matplotlib.axes

    from processing_unimp.benchmark.report import plot, row_name, short_labels

    long = "unimp-collaborative-32, a long descriptive variant name"
    names = [row_name(long, seed) for seed in range(3)] + ["popularity"]
    labels = short_labels(names)
    assert len(set(labels)) == len(names) and all(len(label) <= 40 for label in labels)
    assert labels[1].endswith("(seed 1)") and labels[-1] == "popularity"
    drawn = []
    barh = matplotlib.axes.Axes.barh
    monkeypatch.setattr(matplotlib.axes.Axes, "barh", lambda self, y, width, **kw: drawn.append((list(y), list(width)))
                        or barh(self, y, width, **kw))
    models = {name: {"NDCG@10": 0.01 * (i + 1), "NDCG@10_se": 0.001} for i, name in enumerate(names)}
    plot({"datasets": {"d": {"models": models}}}, tmp_path / "plot.png")
    (positions, widths), = drawn
    assert len(set(positions)) == len(names) and widths == [0.01, 0.02, 0.03, 0.04]  # no row drawn over another


def test_other_tasks_are_tabled_against_their_trivial_baselines():
    floors = {"rating: user mean": {"expected_RMSE": 0.9, "expected_MAE": 0.7}, "selection: random": {"F1": 0.37}}
    models = {"unimp": {"NDCG@10": 0.1, "rating": {"expected_RMSE": 0.8, "expected_MAE": 0.75},
                        "selection": {"F1": 0.5}, "task_baselines": floors}}
    table = markdown({"datasets": {"d": {"protocol": "p", "models": models}}})
    assert "| unimp | rating expected_RMSE | 0.8000 | rating: user mean: 0.9000 | yes |" in table
    assert "| unimp | rating expected_MAE | 0.7500 | rating: user mean: 0.7000 | no |" in table
    assert "| unimp | selection F1 | 0.5000 | selection: random: 0.3700 | yes |" in table


def test_stage_times_are_tabled_with_their_total():
    table = markdown({"datasets": {}, "stage_seconds": {"image tokenizer": 40.2, "fashion-shop": 300.0}})
    assert "| image tokenizer | 40 |" in table and "| total | 340 |" in table


def test_rows_are_tabled_by_the_target_items_train_frequency():
    models = {"unimp": {"NDCG@10": 0.1, "by_target_frequency": {
        "<=5": {"NDCG@10": 0.05, "NDCG@10_se": 0.01, "HR@10": 0.1, "users": 40},
        ">50": {"NDCG@10": 0.2, "NDCG@10_se": 0.02, "HR@10": 0.3, "users": 60}}},
        "sasrec": {"NDCG@10": 0.1, "by_target_frequency": {
            ">50": {"NDCG@10": 0.25, "NDCG@10_se": 0.02, "HR@10": 0.3, "users": 60}}}}
    table = markdown({"datasets": {"d": {"protocol": "p", "models": models}}})
    assert "| model | <=5 (40) | >50 (60) |" in table
    assert "| unimp | 0.0500 ± 0.0100 | 0.2000 ± 0.0200 |" in table and "| sasrec | – | 0.2500 ± 0.0200 |" in table


def test_every_variant_sets_real_arguments_and_an_unknown_override_is_an_error(tmp_path):
    """Each benchmark variant's overrides land on train.py's argument dataclasses (a typo would be lost silently
    otherwise), and an override that names no field is refused."""
    from processing_unimp.benchmark.runs import VARIANTS, unimp_arguments

    for variant, (data_model, training) in VARIANTS.items():
        model_args, data_args, training_args = unimp_arguments("fashion-shop", variant, tmp_path, "tiny", 1, None)
        for key, value in data_model.items():
            assert getattr(model_args, key, getattr(data_args, key, None)) == value, (variant, key)
        assert all(getattr(training_args, key) == value for key, value in training.items()), variant
        assert training_args.output_dir == str(tmp_path / variant)
    with pytest.raises(ValueError, match="'gama' is neither"):
        unimp_arguments("fashion-shop", "unimp", tmp_path, "tiny", 1, None, gama=0.0)


def test_only_recommend_only_runs_batch_by_length(tmp_path):
    """Length-sorted batches would be single-task batches once other tasks join the packed data, so only
    recommend-only runs group by length (the quickstart's multi-task run trains in random order)."""
    from processing_unimp.benchmark.runs import unimp_arguments

    def sampling(variant, **overrides):
        return unimp_arguments("fashion-shop", variant, tmp_path, "tiny", 1, None,
                               **overrides)[2].train_sampling_strategy

    assert sampling("unimp") == sampling("unimp-no-images") == "group_by_length"
    assert sampling("unimp-multitask") == sampling("unimp", tasks="recommend,search") == "random"
    assert sampling("unimp-random-order") == "random"


def test_seeded_baselines_are_named_by_their_seed():
    """`--baselines-only --seed 1` adds SASRec's seed-1 row beside seed 0's; the deterministic baselines keep their
    one row."""
    from processing_unimp.benchmark.runs import run_baselines
    from processing_unimp.data.builders import load_unimp_dataset
    from processing_unimp.evaluation.protocol import LeaveOneOut

    data = load_unimp_dataset("movielens-small")
    rows = run_baselines(data, LeaveOneOut.from_dataset(data), sasrec_epochs=1, seed=1)
    assert set(rows) == {"popularity", "itemknn", "content-text", "sasrec (seed 1)"}
    assert rows["sasrec (seed 1)"]["epochs"] == 1 and 0 <= rows["sasrec (seed 1)"]["NDCG@10"] <= 1


def test_rating_is_compared_with_the_user_mean_on_the_same_samples(tmp_path):
    """A rate_explain run reports its expected rating's RMSE against the user mean's, paired, in the benchmark row
    and from `examples/evaluate_rating.py` on the saved folder (on as many test users as asked)."""
    import json
    import subprocess
    import sys

    from processing_unimp.benchmark.runs import run_unimp

    metrics, *_ = run_unimp("movielens-small", "unimp-ratings", tmp_path, "tiny", epochs=1, eval_users=8,
                            test_users=8, task_users=12, max_steps=2)
    paired = metrics["rating"]["vs_reference"]
    assert paired["samples"] == 12 and paired["RMSE"] == pytest.approx(metrics["rating"]["expected_RMSE"])
    assert paired["reference_RMSE"] == pytest.approx(metrics["task_baselines"]["rating: user mean"]["expected_RMSE"])
    script = Path(__file__).resolve().parents[2] / "examples" / "evaluate_rating.py"
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "unimp-ratings"),
                             "--dataset", "movielens-small", "--users", "12",
                             "--output", str(tmp_path / "rating.json")],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    written = json.loads((tmp_path / "rating.json").read_text())
    assert written["rating"]["vs_reference"] == pytest.approx(paired)
