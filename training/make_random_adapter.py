#!/usr/bin/env python3
"""Write a random PEFT LoRA adapter for a tiny model made by make_tiny_llama.py.

Why: the runtime tests must prove that an adapter is found offline, merged, and
changes what the model answers, without torch in CI. A trained adapter
(train_lora.py) needs torch; a random one with a non-zero B matrix needs only
numpy and safetensors and changes the outputs just as surely.

Format: what `peft` writes with save_pretrained (adapter_config.json with
`target_modules` as a list, adapter_model.safetensors with
`base_model.model.<module>.lora_{A,B}.weight`), r=16, alpha=32 on q/k/v.

Usage: python training/make_random_adapter.py --base DIR --out DIR [--seed 1] [--scale 0.5]
"""

import argparse
import json
from pathlib import Path

import numpy as np
import safetensors.numpy


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, type=Path, help="tiny model directory (config.json)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scale", type=float, default=0.5, help="std of the random A and B entries")
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--alpha", type=int, default=32)
    args = ap.parse_args()

    cfg = json.loads((args.base / "config.json").read_text())
    hidden = cfg["hidden_size"]
    head_dim = cfg.get("head_dim", hidden // cfg["num_attention_heads"])
    outs = {
        "q_proj": cfg["num_attention_heads"] * head_dim,
        "k_proj": cfg["num_key_value_heads"] * head_dim,
        "v_proj": cfg["num_key_value_heads"] * head_dim,
    }
    rng = np.random.default_rng(args.seed)
    tensors = {}
    for layer in range(cfg["num_hidden_layers"]):
        for mod, out in outs.items():
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{mod}"
            tensors[f"{prefix}.lora_A.weight"] = (rng.standard_normal((args.r, hidden)) * args.scale).astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = (rng.standard_normal((out, args.r)) * args.scale).astype(np.float32)
    args.out.mkdir(parents=True, exist_ok=True)
    safetensors.numpy.save_file(tensors, str(args.out / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(args.base),
        "r": args.r,
        "lora_alpha": args.alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": sorted(outs),
        "inference_mode": True,
    }
    (args.out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"adapter with {len(tensors)} tensors in {args.out}")


if __name__ == "__main__":
    main()
