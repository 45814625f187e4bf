"""Feature circuits on the real model (Gemma 3 270M, shipped SAEs): subject-verb agreement across a
prepositional phrase. Attribution patching (fast) at two hook points finds features whose ablation on new
prompts lowers the agreement preference far more than as many random active features."""

from __future__ import annotations

import pytest
import torch

import saekit
from saekit.circuits import ablate, attribute, logit_diff

pytestmark = pytest.mark.real_model

HPS = ["resid_post.6", "resid_post.14"]


def test_agreement_circuit_features_matter(real_model):
    model = real_model
    saes = {h: saekit.load_pretrained("gemma-3-270m", h) for h in HPS}
    pairs = [(f"The {pl} to the cabinet", f"The {sg} to the cabinet") for sg, pl in [("key", "keys"), ("author", "authors")]]
    metric = logit_diff(model, " are", " is")
    c = attribute(model, saes, pairs, metric, method="atp", node_threshold=0.2, progress=False)
    assert c.metric_clean > 0 > c.metric_patch  # the model agrees, and the counterfactual flips it
    top = c.top_features(4)
    assert top and all(s < 0 for _, _, s in top[:2])  # patching them to singular pushes towards " is"
    feats: dict[str, list[int]] = {}
    for h, f, _ in top:
        feats.setdefault(h, []).append(f)
    new = ["The girls near the house", "The dogs near the house"]
    r_top = ablate(model, saes, new, metric, feats)
    ids = torch.cat([model.encode_prompt(t) for t in new])
    acts = model.capture(ids, HPS)
    g = torch.Generator().manual_seed(0)
    rand = []
    for _ in range(3):
        pick = {}
        for h, fs in feats.items():
            with torch.no_grad():
                active = (saes[h].encode(acts[h][:, 1:].float()) > 0).any(0).any(0).nonzero().squeeze(-1)
            pick[h] = active[torch.randperm(len(active), generator=g)[: len(fs)]].tolist()
        rand.append(abs(ablate(model, saes, new, metric, pick).change))
    assert r_top.change < 0
    assert abs(r_top.change) > 3 * max(rand), (r_top.change, rand)
