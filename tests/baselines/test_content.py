"""Content SASRec: a planted content rule, items never trained on ranked by content alone, new-item metrics."""

from __future__ import annotations

import pytest
import torch

from processing_unimp.baselines.content import ContentSASRec, ContentSASRecConfig, ContentSASRecRecommender
from processing_unimp.baselines.recommenders import SASRecConfig, SASRecRecommender
from processing_unimp.benchmark.new_items import new_item_metrics
from processing_unimp.evaluation.metrics import target_ranks

GROUPS, PER_GROUP = 8, 5  # item g * PER_GROUP + j belongs to group g; the last item of each group is never trained on
SMALL = dict(num_items=GROUPS * PER_GROUP, hidden_size=32, inner_size=64, max_length=12, hidden_dropout=0.1,
             attention_dropout=0.1, batch_targets=256, max_epochs=15, learning_rate=5e-3)


def _walks(count: int, length: int, generator: torch.Generator) -> list[list[int]]:
    """Histories in which the next item is any trained item of the group after the previous item's group."""
    walks = []
    for _ in range(count):
        group, walk = int(torch.randint(GROUPS, (1,), generator=generator)), []
        for _ in range(length):
            walk.append(group * PER_GROUP + int(torch.randint(PER_GROUP - 1, (1,), generator=generator)))
            group = (group + 1) % GROUPS
        walks.append(walk)
    return walks


@pytest.fixture(scope="module")
def planted() -> tuple[torch.Tensor, list[list[int]], list[list[int]], torch.Tensor]:
    """(content: group one-hot + noise, train walks, test histories, targets = the withheld item of the next group)."""
    generator = torch.Generator().manual_seed(0)
    content = torch.cat([torch.eye(GROUPS).repeat_interleave(PER_GROUP, 0),
                         0.1 * torch.randn(GROUPS * PER_GROUP, 8, generator=generator)], dim=1)
    train, histories = _walks(100, 12, generator), _walks(64, 6, generator)
    targets = torch.tensor([((h[-1] // PER_GROUP + 1) % GROUPS) * PER_GROUP + PER_GROUP - 1 for h in histories])
    return content, train, histories, targets


def test_content_sasrec_ranks_items_it_never_trained_on_by_content(planted):
    content, train, histories, targets = planted
    model = ContentSASRecRecommender(ContentSASRecConfig(**SMALL), content).fit(train, progress=False)
    ranks = target_ranks(model.score(histories), targets)
    # the withheld item comes right after (or among) the 4 trained items of the right group: chance HR@5 is 0.125
    assert (ranks <= PER_GROUP).float().mean() >= 0.9
    plain = SASRecRecommender(SASRecConfig(**SMALL)).fit(train, progress=False)
    assert (target_ranks(plain.score(histories), targets) <= PER_GROUP).float().mean() <= 0.125


def test_items_never_trained_on_have_no_id_part_and_dropout_only_trains(planted):
    content, train, _, _ = planted
    recommender = ContentSASRecRecommender(ContentSASRecConfig(**SMALL, id_dropout=0.9), content)
    recommender.fit(train, validation=lambda m: 0.0, progress=False)
    embedding = recommender.model.item_embedding
    withheld = torch.arange(GROUPS) * PER_GROUP + PER_GROUP  # index + 1 of each group's last item
    assert not embedding.has_id[withheld].any() and embedding.has_id[1:].sum() == GROUPS * (PER_GROUP - 1)
    with torch.no_grad():
        assert torch.allclose(embedding.weight[withheld], embedding.projection(content[withheld - 1]))
        assert torch.equal(embedding.weight, embedding.weight)  # deterministic once trained (eval mode)
        embedding.train()
        assert not torch.equal(embedding.weight, embedding.weight)  # ID rows dropped item by item while training
    assert len(recommender.history) == recommender.config.patience + 1  # early stopping on the validation score


def test_content_sasrec_refuses_content_of_another_catalogue():
    with pytest.raises(ValueError, match="3 content vectors for num_items=4"):
        ContentSASRec(ContentSASRecConfig(num_items=4), torch.zeros(3, 2))


def test_new_item_metrics_groups_users_by_their_target():
    ranks = torch.tensor([1, 30, 2, 1])
    metrics = new_item_metrics(ranks, ["a", "b", "c", "d"], {"b", "c"})
    assert metrics["new"]["num_users"] == 2 and metrics["new"]["HR@10"] == 0.5
    assert metrics["other"]["HR@1"] == 1.0 and metrics["all"]["num_users"] == 4
    assert set(new_item_metrics(ranks, ["a", "b", "c", "d"], set())) == {"other", "all"}
    with pytest.raises(ValueError, match="3 targets for 4 ranks"):
        new_item_metrics(ranks, ["a", "b", "c"], {"b"})
