"""`saekit quickstart`: the whole loop on the built-in model, from nothing to a feature report.

harvest (Gemma 3 270M, resid_post.6) -> train a TopK SAE -> evaluate on held-out text -> feature
statistics -> a standalone HTML feature browser. Each stage writes into `out/` as it finishes, and a
rerun reuses what is there (the activation cache resumes; a saved SAE is loaded, not retrained).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .saes.disk import weights_file


def run(
    out: str | Path = "runs/quickstart",
    *,
    tokens: int = 300_000,
    harvest_tokens: int = 100_000,
    n_latents: int = 4096,
    k: int = 32,
    eval_tokens: int = 4096,
    report_tokens: int = 32_768,
    hookpoint: str = "resid_post.6",
) -> dict:
    import saekit
    from .features import feature_stats
    from .widgets import FeatureBrowser

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    t = time.time()
    print("1/5 loading the model (the first run converts it once, about a minute)")
    model = saekit.load_model()
    timings["load_s"] = time.time() - t

    t = time.time()
    print(f"2/5 harvesting {harvest_tokens:,} tokens at {hookpoint}")
    cache = saekit.harvest(model, hookpoints=hookpoint, n_tokens=harvest_tokens, out=out / "activations")
    timings["harvest_s"] = time.time() - t

    t = time.time()
    sae_dir = out / "sae"
    if weights_file(sae_dir) is not None:
        print(f"3/5 loading the SAE already trained in {sae_dir}")
        sae = saekit.Sae.load(sae_dir)
    else:
        print(f"3/5 training a TopK SAE ({n_latents} latents, k={k}) on {tokens:,} tokens")
        sae = saekit.train(cache, n_latents=n_latents, k=k, cfg=saekit.TrainConfig(tokens=tokens), out=sae_dir)
    timings["train_s"] = time.time() - t

    t = time.time()
    print(f"4/5 evaluating on {eval_tokens:,} held-out tokens")
    result = saekit.evaluate(model, sae, n_tokens=eval_tokens)
    (out / "eval.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    timings["eval_s"] = time.time() - t

    t = time.time()
    print(f"5/5 feature statistics on {report_tokens:,} held-out tokens and the HTML report")
    stats = feature_stats(model, sae, n_tokens=report_tokens)
    stats.save(out / "features")
    report = FeatureBrowser(stats).to_html(out / "features.html", title="saekit quickstart: Gemma 3 270M resid_post.6")
    timings["report_s"] = time.time() - t

    summary = {**result.to_dict(), **{k: round(v, 1) for k, v in timings.items()}, "report": str(report)}
    print("\nsaekit quickstart: done")
    for key in ("l0", "fvu", "explained_variance", "ce_loss_recovered", "delta_lm_loss", "kl_divergence", "dead_fraction"):
        print(f"  {key:<20} {summary[key]:.4f}")
    print(f"  SAE:     {sae_dir}/ (cfg.json + sae_weights.safetensors, SAELens's layout)")
    print(f"  metrics: {out / 'eval.json'}")
    print(f"  report:  {report}  (open it in a browser; works offline)")
    return summary
