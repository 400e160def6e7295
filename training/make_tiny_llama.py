#!/usr/bin/env python3
"""Generate a tiny, random-weight Llama model directory for smoke tests.

Why: the real model path (Llama-3-8B-Instruct + LoRA) needs a GPU and 16 GB of
weights. The training pipeline, the PEFT adapter format, the hub-cache layout and
the Rust runtime (mistral.rs) can all be exercised end to end on a ~0.6 MB model
instead, in seconds, on a CPU and in CI. The weights are random, so the model's
answers are meaningless until trained, and even then a 140k-parameter model is not
expected to be accurate; it exists to prove the plumbing works.

What it writes (everything both HF transformers and mistral.rs 0.8.1 read):
  config.json              LlamaForCausalLM, hidden 64, 2 layers, 4 heads / 2 kv heads
  model.safetensors        float32, HF Llama tensor names
  tokenizer.json           byte-level BPE (512 tokens) trained on taxonomy + dataset
  tokenizer_config.json    PreTrainedTokenizerFast, special tokens, ChatML chat_template
  special_tokens_map.json
  generation_config.json   bos/eos/pad ids
  tiny_model_info.json     seed, corpus size, parameter count, sha256 of the files

Only numpy, safetensors and tokenizers are needed (no torch), so it runs in a
light virtualenv. Output is deterministic for a given seed and corpus.

Usage:
  python training/make_tiny_llama.py --out /tmp/tiny-llama \
      [--dataset /tmp/mapper-ds] [--taxonomy pillars-detectors/taxonomy.yaml] [--seed 0]
"""

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import safetensors
import safetensors.numpy
import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chat_format import (  # noqa: E402  (needs the path above)
    BOS_TOKEN,
    CHAT_TEMPLATE,
    IM_END,
    IM_START,
    SPECIAL_TOKENS,
    SYSTEM_PROMPT,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TAXONOMY = REPO_ROOT / "pillars-detectors" / "taxonomy.yaml"

# Architecture. Small enough to train on one CPU thread, large enough to be a
# "real" Llama: GQA (kv heads < heads), RoPE, SwiGLU MLP, RMSNorm, untied head.
HIDDEN = 64
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
INTERMEDIATE = 128
VOCAB_TARGET = 512
MAX_POSITIONS = 512
ROPE_THETA = 10000.0
RMS_EPS = 1e-5
INIT_STD = 0.02


def taxonomy_labels(path):
    """Label names from taxonomy.yaml, read with a regex so PyYAML isn't needed."""
    if not path or not Path(path).is_file():
        return []
    text = Path(path).read_text(encoding="utf-8")
    return re.findall(r"^\s*-\s*name:\s*([^\s#]+)", text, flags=re.MULTILINE)


def dataset_texts(dataset_dir):
    """Instruction and response strings of train.jsonl (and validation.jsonl).

    The validation split is included on purpose: it only shapes which byte pairs
    get merged (tokenizer compactness), never the model weights.
    """
    texts = []
    if not dataset_dir:
        return texts
    for name in ("train.jsonl", "validation.jsonl"):
        path = Path(dataset_dir) / name
        if not path.is_file():
            continue
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                ex = json.loads(line)
                texts.append(ex["instruction"])
                texts.append(ex["response"])
    return texts


def build_corpus(labels, texts):
    """Training corpus for the BPE tokenizer, in a fixed order.

    Labels are repeated, and also given in their `{"label":"..."}` answer form,
    so that every taxonomy label gets short token sequences even without a
    dataset. The chat roles and the system prompt are included so the prompt
    scaffolding is compact too.
    """
    corpus = []
    for _ in range(8):
        corpus.extend(labels)
        corpus.extend(json.dumps({"label": lab}, separators=(",", ":"))
                      for lab in labels)
    for _ in range(32):
        corpus.append(SYSTEM_PROMPT)
        corpus.extend(["system\n", "user\n", "assistant\n"])
    corpus.extend(texts)
    return corpus


def train_tokenizer(corpus, vocab_size):
    """Byte-level BPE (GPT-2 / Llama-3 style pre-tokenization), special tokens 0..2.

    Byte-level means any input is representable (no <unk>), which matters because
    detector labels can contain arbitrary characters.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                 use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, f"special token {t} is not id {i}"
    return tok


def random_weights(vocab_size, seed):
    """HF Llama tensor names -> float32 arrays, N(0, 0.02), norms at 1.

    Drawn in a fixed order from one seeded generator so the file is reproducible.
    Shapes follow nn.Linear, i.e. (out_features, in_features).
    """
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return (rng.standard_normal(shape) * INIT_STD).astype(np.float32)

    w = {"model.embed_tokens.weight": normal(vocab_size, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = normal(HEADS * HEAD_DIM, HIDDEN)
        w[p + "self_attn.k_proj.weight"] = normal(KV_HEADS * HEAD_DIM, HIDDEN)
        w[p + "self_attn.v_proj.weight"] = normal(KV_HEADS * HEAD_DIM, HIDDEN)
        w[p + "self_attn.o_proj.weight"] = normal(HIDDEN, HEADS * HEAD_DIM)
        w[p + "mlp.gate_proj.weight"] = normal(INTERMEDIATE, HIDDEN)
        w[p + "mlp.up_proj.weight"] = normal(INTERMEDIATE, HIDDEN)
        w[p + "mlp.down_proj.weight"] = normal(HIDDEN, INTERMEDIATE)
        w[p + "input_layernorm.weight"] = np.ones(HIDDEN, dtype=np.float32)
        w[p + "post_attention_layernorm.weight"] = np.ones(HIDDEN,
                                                           dtype=np.float32)
    w["model.norm.weight"] = np.ones(HIDDEN, dtype=np.float32)
    w["lm_head.weight"] = normal(vocab_size, HIDDEN)
    return w


def model_config(vocab_size, bos_id, eos_id, pad_id):
    """config.json. Carries every field mistral.rs's llama `Config` requires
    (hidden_act, sizes, rms_norm_eps, rope_theta, max_position_embeddings,
    tie_word_embeddings) plus what transformers expects."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": INIT_STD,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": MAX_POSITIONS,
        "mlp_bias": False,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "pretraining_tp": 1,
        "rms_norm_eps": RMS_EPS,
        "rope_scaling": None,
        "rope_theta": ROPE_THETA,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": vocab_size,
    }


def tokenizer_config(tok):
    """tokenizer_config.json: what AutoTokenizer and mistral.rs read.

    mistral.rs takes `eos_token` plus `<|im_end|>` (found in vocab and template)
    as stop tokens, and `chat_template` from here when no chat_template.jinja
    exists. Every field of `added_tokens_decoder` is spelt out because
    mistral.rs deserializes them as required fields.
    """
    added = {
        str(tok.token_to_id(t)): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in SPECIAL_TOKENS
    }
    return {
        "added_tokens_decoder": added,
        "additional_special_tokens": [IM_START],
        "bos_token": BOS_TOKEN,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END,
        "model_max_length": MAX_POSITIONS,
        "pad_token": BOS_TOKEN,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def write_json(path, obj):
    """Stable, diff-friendly JSON (sorted keys, trailing newline)."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n",
                    encoding="utf-8")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path,
                    help="model directory to create (files are overwritten)")
    ap.add_argument("--dataset", type=Path, default=None,
                    help="directory with train.jsonl/validation.jsonl "
                         "(from `mapper dataset build`), used as tokenizer corpus")
    ap.add_argument("--taxonomy", type=Path, default=DEFAULT_TAXONOMY,
                    help="taxonomy.yaml whose label names seed the tokenizer "
                         "(default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="weight seed")
    ap.add_argument("--vocab-size", type=int, default=VOCAB_TARGET,
                    help="BPE vocabulary size, special tokens included")
    args = ap.parse_args(argv)

    labels = taxonomy_labels(args.taxonomy)
    texts = dataset_texts(args.dataset)
    if not labels and not texts:
        ap.error("no tokenizer corpus: taxonomy not found and no --dataset")
    if args.dataset and not texts:
        ap.error(f"no train.jsonl/validation.jsonl in {args.dataset}")
    if not labels:
        print(f"warning: no labels read from {args.taxonomy}", file=sys.stderr)

    corpus = build_corpus(labels, texts)
    tok = train_tokenizer(corpus, args.vocab_size)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    bos_id = tok.token_to_id(BOS_TOKEN)
    eos_id = tok.token_to_id(IM_END)

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"), pretty=True)

    weights = random_weights(vocab_size, args.seed)
    safetensors.numpy.save_file(weights, str(out / "model.safetensors"),
                                metadata={"format": "pt"})
    # safetensors creates the file 0600; a model served by another user (a
    # container) must be able to read it.
    (out / "model.safetensors").chmod(0o644)
    n_params = int(sum(a.size for a in weights.values()))

    write_json(out / "config.json",
               model_config(vocab_size, bos_id, eos_id, bos_id))
    write_json(out / "generation_config.json", {
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": bos_id,
    })
    write_json(out / "tokenizer_config.json", tokenizer_config(tok))
    write_json(out / "special_tokens_map.json", {
        "additional_special_tokens": [IM_START],
        "bos_token": BOS_TOKEN,
        "eos_token": IM_END,
        "pad_token": BOS_TOKEN,
    })

    # How compactly the labels tokenize, the point of training the tokenizer.
    lab_lens = [len(tok.encode(json.dumps({"label": lab},
                                          separators=(",", ":"))).ids)
                for lab in labels]
    files = sorted(p.name for p in out.iterdir()
                   if p.is_file() and p.name != "tiny_model_info.json")
    info = {
        "seed": args.seed,
        "parameters": n_params,
        "vocab_size": vocab_size,
        "corpus_lines": len(corpus),
        "taxonomy_labels": len(labels),
        "dataset_texts": len(texts),
        "answer_tokens_mean": (round(sum(lab_lens) / len(lab_lens), 2)
                               if lab_lens else None),
        "answer_tokens_max": max(lab_lens) if lab_lens else None,
        "versions": {
            "numpy": np.__version__,
            "safetensors": safetensors.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "sha256": {name: sha256(out / name) for name in files},
    }
    write_json(out / "tiny_model_info.json", info)

    total = sum((out / name).stat().st_size for name in files)
    print(f"wrote {out}: {n_params} parameters, vocab {vocab_size}, "
          f"{total / 1e6:.2f} MB; answer JSON is {info['answer_tokens_mean']} "
          f"tokens on average (max {info['answer_tokens_max']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
