#!/usr/bin/env python3
"""LoRA fine-tuning of the mapper model on `mapper dataset build` output.

Why a plain PyTorch loop rather than transformers' Trainer or TRL: the recipe is
small (one adapter, one loss), the loop makes the "loss only on the answer"
masking explicit and reviewable, and it needs nothing beyond torch, transformers
and peft.

Recipe (the project's production settings; all flags):
  LoRA r=16, alpha=32, dropout 0.05, on q_proj/k_proj/v_proj; AdamW lr 2e-4,
  linear schedule with 3% warm-up; 1-2 epochs; max length 256 tokens; the loss
  covers only the assistant's answer `{"label":"..."}` and its end-of-turn token.
  Production base: Llama-3-8B-Instruct on a GPU in bf16. Smoke base: the tiny
  random Llama from make_tiny_llama.py, on a CPU in float32.

Prompt: the base model's own chat template, with system = chat_format.SYSTEM_PROMPT,
user = the example's `instruction`, assistant = its `response`. The prompt is
tokenized on its own (with the generation prompt) and the answer appended, which is
exactly what the runtime does: it renders the prompt and lets the model generate.

Outputs (in --out):
  adapter_config.json, adapter_model.safetensors   PEFT format; target_modules is a
      JSON list (mistral.rs 0.8.1 cannot parse PEFT's regex-string form)
  metrics.json   losses, accuracy, counts, timings, versions, the exact settings
Optional:
  --hub-cache DIR  also lay the adapter out as a Hugging Face hub cache entry,
      because mistral.rs 0.8.1 resolves LoRA adapter ids only through the hub
      cache (HF_HUB_CACHE), never as a local path:
        DIR/models--<id with / -> -->/refs/main              "<revision>", no newline
        DIR/models--<...>/snapshots/<revision>/adapter_config.json
        DIR/models--<...>/snapshots/<revision>/adapter_model.safetensors
  --merged-out DIR  also save the base with the adapter merged in
      (merge_and_unload) plus the tokenizer files: a plain model directory that
      mistral.rs loads with TextModelBuilder, no LoRA machinery involved.

Example (smoke, CPU):
  python training/train_lora.py --base /tmp/tiny-llama --data /tmp/mapper-ds \
      --out /tmp/mapper-lora --epochs 1 --device cpu --threads 1 \
      --hub-cache /tmp/hf-hub --adapter-id local/mapper-lora --revision v0.1.0
"""

import argparse
import hashlib
import json
import math
import os
import platform
import random
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chat_format import SYSTEM_PROMPT, messages_for  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TAXONOMY = REPO_ROOT / "pillars-detectors" / "taxonomy.yaml"
IGNORE = -100  # label value the causal-LM loss skips
# End-of-turn tokens of common chat formats; whichever exist in the vocabulary
# stop generation and terminate the trained answer.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>")
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


# ----------------------------------------------------------------------- args

def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="LoRA fine-tuning for the llama-mapper model path.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--base", required=True,
                    help="base model directory (or hub id already in the cache)")
    ap.add_argument("--data", required=True, type=Path,
                    help="dataset directory with train.jsonl and validation.jsonl")
    ap.add_argument("--out", required=True, type=Path,
                    help="adapter output directory")
    ap.add_argument("--epochs", type=float, default=1.0,
                    help="passes over train.jsonl (recipe: 1-2)")
    ap.add_argument("--max-steps", type=int, default=0,
                    help="stop after this many optimizer steps (0 = no cap); "
                         "for smoke runs")
    ap.add_argument("--batch-size", type=int, default=8,
                    help="examples per micro-batch")
    ap.add_argument("--grad-accum", type=int, default=1,
                    help="micro-batches per optimizer step")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--warmup-ratio", type=float, default=0.03)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--max-length", type=int, default=256,
                    help="prompt + answer tokens; longer examples are skipped")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-alpha", type=int, default=32)
    ap.add_argument("--lora-dropout", type=float, default=0.05)
    ap.add_argument("--target-modules", default="q_proj,k_proj,v_proj",
                    help="comma-separated module names to adapt")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtype", choices=["auto", "float32", "bfloat16"],
                    default="auto",
                    help="base weights dtype; auto = bfloat16 on cuda, "
                         "float32 on cpu")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (0 = torch default)")
    ap.add_argument("--gradient-checkpointing", action="store_true",
                    help="trade compute for memory (large bases)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--system-prompt", default=SYSTEM_PROMPT,
                    help="system turn; the runtime must send the same text")
    ap.add_argument("--log-every", type=int, default=25,
                    help="print the mean train loss every N optimizer steps")
    ap.add_argument("--eval-examples", type=int, default=200,
                    help="validation examples for loss and greedy accuracy "
                         "(0 = skip evaluation)")
    ap.add_argument("--eval-batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--taxonomy", type=Path, default=DEFAULT_TAXONOMY,
                    help="taxonomy.yaml, to count answers naming a real label")
    ap.add_argument("--hub-cache", type=Path, default=None,
                    help="also write the adapter as a hub cache entry here "
                         "(point HF_HUB_CACHE at it for mistral.rs)")
    ap.add_argument("--adapter-id", default="local/mapper-lora",
                    help="hub id of the adapter in --hub-cache")
    ap.add_argument("--revision", default=None,
                    help="adapter version, e.g. v1.2.0 (required with "
                         "--hub-cache); becomes the snapshot name")
    ap.add_argument("--overwrite-revision", action="store_true",
                    help="replace an existing, different snapshot of --revision")
    ap.add_argument("--merged-out", type=Path, default=None,
                    help="also save base+adapter merged, with tokenizer files")
    args = ap.parse_args(argv)

    if args.hub_cache is not None:
        if not args.revision:
            ap.error("--hub-cache needs --revision (e.g. v0.1.0)")
        if not HUB_ID_RE.match(args.adapter_id) or ".." in args.adapter_id:
            ap.error(f"--adapter-id {args.adapter_id!r} is not a hub id "
                     "like 'local/mapper-lora'")
        if not REVISION_RE.match(args.revision):
            ap.error(f"--revision {args.revision!r} must be one path segment "
                     "of letters, digits, '.', '_', '+', '-'")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no GPU")
    if args.epochs <= 0 and args.max_steps <= 0:
        ap.error("--epochs must be > 0 (or give --max-steps)")
    for name in ("batch_size", "grad_accum", "max_length", "lora_r"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    args.target_modules = [m.strip() for m in args.target_modules.split(",")
                           if m.strip()]
    return args


# ----------------------------------------------------------------------- data

def read_jsonl(path):
    """Examples as dicts with `instruction` and `response`; [] if absent."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            row = json.loads(line)
            if not isinstance(row.get("instruction"), str) or \
                    not isinstance(row.get("response"), str):
                raise ValueError(f"{path}:{n}: needs string instruction/response")
            rows.append(row)
    return rows


def gold_label(response):
    """The label in a dataset response `{"label":"..."}`."""
    return json.loads(response)["label"]


def taxonomy_labels(path):
    """Label names from taxonomy.yaml (regex, so PyYAML isn't needed)."""
    if not path or not Path(path).is_file():
        return []
    text = Path(path).read_text(encoding="utf-8")
    return re.findall(r"^\s*-\s*name:\s*([^\s#]+)", text, flags=re.MULTILINE)


def stop_token_ids(tok, model):
    """Token ids that end the assistant turn: the tokenizer's EOS, the model's
    generation_config EOS ids, and known end-of-turn tokens in the vocab."""
    ids = []
    if tok.eos_token_id is not None:
        ids.append(tok.eos_token_id)
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    if gen_eos is not None:
        ids.extend(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
    vocab = tok.get_vocab()
    ids.extend(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    return sorted(set(int(i) for i in ids))


class Encoder:
    """Turns an example into (prompt ids, answer ids) with the chat template.

    The answer is what the template puts after the generation prompt when the
    assistant message is present (e.g. `{"label":"X"}<|im_end|>\\n` for ChatML,
    `{"label":"X"}<|eot_id|>` for Llama 3), cut right after the first stop
    token: generation ends there, so later tokens would be trained for nothing.
    """

    def __init__(self, tok, stop_ids, system_prompt):
        self.tok = tok
        self.stop_ids = set(stop_ids)
        self.system_prompt = system_prompt

    def render(self, instruction, response=None):
        return self.tok.apply_chat_template(
            messages_for(instruction, response, self.system_prompt),
            tokenize=False, add_generation_prompt=response is None)

    def ids(self, text):
        # The template already contains any BOS; don't add special tokens twice.
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, instruction):
        return self.ids(self.render(instruction))

    def encode(self, example):
        prompt_text = self.render(example["instruction"])
        full_text = self.render(example["instruction"], example["response"])
        if full_text.startswith(prompt_text):
            answer_text = full_text[len(prompt_text):]
        else:  # unusual template: fall back to answer + EOS
            answer_text = example["response"] + (self.tok.eos_token or "")
        answer = self.ids(answer_text)
        for i, t in enumerate(answer):
            if t in self.stop_ids:
                answer = answer[:i + 1]
                break
        else:
            answer.append(min(self.stop_ids))
        return self.ids(prompt_text), answer


def encode_all(encoder, rows, max_length):
    """Encoded examples and the number skipped for exceeding max_length.

    Skipped rather than truncated: cutting the prompt would drop the system turn
    or the raw label, and cutting the answer would teach a broken JSON."""
    out, skipped = [], 0
    for row in rows:
        prompt, answer = encoder.encode(row)
        if len(prompt) + len(answer) > max_length:
            skipped += 1
            continue
        out.append((prompt, answer))
    return out, skipped


def collate(batch, pad_id):
    """Right-padded input ids, attention mask and labels (IGNORE except on the
    answer tokens)."""
    width = max(len(p) + len(a) for p, a in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for i, (p, a) in enumerate(batch):
        seq = p + a
        ids[i, :len(seq)] = torch.tensor(seq)
        mask[i, :len(seq)] = 1
        labels[i, len(p):len(seq)] = torch.tensor(a)
    return ids, mask, labels


# ------------------------------------------------------------------ training

def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def lr_at(step, total, warmup, base_lr):
    """Linear warm-up then linear decay to 0 (the usual LoRA schedule)."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return base_lr * max(0.0, (total - step) / max(1, total - warmup))


def train(model, data, args, device, pad_id):
    """The training loop. Returns (loss history, summary dict)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    micro_per_epoch = math.ceil(len(data) / args.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / args.grad_accum)
    total = math.ceil(steps_per_epoch * args.epochs) if args.epochs > 0 else 0
    if args.max_steps > 0:
        total = min(total, args.max_steps) if total else args.max_steps
    total = max(1, total)
    warmup = max(1, int(total * args.warmup_ratio))
    print(f"training: {len(data)} examples, batch {args.batch_size} x "
          f"accum {args.grad_accum}, {steps_per_epoch} steps/epoch, "
          f"{total} optimizer steps, warm-up {warmup}", flush=True)

    rng = random.Random(args.seed)
    history, window, tokens = [], [], 0
    step, epoch, micro = 0, 0, 0
    t0 = time.perf_counter()
    t_log = t0
    model.train()
    opt.zero_grad(set_to_none=True)
    while step < total:
        order = list(range(len(data)))
        rng.shuffle(order)
        for start in range(0, len(order), args.batch_size):
            batch = [data[i] for i in order[start:start + args.batch_size]]
            ids, mask, labels = collate(batch, pad_id)
            ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
            out = model(input_ids=ids, attention_mask=mask, labels=labels,
                        use_cache=False)
            (out.loss / args.grad_accum).backward()
            window.append(out.loss.item())
            tokens += int(mask.sum())
            micro += 1
            if micro % args.grad_accum:
                continue
            if args.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, warmup, args.lr)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step % args.log_every == 0 or step == total:
                now = time.perf_counter()
                mean = sum(window) / len(window)
                pos = epoch + (start + len(batch)) / len(order)
                history.append({"step": step, "epoch": round(pos, 3),
                                "loss": round(mean, 5)})
                print(f"step {step:5d}/{total}  epoch {history[-1]['epoch']:.2f}  "
                      f"loss {mean:.4f}  lr {opt.param_groups[0]['lr']:.2e}  "
                      f"{(now - t_log) / len(window) * args.grad_accum:.3f}s/step",
                      flush=True)
                window, t_log = [], now
            if step >= total:
                break
        epoch += 1
    secs = time.perf_counter() - t0
    return history, {
        "optimizer_steps": step,
        "epochs_completed": round(step / steps_per_epoch, 3),
        "train_seconds": round(secs, 2),
        "tokens_seen": tokens,
        "warmup_steps": warmup,
    }


# ---------------------------------------------------------------- evaluation

@torch.inference_mode()
def eval_loss(model, data, args, device, pad_id):
    """Mean per-token answer loss (teacher-forced) over `data`."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(data), args.eval_batch_size):
        ids, mask, labels = collate(data[start:start + args.eval_batch_size], pad_id)
        n = int((labels[:, 1:] != IGNORE).sum())
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                    labels=labels.to(device), use_cache=False)
        total += out.loss.item() * n
        count += n
    return total / max(1, count)


def parse_answer(text):
    """The label in a generated answer, or None. Accepts the first {...} object
    in case the model adds text around it."""
    text = text.strip()
    candidates = [text]
    m = re.search(r"\{.*?\}", text, flags=re.DOTALL)
    if m:
        candidates.append(m.group(0))
    for c in candidates:
        try:
            obj = json.loads(c)
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("label"), str):
            return obj["label"]
    return None


@torch.inference_mode()
def eval_generation(model, tok, encoder, rows, args, device, pad_id, stop_ids,
                    known_labels):
    """Greedy generation, left-padded batches; exact match on the label."""
    model.eval()
    # Passed as keyword overrides, not as a GenerationConfig object: transformers
    # 4.57 fills every field of a passed config that equals the library default
    # (do_sample=False included) from the model's generation_config.json, and
    # Llama-3-Instruct's says do_sample=True, temperature=0.6.
    gen_kwargs = dict(
        max_new_tokens=args.max_new_tokens, do_sample=False, num_beams=1,
        temperature=None, top_p=None, top_k=None,
        eos_token_id=stop_ids, pad_token_id=pad_id)
    correct = valid = known = 0
    samples = []
    for start in range(0, len(rows), args.eval_batch_size):
        chunk = rows[start:start + args.eval_batch_size]
        prompts = [encoder.prompt_ids(r["instruction"]) for r in chunk]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        out = model.generate(input_ids=ids.to(device),
                             attention_mask=mask.to(device),
                             **gen_kwargs)
        for row, seq in zip(chunk, out[:, width:].tolist()):
            text = tok.decode(seq, skip_special_tokens=True)
            pred = parse_answer(text)
            gold = gold_label(row["response"])
            valid += pred is not None
            known += pred in known_labels
            correct += pred == gold
            if len(samples) < 12:
                samples.append({"instruction": row["instruction"],
                                "gold": gold, "generated": text})
    n = len(rows)
    return {
        "examples": n,
        "exact_match": correct,
        "accuracy": round(correct / n, 4) if n else None,
        "valid_json": valid,
        "valid_json_rate": round(valid / n, 4) if n else None,
        "known_label": known,
        "known_label_rate": round(known / n, 4) if n else None,
        "samples": samples,
    }


# ------------------------------------------------------------------- outputs

def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def normalize_adapter_config(out_dir):
    """Make target_modules a sorted JSON list (PEFT may write a set in any
    order, or a regex string when given one; mistral.rs 0.8.1 accepts only a
    list) and check the tensor names mistral.rs looks for are present."""
    from safetensors import safe_open

    cfg_path = out_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    tm = cfg.get("target_modules")
    if not isinstance(tm, list):
        raise SystemExit(f"adapter_config.json target_modules is {tm!r}, "
                         "not a list; mistral.rs cannot load it")
    cfg["target_modules"] = sorted(tm)
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n",
                        encoding="utf-8")
    with safe_open(str(out_dir / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    n_a = sum(k.endswith(".lora_A.weight") for k in keys)
    n_b = sum(k.endswith(".lora_B.weight") for k in keys)
    if not keys or n_a != n_b or n_a != len(keys) // 2:
        raise SystemExit(f"unexpected adapter tensors: {keys[:4]}...")
    return {"target_modules": cfg["target_modules"], "tensors": len(keys),
            "example_key": sorted(keys)[0]}


def write_hub_cache(adapter_dir, cache_dir, adapter_id, revision, overwrite):
    """Lay the adapter out as a hub cache entry that hf-hub 0.4.3 (used by
    mistral.rs 0.8.1) resolves without network: it reads refs/main verbatim
    (no trim, hence no newline) as the snapshot name and only checks that
    snapshots/<rev>/<file> exists. Plain copies, not symlinks, so the tree can
    be copied or mounted anywhere. The snapshot is written to a temporary
    directory and renamed, and the ref is replaced atomically, so a reader
    never sees half an adapter."""
    repo_dir = cache_dir / ("models--" + adapter_id.replace("/", "--"))
    snap = repo_dir / "snapshots" / revision
    if snap.exists():
        same = all((snap / f).is_file() and
                   file_sha256(snap / f) == file_sha256(adapter_dir / f)
                   for f in ADAPTER_FILES)
        if not same and not overwrite:
            raise SystemExit(f"{snap} exists with different content; bump "
                             "--revision or pass --overwrite-revision")
    else:
        same = False
    if not same:
        tmp = snap.parent / f".{revision}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for f in ADAPTER_FILES:
            shutil.copyfile(adapter_dir / f, tmp / f)
        if snap.exists():
            shutil.rmtree(snap)
        os.replace(tmp, snap)
    refs = repo_dir / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    tmp_ref = refs / f".main.tmp-{os.getpid()}"
    tmp_ref.write_bytes(revision.encode("utf-8"))
    os.replace(tmp_ref, refs / "main")
    # Resolve it the way hf-hub does, as a check.
    rev = (refs / "main").read_text(encoding="utf-8")
    for f in ADAPTER_FILES:
        if not (repo_dir / "snapshots" / rev / f).is_file():
            raise SystemExit(f"hub cache check failed for {f}")
    return {"cache_dir": str(cache_dir), "adapter_id": adapter_id,
            "revision": revision, "snapshot": str(snap)}


def save_merged(peft_model, base, tok, out_dir):
    """merge_and_unload() the adapter into the base and save weights plus the
    base's tokenizer files, so mistral.rs can load it as an ordinary model."""
    merged = peft_model.merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir, safe_serialization=True)
    for f in out_dir.glob("*.safetensors"):
        f.chmod(0o644)  # safetensors writes 0600
    base_dir = Path(base)
    copied = []
    if base_dir.is_dir():
        # Byte-identical tokenizer files, so the merged model tokenizes exactly
        # like the base the adapter was trained on.
        for name in ("tokenizer.json", "tokenizer_config.json",
                     "special_tokens_map.json", "chat_template.jinja",
                     "chat_template.json", "generation_config.json"):
            if (base_dir / name).is_file():
                shutil.copyfile(base_dir / name, out_dir / name)
                copied.append(name)
    else:
        tok.save_pretrained(out_dir)
    return merged, copied


def versions():
    import peft
    import safetensors
    import tokenizers
    import transformers
    try:
        import huggingface_hub
        hub = huggingface_hub.__version__
    except ImportError:
        hub = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "huggingface_hub": hub,
    }


# ---------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    set_seed(args.seed)

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(
        args.dtype, torch.bfloat16 if args.device == "cuda" else torch.float32)

    if args.hub_cache is not None and not args.overwrite_revision:
        snap = (args.hub_cache / ("models--" + args.adapter_id.replace("/", "--"))
                / "snapshots" / args.revision)
        if snap.exists():
            print(f"warning: {snap} exists; it is kept only if this run "
                  "produces identical files (else pass --overwrite-revision "
                  "or bump --revision)", file=sys.stderr, flush=True)

    train_rows = read_jsonl(args.data / "train.jsonl")
    val_rows = read_jsonl(args.data / "validation.jsonl")
    if not train_rows:
        raise SystemExit(f"no training examples in {args.data / 'train.jsonl'}")

    tok = AutoTokenizer.from_pretrained(args.base)
    if tok.chat_template is None:
        raise SystemExit(f"{args.base} has no chat template")
    t_load = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.base, dtype=dtype)
    model.to(device)
    load_seconds = time.perf_counter() - t_load
    stop_ids = stop_token_ids(tok, model)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else stop_ids[0]
    encoder = Encoder(tok, stop_ids, args.system_prompt)

    train_data, train_skipped = encode_all(encoder, train_rows, args.max_length)
    if not train_data:
        raise SystemExit("every training example exceeds --max-length")
    eval_rows = []
    if args.eval_examples > 0 and val_rows:
        k = min(args.eval_examples, len(val_rows))
        picked = sorted(random.Random(args.seed).sample(range(len(val_rows)), k))
        eval_rows = [val_rows[i] for i in picked]
    eval_data, eval_skipped = encode_all(encoder, eval_rows, args.max_length)
    lens = [len(p) + len(a) for p, a in train_data]
    print(f"base {args.base}: {model.num_parameters()} parameters, {dtype}, "
          f"{device}; stop ids {stop_ids}, pad {pad_id}", flush=True)
    print(f"train {len(train_data)} (skipped {train_skipped} > {args.max_length} "
          f"tokens), sequence length mean {sum(lens) / len(lens):.1f} max "
          f"{max(lens)}; eval {len(eval_rows)} of {len(val_rows)} validation",
          flush=True)

    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})
    lora_cfg = LoraConfig(
        r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        target_modules=args.target_modules, bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora_cfg)
    trainable, total_params = model.get_nb_trainable_parameters()
    print(f"LoRA r={args.lora_r} alpha={args.lora_alpha} on "
          f"{args.target_modules}: {trainable} trainable of {total_params}",
          flush=True)

    val_loss_before = (eval_loss(model, eval_data, args, device, pad_id)
                       if eval_data else None)
    history, summary = train(model, train_data, args, device, pad_id)

    metrics_eval = None
    val_loss_after = None
    eval_seconds = None
    if eval_rows:
        t_eval = time.perf_counter()
        val_loss_after = eval_loss(model, eval_data, args, device, pad_id)
        known = set(taxonomy_labels(args.taxonomy)) or \
            {gold_label(r["response"]) for r in train_rows + val_rows}
        metrics_eval = eval_generation(model, tok, encoder, eval_rows, args,
                                       device, pad_id, stop_ids, known)
        eval_seconds = round(time.perf_counter() - t_eval, 2)
        print(f"validation loss {val_loss_before:.4f} -> {val_loss_after:.4f}; "
              f"greedy exact match {metrics_eval['exact_match']}/"
              f"{metrics_eval['examples']} = {metrics_eval['accuracy']:.3f}, "
              f"valid JSON {metrics_eval['valid_json']}, taxonomy label "
              f"{metrics_eval['known_label']} ({eval_seconds}s)", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    # safetensors writes 0600; the runtime may read as another user.
    (args.out / "adapter_model.safetensors").chmod(0o644)
    adapter_info = normalize_adapter_config(args.out)
    adapter_info["bytes"] = (args.out / "adapter_model.safetensors").stat().st_size
    print(f"adapter saved to {args.out} ({adapter_info['bytes']} bytes, "
          f"{adapter_info['tensors']} tensors)", flush=True)

    hub = None
    if args.hub_cache is not None:
        hub = write_hub_cache(args.out, args.hub_cache, args.adapter_id,
                              args.revision, args.overwrite_revision)
        print(f"hub cache entry {hub['snapshot']} (use HF_HUB_CACHE="
              f"{hub['cache_dir']}, adapter id {args.adapter_id})", flush=True)

    merged_info = None
    if args.merged_out is not None:
        probe = eval_data[:4] or train_data[:4]
        ids, mask, _ = collate(probe, pad_id)
        model.eval()
        with torch.inference_mode():
            before = model(input_ids=ids.to(device),
                           attention_mask=mask.to(device)).logits.float()
        merged, copied = save_merged(model, args.base, tok, args.merged_out)
        with torch.inference_mode():
            after = merged(input_ids=ids.to(device),
                           attention_mask=mask.to(device)).logits.float()
        diff = (before - after).abs().max().item()
        merged_info = {"dir": str(args.merged_out), "tokenizer_files": copied,
                       "max_abs_logit_diff_vs_adapter": diff}
        print(f"merged model saved to {args.merged_out} (max |logit diff| vs "
              f"adapter {diff:.2e})", flush=True)

    metrics = {
        "base": str(args.base),
        "data": str(args.data),
        "system_prompt": args.system_prompt,
        "settings": {
            "lora_r": args.lora_r, "lora_alpha": args.lora_alpha,
            "lora_dropout": args.lora_dropout,
            "target_modules": args.target_modules, "lr": args.lr,
            "warmup_ratio": args.warmup_ratio, "epochs": args.epochs,
            "max_steps": args.max_steps, "batch_size": args.batch_size,
            "grad_accum": args.grad_accum, "max_length": args.max_length,
            "device": args.device, "dtype": str(dtype).replace("torch.", ""),
            "threads": torch.get_num_threads(), "seed": args.seed,
        },
        "counts": {
            "train_examples": len(train_rows),
            "train_used": len(train_data),
            "train_skipped_too_long": train_skipped,
            "validation_examples": len(val_rows),
            "eval_examples": len(eval_rows),
            "eval_skipped_too_long_for_loss": eval_skipped,
            "trainable_parameters": trainable,
            "total_parameters": total_params,
        },
        "train": dict(summary,
                      final_loss=history[-1]["loss"] if history else None,
                      first_logged_loss=history[0]["loss"] if history else None,
                      history=history),
        "validation": {
            "loss_before": val_loss_before, "loss_after": val_loss_after,
            "generation": metrics_eval, "eval_seconds": eval_seconds,
        },
        "adapter": adapter_info,
        "hub_cache": hub,
        "merged": merged_info,
        "timing": {"model_load_seconds": round(load_seconds, 2),
                   "total_seconds": round(time.perf_counter() - t_start, 2)},
        "versions": versions(),
    }
    (args.out / "metrics.json").write_text(
        json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(f"metrics written to {args.out / 'metrics.json'} "
          f"(total {metrics['timing']['total_seconds']}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
