"""Evaluation by exact ranking: agrees with the processor's ranking, and is gathered across processes."""

import json
import subprocess
import sys
from pathlib import Path

import torch

from processing_unimp.evaluation.tasks import answer_logits, evaluate_ranking, prompt_inputs
from processing_unimp.training.initialisation import unimp_for_processor

ROOT = Path(__file__).resolve().parents[2]


def test_ranking_metrics_match_the_processor_ranking(processor):
    torch.manual_seed(0)
    model = unimp_for_processor("tiny", processor).eval()
    samples = [{"task": "recommend", "user_id": "u", "history": ["A1", "C3"], "target": {"item_id": target}}
               for target in processor.item_ids]
    metrics = evaluate_ranking(model, processor, samples, batch_size=2, exclude_seen=False)
    ranked = processor.rank_items(answer_logits(model, prompt_inputs(processor, samples[:1], "cpu")), top_k=None)[0]
    # Same history for every sample: the k-th ranked item is the target of exactly one sample, at rank k.
    assert metrics["HR@1"] == 1 / len(samples) and metrics["HR@5"] == 1.0 and metrics["num_users"] == len(samples)
    assert metrics["MRR@5"] == sum(1 / (ranked.index(t) + 1) for t in processor.item_ids) / len(samples)


def test_unimp_ranks_through_the_protocol_like_every_baseline(processor):
    """`UniMPScorer` is a protocol `Scorer`: over a leave-one-out split, `scorer_ranks` gives each target the rank
    it has in the processor's own ranking of that user's prompt with the seen items left out; task samples, search
    ones by their query, rank through the same path."""
    from processing_unimp.evaluation.protocol import LeaveOneOut, scorer_ranks
    from processing_unimp.evaluation.tasks import UniMPScorer, ranking_ranks

    torch.manual_seed(0)
    model = unimp_for_processor("tiny", processor).eval()
    ids = processor.item_ids
    split = LeaveOneOut(ids, train={"u1": [0, 2], "u2": [4], "u3": [1, 3, 0]}, validation={"u1": 1, "u2": 3, "u3": 2},
                        test={"u1": 3, "u2": 0, "u3": 4})
    samples = split.samples("test")
    samples[1] = {**samples[1], "task": "search", "query": "green hat"}
    expected = []
    for sample in samples:
        logits = answer_logits(model, prompt_inputs(processor, [sample], "cpu"))
        ranked = processor.rank_items(logits, top_k=None, exclude=[[h["item_id"] for h in sample["history"]]],
                                      queries=[sample.get("query")])[0]
        expected.append(ranked.index(sample["target"]["item_id"]) + 1)
    assert expected[1] == 1  # "green hat": the one item whose title holds both words
    assert ranking_ranks(model, processor, samples, batch_size=2).tolist() == expected
    scorer = UniMPScorer(model, processor)
    recommend_only = scorer_ranks(scorer, split, "test", batch_size=2).tolist()
    assert recommend_only[0] == expected[0] and recommend_only[2] == expected[2]
    with_query, without = scorer.score([[4], [4]], queries=["green hat", None])
    assert with_query.shape == (len(ids),) and not torch.equal(with_query, without)  # the query is in the prompt


def test_metrics_are_gathered_from_two_processes(tmp_path):
    output = tmp_path / "metrics.json"
    # The torchrun launcher starts 2 processes; the script's `Accelerator(cpu=True)` joins them over gloo.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(ROOT / "tests/scripts/distributed_ranking.py"), str(output)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["processes"] == 2
    assert report["gathered"]["num_users"] == 15
    assert report["gathered"] == report["single"]


def test_every_process_runs_as_many_batches_as_the_largest_share(processor):
    """A sharded model (FSDP, ZeRO-3) gathers its parameters in every forward pass: a process whose share of the
    samples has run out still runs one (on a stand-in sample) and drops its result, instead of hanging the others."""
    from types import SimpleNamespace

    from processing_unimp.evaluation.tasks import _prompt_batches

    torch.manual_seed(0)
    model = unimp_for_processor("tiny", processor).eval()
    samples = [{"task": "recommend", "history": ["A1"], "target": {"item_id": item}} for item in processor.item_ids]
    batches = {}
    for rank in (0, 1):  # 5 samples on 2 processes, batch 2: shares of 3 and 2 samples, 2 batches each
        accelerator = SimpleNamespace(process_index=rank, num_processes=2, is_main_process=rank == 0)
        batches[rank] = [(len(b), inputs["input_ids"].shape[0])
                         for b, inputs in _prompt_batches(model, processor, samples, 2, "ranking", accelerator)]
    assert batches == {0: [(2, 2), (1, 1)], 1: [(2, 2), (0, 1)]}
