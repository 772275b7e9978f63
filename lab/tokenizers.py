"""Train tokenizers (byte-level BPE, WordPiece, Unigram) with Hugging Face `tokenizers`, give them the
lab's chat template, and measure them on held-out text.

The result is a plain `PreTrainedTokenizerFast`: `save_pretrained` writes a folder that
`AutoTokenizer.from_pretrained` loads with no lab code.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from lab.errors import UserError

KINDS = ("bpe", "wordpiece", "unigram")

BOS = EOS = "<|endoftext|>"  # one document separator, as GPT-2: a document starts after it
PAD, UNK, MASK = "<|pad|>", "<|unk|>", "<|mask|>"
SYSTEM, USER, ASSISTANT, END = CHAT_TOKENS = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = [EOS, PAD, UNK, MASK, *CHAT_TOKENS]
# What closes an assistant turn, in the lab's template and in the ChatML one of earlier lab runs and of
# many hub models; a tokenizer with neither ends its turns with eos.
END_OF_TURN = (END, "<|im_end|>")

# The lab's chat template: one token per role, the turn right after it, <|end|> closing it, nothing in
# between: a tiny model answers by copying the question's subject, and copies worse with every token between
# them (ChatML's long headers; bench/RESULTS.md, "a compact chat template"). Each turn starts with a space, so
# its first word is the token it is mid-sentence (" Zitu"), the form the base model has read it in.
# The {% generation %} markers let transformers return an assistant-token mask, which is what TRL's
# `assistant_only_loss` trains on; <|end|> sits inside them so the model learns to stop. bos_token opens
# the conversation because every pretraining document began with it.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ('system', 'user', 'assistant') %}"
    "{{ raise_exception('unknown role ' + message['role'] + ': the lab template knows system, user and assistant') }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ ' ' + message['content'] + '<|end|>' }}{% endgeneration %}"
    "{% else %}"
    "{{ ' ' + message['content'] + '<|end|>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def end_of_turn_id(tokenizer) -> int:
    """The token that ends an assistant's turn for this tokenizer's template (eos if it has no own one)."""
    for token in END_OF_TURN:
        i = tokenizer.convert_tokens_to_ids(token)
        if isinstance(i, int) and i != tokenizer.unk_token_id:
            return i
    return tokenizer.eos_token_id


def stop_ids(tokenizer, configured=None, end_of_turn: bool = True) -> list[int]:
    """The ids generation stops at: eos, the end of an assistant's turn (unless end_of_turn=False, for raw
    text), and any a model's generation config already names (`configured`: an id or a list of ids; a hub
    model may stop at several, e.g. Llama 3's <|eot_id|> beside its eos)."""
    ids = {tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])}
    if end_of_turn:
        ids.add(end_of_turn_id(tokenizer))
    return sorted(i for i in ids if i is not None)


def _backend(kind: str, vocab_size: int, min_frequency: int):
    if kind == "bpe":
        # Byte-level: every string round-trips exactly and nothing is ever unknown.
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=SPECIAL_TOKENS,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    elif kind == "wordpiece":
        # BERT's scheme: words split on whitespace and punctuation, sub-words marked with '##'.
        # Whitespace is not kept, so decoding normalises spacing; unseen characters become <|unk|>.
        tok = Tokenizer(models.WordPiece(unk_token=UNK))
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS, show_progress=False
        )
    elif kind == "unigram":
        # SentencePiece's scheme: spaces become '▁' so they survive the round trip.
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token=UNK, shrinking_factor=0.75,
            show_progress=False,
        )
    else:
        raise UserError(f"unknown tokenizer kind '{kind}': choose one of {', '.join(KINDS)}")
    return tok, trainer


def train_tokenizer(texts: Iterable[str], kind: str = "bpe", vocab_size: int = 2048, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a tokenizer of `kind` on `texts` and wrap it as a transformers tokenizer with the chat template."""
    if vocab_size < len(SPECIAL_TOKENS) + 64:
        raise UserError(f"vocab_size {vocab_size} is too small: use at least {len(SPECIAL_TOKENS) + 64}")
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise UserError("no text to train the tokenizer on: the data is empty")
    tok, trainer = _backend(kind, vocab_size, min_frequency)
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    bos_id = tok.token_to_id(BOS)
    # Every encoded text starts with the document separator, as every training document did.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return wrap(tok)


def wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        mask_token=MASK,
        extra_special_tokens=list(CHAT_TOKENS),
        model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def ensure_chat_template(tokenizer) -> bool:
    """Give `tokenizer` the lab's template if it has none. Returns True when one was added."""
    if getattr(tokenizer, "chat_template", None):
        return False
    missing = [t for t in CHAT_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.eos_token or USER
    tokenizer.chat_template = CHAT_TEMPLATE
    return True


def stats(tokenizer, texts: list[str]) -> dict:
    """How well `tokenizer` compresses `texts` (use held-out text): characters and words per token,
    the share of the vocabulary it uses, and how often it falls back to the unknown token."""
    n_chars = n_words = n_tokens = n_unk = 0
    used: set[int] = set()
    unk_id = tokenizer.unk_token_id
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        n_chars += len(text)
        n_words += len(text.split())
        n_tokens += len(ids)
        used.update(ids)
        if unk_id is not None:
            n_unk += sum(1 for i in ids if i == unk_id)
    n_tokens = max(n_tokens, 1)
    return {
        "tokens": n_tokens,
        "chars_per_token": n_chars / n_tokens,
        "words_per_token": n_words / n_tokens,
        "vocab_size": len(tokenizer),
        "vocab_used": len(used) / len(tokenizer),
        "unknown_rate": n_unk / n_tokens,
    }



def vocab_shortfall(tokenizer, asked: int, min_frequency: int) -> str | None:
    """Why a trained vocabulary is smaller than asked, in words (None when it is not): a trainer stops when the
    text has nothing more to learn, which on a small corpus comes before the size asked for."""
    learnt = len(tokenizer)
    if learnt >= asked:
        return None
    return (f"vocabulary {learnt:,} of the {asked:,} asked: the text holds no more pieces frequent enough to learn "
            f"(min_frequency {min_frequency}), so the trainer stopped early. More text, or (BPE, WordPiece) a lower "
            "min_frequency, learns more")


@functools.lru_cache(maxsize=16)
def _loaded(ref: str):
    from lab import models, stages

    if ref in KINDS:  # a kind by name: trained on the toy world's text, at the tokenizer stage's defaults
        train, _ = stages.text_splits("world")
        return train_tokenizer(train, kind=ref)
    from transformers import AutoTokenizer

    path, _ = models.resolve(ref)
    return models.load_pretrained(AutoTokenizer, path)


def load(ref: str) -> PreTrainedTokenizerFast:
    """A tokenizer to look at: a kind ("bpe", "wordpiece", "unigram", trained on the toy world), a run (a
    tokenizer run's, or the tokenizer a model run saved), a local folder, or a hub id when online."""
    return _loaded(ref.strip())


def tokenize_view(tokenizer, text: str) -> dict:
    """`text` as `tokenizer` cuts it: each token's id, its piece of the text and where it lies (from the offsets,
    so a byte-level 'Ġ' shows as the space it stands for, and what a tokenizer drops, such as WordPiece's
    spaces, lies between tokens) and whether it is unknown; with the statistics of `stats`, tokens per word beside."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    unk = tokenizer.unk_token_id
    tokens = [{"id": i, "text": text[a:b], "start": a, "end": b, "unknown": i == unk}
              for i, (a, b) in zip(encoded["input_ids"], encoded["offset_mapping"])]
    measured = stats(tokenizer, [text])
    words = max(len(text.split()), 1)
    return {"tokens": tokens, "stats": {**measured, "tokens_per_word": len(tokens) / words, "distinct_tokens": len({t["id"] for t in tokens})}}
