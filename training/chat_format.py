"""Prompt format shared by the tiny-model generator, the trainer and the runtime.

Kept in one dependency-free module because three parties must agree on it byte for
byte: the tokenizer corpus of the tiny smoke model (so the prompt tokenizes
compactly), the LoRA trainer (which builds the training text from it), and the
Rust runtime (which must send the very same system prompt through mistral.rs, or
the adapter sees a prompt it was never trained on). If SYSTEM_PROMPT changes,
retrain the adapter and change the runtime in the same commit.
"""

# The system turn of every training and inference conversation. The user turn is
# the dataset's `instruction` (see src/dataset/mod.rs `instruction()`), the
# assistant turn its `response`, i.e. exactly `{"label":"<taxonomy label>"}`.
SYSTEM_PROMPT = (
    "You map AI-safety detector outputs to a canonical taxonomy. "
    'Answer with JSON only: {"label":"<taxonomy label>"}'
)

# Special tokens of the tiny model, in id order (0, 1, 2). `<|im_end|>` is the
# end-of-turn and EOS token; mistral.rs also recognises it by name as an
# alternate EOS when the chat template contains it.
BOS_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [BOS_TOKEN, IM_START, IM_END]

# ChatML-style template. Written on one line with explicit '\n' literals so that
# HF's and mistral.rs's jinja settings (trim_blocks / lstrip_blocks) cannot change
# the rendered text. Works in both Jinja2 (transformers) and minijinja
# (mistral.rs): it only uses `for`, `if`, string concatenation and indexing.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def messages_for(instruction, response=None, system_prompt=SYSTEM_PROMPT):
    """The chat messages for one example; the assistant turn only when given."""
    msgs = [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": instruction},
    ]
    if response is not None:
        msgs.append({"role": "assistant", "content": response})
    return msgs
