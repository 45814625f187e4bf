"""Run by tests/test_saelens_format.py with the Python of an environment that has sae-lens (never saekit's):
load each folder with `sae_lens.SAE.load_from_disk`, encode and decode the inputs, write what SAELens computed.

    python saelens_load.py INPUTS.safetensors OUT.json FOLDER [FOLDER ...]
"""

import json
import sys

import sae_lens
import torch
from safetensors.torch import load_file, save_file
from sae_lens import SAE

inputs, out, folders = sys.argv[1], sys.argv[2], sys.argv[3:]
x = load_file(inputs)["x"]
report = {"sae_lens_version": sae_lens.__version__, "folders": {}}
tensors = {}
for i, folder in enumerate(folders):
    try:
        sae = SAE.load_from_disk(folder)
    except Exception as e:  # noqa: BLE001  the test asserts which folders SAELens refuses
        report["folders"][folder] = {"error": f"{type(e).__name__}: {e}"}
        continue
    with torch.no_grad():
        latents = sae.encode(x.to(sae.dtype))
        x_hat = sae.decode(latents)
    tensors[f"latents_{i}"] = latents.float().contiguous()
    tensors[f"x_hat_{i}"] = x_hat.float().contiguous()
    report["folders"][folder] = {"index": i, "class": type(sae).__name__, "hook_name": sae.cfg.metadata.hook_name}
save_file(tensors, out + ".safetensors")
with open(out, "w") as f:
    json.dump(report, f)
