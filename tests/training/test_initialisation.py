"""Item-token rows started from content and from the train interactions (model initialisation for training)."""

from __future__ import annotations

import pytest
import torch


def test_item_tokens_start_from_content_with_collisions_separated(catalogue_items):
    from processing_unimp import UniMPProcessor
    from processing_unimp.training.initialisation import (
        init_item_tokens_from_content,
        item_content_rows,
        unimp_for_processor,
    )

    items = [*catalogue_items[:4], {"item_id": "Z9", "title": catalogue_items[0]["title"]}]
    processor = UniMPProcessor.from_catalogue(items, vocab_size=300, image_size=16)
    model = unimp_for_processor("tiny", processor)
    index = {item_id: k for k, item_id in enumerate(processor.item_ids)}
    rows, has_content = item_content_rows(model, processor)
    assert has_content.all()
    torch.testing.assert_close(rows[index["A1"]], rows[index["Z9"]])  # same title: a collision
    rows, _ = item_content_rows(model, processor, noise=0.3, seed=1)
    assert len({tuple(row.tolist()) for row in rows}) == len(items)
    assert torch.equal(rows, item_content_rows(model, processor, noise=0.3, seed=1)[0])  # seeded
    # Images (A1, C3, D4 have one; Z9 shares A1's title but has none) move the start; noise-free, rows stay apart.
    rows, _ = item_content_rows(model, processor, image_weight=1.0)
    assert not torch.allclose(rows[index["A1"]], rows[index["Z9"]])
    weight = model.get_input_embeddings().weight
    assert rows.std().item() == pytest.approx(weight.std().item(), rel=1e-4)
    expected, _ = item_content_rows(model, processor, image_weight=1.0, noise=0.1)
    assert init_item_tokens_from_content(model, processor, image_weight=1.0, noise=0.1) == len(items)
    torch.testing.assert_close(weight[processor.item_token_ids], expected)


def test_item_rows_start_close_for_items_the_same_users_consumed(catalogue_items):
    """The collaborative start: A1 and B2 share their users, C3 has others, D4 none (so no collaborative part)."""
    from processing_unimp import UniMPProcessor
    from processing_unimp.training.initialisation import item_content_rows, unimp_for_processor

    processor = UniMPProcessor.from_catalogue(catalogue_items[:4], vocab_size=300, image_size=16)
    model = unimp_for_processor("tiny", processor)
    pairs = [("u1", "A1"), ("u1", "B2"), ("u2", "A1"), ("u2", "B2"), ("u3", "C3"), ("u4", "C3"), ("u4", "E5")]
    rows, has_content = item_content_rows(model, processor, fields=(), interactions=pairs, interaction_weight=1.0)
    row = dict(zip(processor.item_ids, rows))
    assert has_content.tolist() == [item_id != "D4" for item_id in processor.item_ids]  # E5 is not in the catalogue
    torch.testing.assert_close(row["A1"], row["B2"])
    cosine = torch.nn.functional.cosine_similarity
    assert cosine(row["A1"], row["B2"], dim=0) > 0.99 and cosine(row["A1"], row["C3"], dim=0) < 0.5
    assert not row["D4"].any()
    again, _ = item_content_rows(model, processor, fields=(), interactions=pairs, interaction_weight=1.0)
    assert torch.equal(rows, again)  # seeded
    apart = [("u1", "A1"), ("u1", "B2"), ("u2", "A1"), ("u3", "C3"), ("u4", "B2"), ("u4", "C3")]  # 3 distinct items
    for rank in (1, 2):  # a truncated SVD of that rank: the interacted items' rows span that many directions
        low, has_content = item_content_rows(model, processor, fields=(), interactions=apart, interaction_weight=1.0,
                                             interaction_rank=rank)
        assert torch.linalg.matrix_rank(low[has_content]).item() == rank


def test_content_rows_residuals_start_from_the_interactions(catalogue_items):
    """With content item rows the collaborative start goes into the per-item residuals (the content part stays
    computed from content): items consumed by the same users start with the same residual."""
    from processing_unimp import UniMPProcessor
    from processing_unimp.content_unimp import fill_item_content
    from processing_unimp.training.initialisation import (
        init_item_residuals_from_interactions,
        item_content_rows,
        unimp_for_processor,
    )

    processor = UniMPProcessor.from_catalogue(catalogue_items[:4], vocab_size=300, image_size=16)
    model = unimp_for_processor("tiny", processor, item_rows="content", freeze_vision_tower=True)
    fill_item_content(model, processor)
    before = model.item_content.residual.detach().clone()
    pairs = [("u1", "A1"), ("u1", "B2"), ("u2", "A1"), ("u2", "B2"), ("u3", "C3")]
    assert init_item_residuals_from_interactions(model, processor, pairs) == 3
    residual = dict(zip(processor.item_ids, model.item_content.residual.detach()))
    expected, _ = item_content_rows(model, processor, fields=(), interactions=pairs, interaction_weight=1.0)
    torch.testing.assert_close(residual["A1"], residual["B2"])
    torch.testing.assert_close(residual["C3"], expected[processor.item_ids.index("C3")])
    untouched = processor.item_ids.index("D4")  # no interaction: its residual keeps its random start
    torch.testing.assert_close(model.item_content.residual[untouched].detach(), before[untouched])


def test_interaction_factors_take_a_catalogue_too_large_for_a_dense_matrix():
    """60,000 users x 30,000 items would be 7.2 GB as a dense float matrix; the factors come from a sparse one."""
    from processing_unimp.training.initialisation import interaction_factors

    items = [f"i{k}" for k in range(30_000)]
    # user u consumes the pair of items (2g, 2g + 1) of its group g (groups of different sizes)
    groups = [int(50 * (u / 60_000) ** 0.5) for u in range(60_000)]
    pairs = [(f"u{u}", f"i{2 * g + j}") for u, g in enumerate(groups) for j in (0, 1)]
    factors, has_interactions = interaction_factors(items, pairs, rank=8)
    assert factors.shape == (30_000, 8) and has_interactions.sum().item() == 100 and has_interactions[:100].all()
    torch.testing.assert_close(factors[0:100:2], factors[1:100:2])  # items always consumed together: one factor
    assert not factors[100:].any()  # items nobody consumed
    assert torch.linalg.matrix_rank(factors[:100]).item() == 8
    # the sparse route factorises the same matrix as the dense one that small catalogues take
    small = [(user, item) for user, item in pairs if int(item[1:]) >= 80]  # the 10 largest groups: 20 items, rank 10
    dense, _ = interaction_factors(items[:100], small, rank=10)
    sparse, _ = interaction_factors(items[:100], small, rank=10, dense_max_cells=0)
    torch.testing.assert_close(sparse @ sparse.T, dense @ dense.T, atol=1e-3, rtol=1e-4)  # entries up to ~24
