"""Steering on the shipped SAE of the real default model: a concept feature found automatically (coverage
ranking) moves the next-token distribution toward its concept, in proportion to the strength, in units of
its maximum activation. Notebook 03 shows the sampled, scored version and the ablation comparison."""

import pytest
import torch

import saekit
from saekit import Steer
from saekit.features.search import features_for_text

pytestmark = pytest.mark.real_model

SEA = [
    "The ocean waves crashed on the beach while sailors steered their ships across the open sea.",
    "Fish and coral live beneath the water of the sea, far from the coast and the harbour.",
    "The tide came in over the sand, and the boat drifted out into the ocean.",
    "Whales and dolphins swim in the deep blue sea, and seagulls fly over the waves.",
]
SEA_WORDS = [" sea", " ocean", " water", " waves", " beach", " ship", " boat", " fish"]
CONTROL_WORDS = [" money", " bank", " law", " school", " king", " city", " music", " game"]


def test_sea_feature_found_automatically_steers_toward_the_sea(real_model):
    sae = saekit.load_pretrained("gemma-3-270m", "resid_post.6")
    stats = saekit.pretrained.stats("gemma-3-270m", "resid_post.6")
    found = features_for_text(real_model, sae, SEA, stats, top=3, rank="coverage")
    sea = int(found.index[0])
    assert {" sea", " Sea"} & set(stats.peak_tokens(sea, 2)), stats.peak_tokens(sea, 4)

    def gain(strength, words):
        e = saekit.measure(real_model, "The weather today is", Steer(None, (sae, sea), strength, unit="max_act", stats=stats),
                           tokens=words, top=0)
        return float(torch.logsumexp(e.logp_edited[-1], -1) - torch.logsumexp(e.logp_clean[-1], -1))

    sea_gains = [gain(s, SEA_WORDS) for s in (0.25, 0.5, 1.0)]
    assert sea_gains[0] < sea_gains[1] < sea_gains[2] and sea_gains[2] > 1.0, sea_gains
    assert gain(1.0, CONTROL_WORDS) < sea_gains[2] - 1.0, "specific to the concept, not every noun"
    g = saekit.generate(real_model, "I think that", Steer(None, (sae, sea), 1.0, unit="max_act", stats=stats), max_new_tokens=16)
    assert any(w in g.steered.lower() for w in ("sea", "ocean", "water", "wave", "beach")), g.steered


CONCEPTS = {
    "mountain": ["The climbers reached the summit of the mountain after a long hike up the rocky peak.",
                 "Snow covers the high peaks of the Alps and the Himalayas all year round.",
                 "The valley lies between two mountain ranges, below steep cliffs and glaciers.",
                 "They walked up the mountain trail to see the view from the top of the hill."],
    "war": ["The army attacked the enemy's positions, and the war lasted for four years.",
            "Soldiers fought in the battle, and many were killed before the two armies signed a peace treaty.",
            "During the Second World War, troops invaded the country and bombed its cities.",
            "The general led his forces into battle against the invading army."],
}


@pytest.mark.parametrize("concept", sorted(CONCEPTS))
def test_coverage_then_output_score_finds_a_feature_that_writes_the_concept(real_model, concept):
    """Input side (coverage on four sentences), then output side (steering raises the feature's own peak
    tokens): the winner is the concept's own multilingual feature, and its output score dwarfs the others'."""
    from saekit.steering_eval import output_scores

    sae = saekit.load_pretrained("gemma-3-270m", "resid_post.6")
    stats = saekit.pretrained.stats("gemma-3-270m", "resid_post.6")
    found = features_for_text(real_model, sae, CONCEPTS[concept], stats, top=10, rank="coverage")
    scored = output_scores(real_model, sae, found.index.tolist(), stats, progress=False)
    best = int(scored.index[0])
    assert concept in " ".join(stats.peak_tokens(best, 3)).lower(), stats.peak_tokens(best, 5)
    assert scored["output_score"].iloc[0] > 3.0 and scored["output_score"].iloc[0] > 2 * scored["output_score"].iloc[1]


def test_a_concept_feature_found_in_english_ranks_among_the_top_multilingual_features(real_model):
    """Issue 10: the sea feature found from four English sentences (coverage) is one of the ten features that
    `multilingual_features` ranks first on parallel English/Spanish/French leads, fires on its articles in
    every language (correlated profiles), and peaks on the concept's words."""
    from saekit.features.search import multilingual_features, parallel_articles

    sae = saekit.load_pretrained("gemma-3-270m", "resid_post.6")
    stats = saekit.pretrained.stats("gemma-3-270m", "resid_post.6")
    sea = int(features_for_text(real_model, sae, SEA, stats, top=1, rank="coverage").index[0])
    ml = multilingual_features(real_model, sae, parallel_articles()[::60][:16], tokens_per_doc=32, progress=False)
    top = ml.table(top=10)
    assert sea in top.index.tolist(), (sea, top.index.tolist())
    assert top.loc[sea, "correlation"] > 0.9, top.loc[sea]
    assert {" sea", " Sea"} & set(stats.peak_tokens(sea, 2))
