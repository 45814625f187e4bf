"""Other libraries' SAE formats: load SAELens, sparsify and dictionary_learning SAEs (from a folder or a
Hugging Face repo id), and export saekit SAEs to SAELens's format.

A repo id goes through `huggingface_hub.snapshot_download` (only the requested subfolder is fetched);
an existing local path is read directly. Weights are read with safetensors, or for dictionary_learning's
`ae.pt` with `torch.load(weights_only=True)` (tensors only, no code is unpickled).

saekit's own layout: per latent a row of W_enc [F, D] and of W_dec [F, D];
latents = act(W_enc (x - b_dec) + b_enc) (transcoders: no b_dec subtraction), x_hat = latents W_dec + b_dec.
Every import is rewritten into that form exactly (same latents, same reconstruction), folding any
differences (no b_dec subtraction, decoder-norm rescaling) into the weights.

SAELens (cfg.json + sae_weights.safetensors; SAELens 6 schema)
    cfg architecture -> saekit: standard -> relu, topk -> topk (cfg k), jumprelu -> jumprelu,
        gated -> gated, batchtopk -> batchtopk (topk_threshold -> threshold),
        matryoshka_batchtopk -> matryoshka (matryoshka_widths -> matryoshka_prefixes); SAELens 5 configs
        with architecture 'standard' and activation_fn 'topk' (activation_fn_kwargs.k) -> topk.
        (SAELens transcoders are ReLU/JumpReLU transcoders, which saekit's TopK transcoders are not: refused.)
    d_in -> d_in, d_sae -> n_latents, dtype -> dtype, metadata.hook_name (or hook_name) ->
        hookpoint (TransformerLens names such as blocks.6.hook_resid_post -> resid_post.6),
        metadata.model_name (or model_name) -> model_name.
    W_enc [D, F] -> W_enc^T; b_enc, W_dec [F, D], b_dec as is; threshold (or exp(log_threshold)) ->
        threshold; gated: b_gate -> b_enc, b_mag, r_mag as is.
    apply_b_dec_to_input false -> b_enc += W_enc b_dec (gated: b_gate += W b_dec, b_mag += exp(r_mag) W b_dec).
    topk rescale_acts_by_decoder_norm true -> W_enc and b_enc rows times ||W_dec_i||, W_dec rows divided by it.
    normalize_activations other than 'none' -> refused (the SAE expects a run-time normalisation).
saekit's own folders (`Sae.save`) are in SAELens 6's layout already (saekit/saes/disk.py): relu -> standard,
    topk -> topk, jumprelu -> jumprelu, gated -> gated, batchtopk and matryoshka -> jumprelu with the global
    threshold on every latent, apply_b_dec_to_input true, normalize_activations none, and the saekit config
    under "saekit" (SAELens ignores it; saekit reads it back exactly). `export_saelens` writes that folder.

sparsify (one folder per hook point: cfg.json + sae.safetensors)
    cfg: d_in -> d_in, num_latents (or d_in * expansion_factor) -> n_latents, k -> k,
        transcode + skip_connection -> transcoder / skip_transcoder (else topk); activation must be 'topk'.
    encoder.weight [F, D] -> W_enc, encoder.bias -> b_enc, W_dec [F, D] -> W_dec, b_dec -> b_dec,
        W_skip [D, D] -> W_skip. The folder name (e.g. layers.6) is sparsify's hook point; pass
        hookpoint='resid_post.6' to record saekit's name.

dictionary_learning (ae.pt state dict + config.json with trainer.dict_class, activation_dim, dict_size, k)
    AutoEncoder -> relu: encoder.weight [F, D] -> W_enc, encoder.bias -> b_enc,
        decoder.weight [D, F] -> W_dec^T, bias -> b_dec.
    AutoEncoderTopK -> topk and BatchTopKSAE -> batchtopk: encoder.weight, encoder.bias,
        decoder.weight [D, F] -> W_dec^T, b_dec; k; threshold (BatchTopK's inference threshold).
    MatryoshkaBatchTopKSAE -> matryoshka: W_enc [D, F] -> W_enc^T, b_enc, W_dec [F, D], b_dec, threshold,
        group_sizes -> matryoshka_prefixes (their running sums).
    JumpReluAutoEncoder -> jumprelu: W_enc [D, F] -> W_enc^T, b_enc (+ W_enc b_dec: it does not subtract
        b_dec), W_dec, b_dec, threshold; its latents are scaled by ||W_dec_i||, folded into the weights.
    GatedAutoEncoder -> gated: encoder.weight -> W_enc, gate_bias -> b_enc, mag_bias -> b_mag, r_mag,
        decoder.weight [D, F] -> W_dec^T, decoder_bias -> b_dec; latents scaled by ||W_dec_i|| (folded).
    trainer.lm_name -> model_name; trainer.layer -> hookpoint 'resid_post.<layer>' when the submodule
        is a residual stream, else pass hookpoint=.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from .errors import InteropError
from .config import SaeConfig
from .hookpoints import from_transformerlens_hook, to_transformerlens_hook
from .saes import Sae

SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_CFG = "cfg.json"
SPARSIFY_WEIGHTS = "sae.safetensors"
DL_WEIGHTS = "ae.pt"
DL_CFG = "config.json"


# -- locating files ------------------------------------------------------------------------------


def resolve_path(path_or_repo: str | Path, subfolder: str | None = None) -> Path:
    """A local folder, or a Hugging Face repo id downloaded (just `subfolder`) with snapshot_download."""
    local = Path(path_or_repo)
    if local.exists():
        return local / subfolder if subfolder else local
    text = str(path_or_repo)
    if local.is_absolute() or text.startswith(".") or text.count("/") != 1:
        raise InteropError(f"{text} lacks the SAE: no such folder (and it is not a Hugging Face repo id 'owner/name')")
    from huggingface_hub import snapshot_download

    patterns = [f"{subfolder}/*"] if subfolder else None
    root = Path(snapshot_download(str(path_or_repo), allow_patterns=patterns))
    return root / subfolder if subfolder else root


def _need(folder: Path, *names: str) -> None:
    missing = [n for n in names if not (folder / n).exists()]
    if missing:
        present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else "nothing (no such folder)"
        raise InteropError(f"{folder} lacks {missing} (it holds {present}); pass the folder of one SAE, or subfolder=")


def _build(architecture: str, tensors: dict[str, Tensor], *, device: str | torch.device = "cpu", **cfg: Any) -> Sae:
    """An SAE of `architecture` holding exactly `tensors` (saekit names and layout)."""
    F_, D = tensors["W_dec"].shape
    dtype = {torch.bfloat16: "bfloat16"}.get(tensors["W_dec"].dtype, "float32")
    scfg = SaeConfig(d_in=D, n_latents=F_, architecture=architecture, dtype=dtype, **cfg)
    sae = Sae(scfg, device="meta", seed=None)
    expected = dict(sae.state_dict())
    sd = {}
    fresh = None
    for k, ref in expected.items():
        if k not in tensors and k in sae.saekit_state:  # saekit's own training state: its initial value
            fresh = fresh if fresh is not None else Sae(scfg, seed=None).state_dict()
            sd[k] = fresh[k].to(device=device)
            continue
        if k not in tensors:
            raise InteropError(f"the {architecture} SAE needs a {k!r} tensor, which the file does not hold")
        sd[k] = tensors[k].to(device=device, dtype=ref.dtype).reshape(ref.shape).contiguous()
    extra = set(tensors) - set(expected) - set(sae.saekit_state)
    if extra:
        raise InteropError(f"unexpected tensors {sorted(extra)} for a {architecture} SAE: the file holds another architecture")
    sae.load_state_dict(sd, assign=True)
    sae.eval()
    return sae


# -- SAELens ---------------------------------------------------------------------------------------

_FROM_SAELENS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated",
                 "batchtopk": "batchtopk", "matryoshka_batchtopk": "matryoshka"}
_TO_SAELENS = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated",
               "batchtopk": "jumprelu", "matryoshka": "jumprelu"}


def load_saelens(
    path_or_repo: str | Path, subfolder: str | None = None, *, device: str | torch.device = "cpu",
    hookpoint: str | None = None,
) -> Sae:
    """An SAE saved by SAELens (cfg.json + sae_weights.safetensors), as the equivalent saekit SAE."""
    folder = resolve_path(path_or_repo, subfolder)
    _need(folder, SAELENS_CFG, SAELENS_WEIGHTS)
    cfg = json.loads((folder / SAELENS_CFG).read_text())
    w = load_file(str(folder / SAELENS_WEIGHTS))
    arch = cfg.get("architecture", "standard")
    if arch == "standard" and cfg.get("activation_fn_str", cfg.get("activation_fn")) == "topk":
        arch = "topk"  # SAELens 5: TopK was a standard SAE with a topk activation
        cfg.setdefault("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
    if arch not in _FROM_SAELENS:
        raise InteropError(
            f"SAELens architecture {arch!r} has no exact saekit equivalent (supported: {sorted(_FROM_SAELENS)})"
        )
    norm = cfg.get("normalize_activations", "none") or "none"
    if norm != "none":
        raise InteropError(
            f"this SAELens SAE expects run-time input normalisation {norm!r}; fold it first in SAELens "
            f"(e.g. sae.fold_activation_norm_scaling_factor(...)) and save again"
        )
    meta = cfg.get("metadata") or {}
    t: dict[str, Tensor] = {"W_enc": w["W_enc"].t(), "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    kw: dict[str, Any] = {
        "hookpoint": hookpoint or meta.get("saekit_hookpoint")
        or from_transformerlens_hook(meta.get("hook_name") or cfg.get("hook_name")),
        "model_name": meta.get("model_name") or cfg.get("model_name"),
    }
    ours = _FROM_SAELENS[arch]
    if ours == "gated":
        t.update(b_enc=w["b_gate"], b_mag=w["b_mag"], r_mag=w["r_mag"])
    else:
        t["b_enc"] = w["b_enc"]
    if ours == "jumprelu":
        t["threshold"] = w["threshold"] if "threshold" in w else w["log_threshold"].exp()
        kw["target_l0"] = float(cfg.get("target_l0") or 1.0)  # training-only setting; any valid value
    if ours in ("topk", "batchtopk", "matryoshka"):
        kw["k"] = int(cfg["k"])
    if ours in ("batchtopk", "matryoshka"):
        t["threshold"] = w["topk_threshold"].reshape(()) if "topk_threshold" in w else torch.tensor(-1.0)
    if ours == "matryoshka":
        widths = list(cfg.get("matryoshka_widths") or [])
        kw["matryoshka_prefixes"] = tuple(int(m) for m in widths if m < t["W_dec"].shape[0]) or None
    if cfg.get("apply_b_dec_to_input", True) is False:
        shift_F = t["W_enc"].float() @ t["b_dec"].float()  # W_enc x = W_enc (x - b_dec) + W_enc b_dec
        t["b_enc"] = t["b_enc"] + shift_F.to(t["b_enc"].dtype)
        if ours == "gated":
            t["b_mag"] = t["b_mag"] + (t["r_mag"].float().exp() * shift_F).to(t["b_mag"].dtype)
    if ours == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        _fold_decoder_norms(t, ("W_enc", "b_enc"))
    return _build(ours, t, device=device, **kw)


def _fold_decoder_norms(t: dict[str, Tensor], scaled: tuple[str, ...]) -> None:
    """Latents multiplied by ||W_dec_i|| (and decoded divided by it): fold into the weights."""
    n_F = t["W_dec"].norm(dim=-1)
    for k in scaled:
        t[k] = t[k] * (n_F[:, None] if t[k].ndim == 2 else n_F)
    t["W_dec"] = t["W_dec"] / n_F[:, None]


def export_saelens(sae: Sae, out: str | Path) -> Path:
    """Write `sae` as SAELens loads it. `Sae.save` already writes SAELens 6's layout; this is the same
    folder, refused for transcoders (SAELens's are ReLU/JumpReLU, saekit's TopK) and untrained BatchTopK
    SAEs (no inference threshold yet)."""
    if sae.saelens_architecture is None:
        raise InteropError(
            f"SAELens has no equivalent of this {sae.architecture!r} SAE's encoder (SAELens's transcoders use "
            f"ReLU/JumpReLU, saekit's TopK; no SAELens threshold is relative to the token's norm, as BatchTopK's "
            f"relative_selection is): save it with sae.save(...) and load it with saekit"
        )
    if sae.architecture in ("batchtopk", "matryoshka") and float(sae.threshold) < 0:
        raise InteropError("this BatchTopK SAE has no inference threshold yet (train it first)")
    return sae.save(out)


# -- sparsify --------------------------------------------------------------------------------------


def load_sparsify(
    path_or_repo: str | Path, subfolder: str | None = None, *, device: str | torch.device = "cpu",
    hookpoint: str | None = None, target_hookpoint: str | None = None,
) -> Sae:
    """One hook point's SAE or transcoder saved by sparsify (`subfolder` is its folder, e.g. 'layers.6')."""
    folder = resolve_path(path_or_repo, subfolder)
    _need(folder, "cfg.json", SPARSIFY_WEIGHTS)
    cfg = json.loads((folder / "cfg.json").read_text())
    if cfg.get("activation", "topk") != "topk":
        raise InteropError(f"sparsify activation {cfg.get('activation')!r} is not supported (only 'topk')")
    w = load_file(str(folder / SPARSIFY_WEIGHTS))
    t = {"W_enc": w["encoder.weight"], "b_enc": w["encoder.bias"], "W_dec": w["W_dec"], "b_dec": w["b_dec"]}
    transcode, skip = bool(cfg.get("transcode")), bool(cfg.get("skip_connection"))
    if skip and not transcode:
        raise InteropError("a sparsify SAE with a skip connection but no transcoding has no saekit equivalent")
    kw: dict[str, Any] = {"k": int(cfg["k"]), "hookpoint": hookpoint}
    if transcode:
        arch = "skip_transcoder" if skip else "transcoder"
        kw["target_hookpoint"] = target_hookpoint or "unknown"
        if skip:
            t["W_skip"] = w["W_skip"]
    else:
        arch = "topk"
    return _build(arch, t, device=device, **kw)


# -- dictionary_learning ---------------------------------------------------------------------------


def load_dictionary_learning(
    path_or_repo: str | Path, subfolder: str | None = None, *, device: str | torch.device = "cpu",
    hookpoint: str | None = None,
) -> Sae:
    """A dictionary saved by dictionary_learning (ae.pt + config.json), read with weights_only=True."""
    folder = resolve_path(path_or_repo, subfolder)
    _need(folder, DL_WEIGHTS, DL_CFG)
    trainer = json.loads((folder / DL_CFG).read_text()).get("trainer", {})
    w = torch.load(folder / DL_WEIGHTS, map_location="cpu", weights_only=True)
    cls = trainer.get("dict_class")
    layer = trainer.get("layer")
    sub = str(trainer.get("submodule_name") or "")
    if hookpoint is None and layer is not None and ("resid" in sub or not sub):
        hookpoint = f"resid_post.{layer}"
    kw: dict[str, Any] = {"hookpoint": hookpoint, "model_name": trainer.get("lm_name")}
    if cls == "AutoEncoder":
        t = {"W_enc": w["encoder.weight"], "b_enc": w["encoder.bias"], "W_dec": w["decoder.weight"].t(), "b_dec": w["bias"]}
        return _build("relu", t, device=device, **kw)
    if cls in ("AutoEncoderTopK", "BatchTopKSAE"):
        t = {"W_enc": w["encoder.weight"], "b_enc": w["encoder.bias"], "W_dec": w["decoder.weight"].t(), "b_dec": w["b_dec"]}
        kw["k"] = int(w["k"]) if "k" in w else int(trainer["k"])
        if cls == "BatchTopKSAE":
            t["threshold"] = w["threshold"].float().reshape(())
            return _build("batchtopk", t, device=device, **kw)
        return _build("topk", t, device=device, **kw)
    if cls == "MatryoshkaBatchTopKSAE":
        t = {"W_enc": w["W_enc"].t(), "b_enc": w["b_enc"], "W_dec": w["W_dec"], "b_dec": w["b_dec"],
             "threshold": w["threshold"].float().reshape(())}
        sizes = [int(s) for s in w["group_sizes"].tolist()]
        prefixes = tuple(int(sum(sizes[: i + 1])) for i in range(len(sizes) - 1))
        kw.update(k=int(w["k"]), matryoshka_prefixes=prefixes or None)
        return _build("matryoshka", t, device=device, **kw)
    if cls == "JumpReluAutoEncoder":
        t = {"W_enc": w["W_enc"].t(), "b_enc": w["b_enc"], "W_dec": w["W_dec"], "b_dec": w["b_dec"], "threshold": w["threshold"]}
        t["b_enc"] = t["b_enc"] + t["W_enc"] @ t["b_dec"]  # it encodes x, not x - b_dec
        _fold_decoder_norms(t, ("W_enc", "b_enc", "threshold"))
        kw["target_l0"] = float(trainer.get("target_l0") or 1.0)
        return _build("jumprelu", t, device=device, **kw)
    if cls == "GatedAutoEncoder":
        t = {"W_enc": w["encoder.weight"], "b_enc": w["gate_bias"], "b_mag": w["mag_bias"], "r_mag": w["r_mag"],
             "W_dec": w["decoder.weight"].t(), "b_dec": w["decoder_bias"]}
        _fold_decoder_norms(t, ("W_enc", "b_enc", "b_mag"))
        return _build("gated", t, device=device, **kw)
    raise InteropError(
        f"dictionary_learning class {cls!r} is not supported (AutoEncoder, AutoEncoderTopK, BatchTopKSAE, "
        f"MatryoshkaBatchTopKSAE, JumpReluAutoEncoder, GatedAutoEncoder)"
    )


def load_pretrained(path_or_repo: str | Path, subfolder: str | None = None, **kw: Any) -> Sae:
    """Load an SAE: one shipped with saekit (`load_pretrained("gemma-3-270m", "resid_post.6")`, see
    `saekit.pretrained`), or any supported format in a folder or hub repo, recognised by its files
    (saekit, SAELens, sparsify, dictionary_learning)."""
    from . import pretrained

    if pretrained.is_shipped(path_or_repo, subfolder) and not Path(str(path_or_repo)).exists():
        return pretrained.load(str(path_or_repo), str(subfolder), **kw)
    folder = resolve_path(path_or_repo, subfolder)
    if (folder / DL_WEIGHTS).exists():
        return load_dictionary_learning(folder, **kw)
    raw = _cfg_of(folder)
    if "saekit" in raw:  # saekit's own folder (SAELens's layout plus the exact saekit config)
        return Sae.load(folder, device=kw.get("device", "cpu"))
    if (folder / SAELENS_WEIGHTS).exists():
        return load_saelens(folder, **kw)
    if (folder / SPARSIFY_WEIGHTS).exists():
        return load_sparsify(folder, **kw)
    _need(folder, SAELENS_CFG)
    raise InteropError(f"{folder} holds no known SAE weights file ({SAELENS_WEIGHTS}, {SPARSIFY_WEIGHTS}, {DL_WEIGHTS})")


def _cfg_of(folder: Path) -> dict[str, Any]:
    file = folder / SAELENS_CFG
    if not file.exists():
        return {}
    try:
        raw = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise InteropError(f"{file} is not valid JSON ({e}): the file is damaged") from None
    return raw if isinstance(raw, dict) else {}


__all__ = [
    "InteropError",
    "export_saelens",
    "from_transformerlens_hook",
    "load_dictionary_learning",
    "load_pretrained",
    "load_saelens",
    "load_sparsify",
    "resolve_path",
    "to_transformerlens_hook",
]
