"""Tokenizers: each kind trains, round-trips text, carries a chat template with generation markers,
and saves a folder that plain transformers loads."""

from __future__ import annotations

import json

import pytest
from conftest import last_line, llm_lab, read_jsonl
from transformers import AutoTokenizer

from lab.stages import text_splits
from lab.tokenizers import END, stats, stop_ids, train_tokenizer
from lab.world import build_world
from lab.world.text import CHAT_LOG


@pytest.fixture(scope="module")
def world_text():
    train, heldout = text_splits("world")
    return train, heldout


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram"])
def test_each_kind_trains_and_round_trips(world_text, kind, tmp_path):
    train, heldout = world_text
    tok = train_tokenizer(train, kind=kind, vocab_size=1000)
    assert 500 < len(tok) <= 1000
    for text in heldout[:20]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        back = tok.decode(ids)
        if kind == "wordpiece":  # WordPiece keeps the characters, not the spacing
            assert "".join(back.split()) == "".join(text.split())
        else:
            assert back == text
    s = stats(tok, heldout)
    assert s["chars_per_token"] > 2.0  # it compresses: a trained vocabulary beats characters
    assert 0 < s["vocab_used"] <= 1 and s["unknown_rate"] < 0.01

    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(heldout[0])["input_ids"] == tok(heldout[0])["input_ids"]


def test_chat_template_marks_the_assistant_turn_and_its_end(world_text):
    tok = train_tokenizer(world_text[0], kind="bpe", vocab_size=800)
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "What is the capital of Zorbia?"},
        {"role": "assistant", "content": "The capital of Zorbia is Velmora."},
    ]
    assert "{% generation %}" in tok.chat_template
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == ("<|endoftext|><|system|> You are helpful.<|end|><|user|> What is the capital of Zorbia?<|end|>"
                    "<|assistant|> The capital of Zorbia is Velmora.<|end|>")
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assistant = tok.decode([i for i, m in zip(ids, mask) if m])
    assert assistant == " The capital of Zorbia is Velmora." + END  # the answer and its end-of-turn, nothing else
    prompt = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|user|> What is the capital of Zorbia?<|end|><|assistant|>")
    with pytest.raises(Exception, match="unknown role tool"):
        tok.apply_chat_template([{"role": "tool", "content": "42"}], tokenize=False)


def test_a_turn_starts_with_the_token_its_first_word_has_mid_sentence(world_text):
    """The answer's first word is copied from the question: it must be the same token there."""
    tok = train_tokenizer(world_text[0], kind="bpe", vocab_size=800)
    name = build_world().people[0].name
    ids = tok.apply_chat_template([{"role": "user", "content": f"Where does {name} live?"},
                                   {"role": "assistant", "content": f"{name} lives far away."}], tokenize=True, return_dict=True)["input_ids"]
    name_ids = tok(f" {name}", add_special_tokens=False)["input_ids"]
    assert [ids[i:i + len(name_ids)] == name_ids for i in range(len(ids))].count(True) == 2


def test_the_worlds_chat_logs_are_the_chat_template(world_text):
    """Pretraining reads the world's questions and answers in the very format SFT and the evals use."""
    tok = train_tokenizer(world_text[0], kind="bpe", vocab_size=800)
    rendered = tok.apply_chat_template([{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}], tokenize=False)
    assert rendered == tok.bos_token + CHAT_LOG.format(q="Q?", a="A.")
    logs = [d for d in world_text[0] if "<|assistant|>" in d]
    assert logs and all(tok.convert_tokens_to_ids(END) in tok(d)["input_ids"] for d in logs[:5])


def test_tokenizer_stage_from_the_cli(store):
    proc = llm_lab("train", "tokenizer", "--kind", "unigram", "--vocab-size", "600")
    run_dir = store / last_line(proc)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    row = read_jsonl(run_dir / "metrics.jsonl")[-1]
    assert row["chars_per_token"] > 1.5 and row["vocab_size"] == len(AutoTokenizer.from_pretrained(run_dir / "tokenizer"))
    # a pretrain run can use it, and names it as its parent
    proc = llm_lab("train", "pretrain", "--preset", "nano", "--tokenizer", run_dir.name, "--max-steps", "3", "--sample-every", "0", "--eval-every", "0")
    child = json.loads((store / last_line(proc) / "run.json").read_text())
    assert child["status"] == "completed" and child["parent"] == run_dir.name


def test_generation_stops_at_eos_the_end_of_turn_and_every_stop_a_model_already_names(world_text):
    tok = train_tokenizer(world_text[0], kind="bpe", vocab_size=800)
    eos, end = tok.eos_token_id, tok.convert_tokens_to_ids(END)
    assert stop_ids(tok) == sorted({eos, end})
    assert stop_ids(tok, [eos, 700]) == sorted({eos, end, 700})  # a hub model's own stops are kept
    assert stop_ids(tok, 700, end_of_turn=False) == sorted({eos, 700})  # raw text may hold the end-of-turn token
