"""Scoring generated item images in a feature space (not shipped to the Hub).

No pretrained Inception network can be downloaded offline, so the feature space is a small CNN trained on the
catalogue's own images to predict each item's class (and any other item labels, e.g. a hidden visual style, given
as more heads). Three measures:
- FID-style distance: the Frechet distance between Gaussians fitted to generated and reference features;
- consistency: how often the classifier's class for a generated image is the class the query asks for;
- personalization: how often a generated image is closer to the user's own history than to a random other
  user's history (0.5 = no personalization, 1 = always closer to the user's own).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import trange

from ..image_codes_unimp import images_to_tensor


class FeatureClassifier(nn.Module):
    """A small CNN: two conv blocks, a `feature_dim` embedding (the feature space), one linear head per label."""

    def __init__(self, channels: int, image_size: int, head_sizes: Mapping[str, int], feature_dim: int = 32):
        super().__init__()
        self.channels, self.image_size = channels, image_size
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (image_size // 4) ** 2, feature_dim), nn.ReLU(),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(feature_dim, size) for name, size in head_sizes.items()})

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every head for `(n, C, S, S)` pixels in [-1, 1]."""
        features = self.body(pixels)
        return {name: head(features) for name, head in self.heads.items()}

    @torch.no_grad()
    def embed(self, images: Sequence[Any], batch_size: int = 512) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Features `(n, feature_dim)` and per-head predicted labels `(n,)` of PIL images (or image dicts)."""
        self.eval()
        features, predictions = [], {name: [] for name in self.heads}
        for start in range(0, len(images), batch_size):
            pixels = images_to_tensor(images[start : start + batch_size], self.image_size, self.channels)
            batch_features = self.body(pixels)
            features.append(batch_features)
            for name, head in self.heads.items():
                predictions[name].append(head(batch_features).argmax(-1))
        return torch.cat(features), {name: torch.cat(values) for name, values in predictions.items()}


def train_feature_classifier(
    images: Sequence[Any],
    labels: Mapping[str, Sequence[int]],
    channels: int,
    image_size: int,
    epochs: int = 6,
    batch_size: int = 128,
    learning_rate: float = 3e-3,
    holdout_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[FeatureClassifier, dict[str, float]]:
    """Train a `FeatureClassifier` on item images with one head per entry of `labels` (`"class"` is required).

    Returns the classifier and its accuracy per head on a seeded held-out share of the images.
    """
    if "class" not in labels:
        raise ValueError("labels needs a `class` entry: the feature space is trained to predict item classes.")
    torch.manual_seed(seed)
    pixels = images_to_tensor(list(images), image_size, channels)
    targets = {name: torch.as_tensor(list(values), dtype=torch.long) for name, values in labels.items()}
    for name, values in targets.items():
        if len(values) != len(pixels):
            raise ValueError(f"labels[{name!r}] has {len(values)} entries for {len(pixels)} images.")
    model = FeatureClassifier(channels, image_size, {name: int(v.max()) + 1 for name, v in targets.items()})
    order = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(seed))
    held_out, train = order[: int(holdout_fraction * len(pixels))], order[int(holdout_fraction * len(pixels)) :]
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    for _ in (progress := trange(epochs, desc="training the feature classifier")):
        shuffled = train[torch.randperm(len(train))]
        for start in range(0, len(shuffled), batch_size):
            rows = shuffled[start : start + batch_size]
            logits = model(pixels[rows])
            loss = sum(nn.functional.cross_entropy(logits[name], targets[name][rows]) for name in targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        progress.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        logits = model(pixels[held_out])
    accuracy = {f"{name}_accuracy": round((logits[name].argmax(-1) == targets[name][held_out]).float().mean().item(), 4)
                for name in targets}
    return model, accuracy


def _matrix_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues clipped)."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets `(n, d)`, `(m, d)` (the FID formula).

    ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2), in float64 with eigendecompositions.
    """
    a, b = features_a.double(), features_b.double()
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"The Frechet distance needs at least 2 samples per set, got {len(a)} and {len(b)}.")
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _matrix_sqrt(cov_a)
    cross = _matrix_sqrt(root_a @ cov_b @ root_a)
    distance = (mean_a - mean_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross.trace()
    return max(float(distance), 0.0)


def category_consistency(predicted: Sequence[int] | torch.Tensor, expected: Sequence[int] | torch.Tensor) -> float:
    """Share of generated images whose predicted class is the class the query asks for."""
    predicted, expected = torch.as_tensor(predicted), torch.as_tensor(expected)
    if len(predicted) != len(expected) or not len(predicted):
        raise ValueError(f"Got {len(predicted)} predictions for {len(expected)} expected classes.")
    return (predicted == expected).float().mean().item()


def personalization_wins(
    generated: torch.Tensor,
    histories: Sequence[torch.Tensor],
    num_random_users: int = 20,
    seed: int = 0,
) -> torch.Tensor:
    """Per user `(n,)`, how often the generated image is more similar to the user's history than to a random other
    user's history (see `personalization_score`)."""
    if len(generated) != len(histories) or len(generated) < 2:
        raise ValueError(f"Need one history per generated image and at least 2 users; got {len(generated)} images "
                         f"and {len(histories)} histories.")
    centroids = nn.functional.normalize(torch.stack([history.mean(0) for history in histories]).double(), dim=-1)
    similarity = nn.functional.normalize(generated.double(), dim=-1) @ centroids.T  # (users, users)
    generator = torch.Generator().manual_seed(seed)
    users = len(generated)
    wins = []
    for user in range(users):
        others = torch.randperm(users - 1, generator=generator)[: num_random_users]
        others = others + (others >= user).long()  # skip the user themselves
        own, random = similarity[user, user], similarity[user, others]
        wins.append(((own > random).double() + 0.5 * (own == random).double()).mean())
    return torch.stack(wins)


def personalization_score(
    generated: torch.Tensor,
    histories: Sequence[torch.Tensor],
    num_random_users: int = 20,
    seed: int = 0,
) -> float:
    """How often a generated image is more similar to its user's history than to a random other user's history.

    `generated` is `(n, d)` features (one image per user, centred), `histories[i]` the `(n_i, d)` features of user
    i's history items. Similarity is the cosine to the history's mean feature; each user is compared with
    `num_random_users` other users drawn with `seed`, ties count one half. 0.5 means no personalization.
    """
    return personalization_wins(generated, histories, num_random_users, seed).mean().item()


def paired_differences(
    method: Mapping[str, torch.Tensor],
    baseline: Mapping[str, torch.Tensor],
    reference_features: torch.Tensor,
    resamples: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """Method minus baseline on the same users, each with a standard error. `method`/`baseline` hold the per-user
    `features` and, under each other measure's name, per-user values whose mean is that measure. The FID-style
    distance's error comes from a paired bootstrap over users (both sets and the references resampled alike), the
    others' from the per-user differences."""
    users = len(reference_features)
    generator = torch.Generator().manual_seed(seed)
    fid_differences = []
    for _ in range(resamples):
        rows = torch.randint(users, (users,), generator=generator)
        fid_differences.append(frechet_distance(method["features"][rows], reference_features[rows])
                               - frechet_distance(baseline["features"][rows], reference_features[rows]))
    differences = {"fid": (frechet_distance(method["features"], reference_features)
                           - frechet_distance(baseline["features"], reference_features),
                           torch.tensor(fid_differences).std().item())}
    for name in method.keys() - {"features"}:
        per_user = method[name].double() - baseline[name].double()
        differences[name] = per_user.mean().item(), (per_user.std() / users**0.5).item()
    return {key: round(value, 4) for name, (difference, error) in sorted(differences.items())
            for key, value in ((f"{name}_difference", difference), (f"{name}_difference_se", error))}


def evaluate_image_generation(
    classifier: FeatureClassifier,
    generated: Mapping[str, Sequence[Any]],
    references: Sequence[Any],
    query_classes: Sequence[int],
    histories: Sequence[Sequence[Any]],
    center: torch.Tensor | None = None,
    num_random_users: int = 20,
    seed: int = 0,
    baseline: str | None = None,
    target_styles: Sequence[int] | None = None,
) -> dict[str, dict[str, Any]]:
    """`{method: {"fid", "consistency", "personalization"}}` for sets of images, one image per evaluated user.

    `references` are the real images of what the users wanted (FID reference set), `query_classes` the class each
    query asks for, `histories[i]` user i's history images. `center` (e.g. the catalogue's mean feature) is
    subtracted before cosine similarities; it defaults to the references' mean feature. With `target_styles` (the
    wanted items' hidden styles; the classifier needs a `style` head) each method also gets `style_consistency`:
    how often the generated image's predicted style is the wanted item's, the personal part that a query for a
    class leaves open. With a `baseline` method, every other method also gets `vs_<baseline>`: its paired
    differences with standard errors (`paired_differences`).
    """
    reference_features, _ = classifier.embed(list(references))
    center = reference_features.mean(0) if center is None else center
    history_features = [classifier.embed(list(images))[0] - center for images in histories]
    expected = torch.as_tensor(list(query_classes))
    expected_styles = None if target_styles is None else torch.as_tensor(list(target_styles))
    per_user, results = {}, {}
    for method, images in generated.items():
        if len(images) != len(references):
            raise ValueError(f"Method {method!r} has {len(images)} images for {len(references)} users.")
        features, predictions = classifier.embed(list(images))
        per_user[method] = {  # per-user values, each measure their mean
            "consistency": (predictions["class"] == expected).double(),
            "personalization": personalization_wins(features - center, history_features, num_random_users, seed),
        }
        if expected_styles is not None:
            per_user[method]["style_consistency"] = (predictions["style"] == expected_styles).double()
        results[method] = {"fid": round(frechet_distance(features, reference_features), 4),
                           **{name: round(values.mean().item(), 4) for name, values in per_user[method].items()},
                           # the same mean, with the check that there is one query class per image
                           "consistency": round(category_consistency(predictions["class"], expected), 4)}
        per_user[method]["features"] = features
    if baseline is not None:
        if baseline not in per_user:
            raise ValueError(f"The baseline {baseline!r} is not among the methods {sorted(per_user)}.")
        for method in per_user.keys() - {baseline}:
            results[method][f"vs_{baseline}"] = paired_differences(per_user[method], per_user[baseline],
                                                                   reference_features, seed=seed)
    return results


__all__ = [
    "FeatureClassifier",
    "category_consistency",
    "evaluate_image_generation",
    "frechet_distance",
    "paired_differences",
    "personalization_score",
    "personalization_wins",
    "train_feature_classifier",
]
