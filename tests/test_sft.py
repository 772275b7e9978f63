"""SFT as a user runs it: `llm-lab train sft` in a subprocess from a nano pretrain run, then the saved
model or adapter loaded and chatted with by plain transformers / PEFT."""

from __future__ import annotations

import json

import pytest
from conftest import last_line, llm_lab, read_jsonl, refused
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM, AutoTokenizer

from lab import evals
from lab.tokenizers import end_of_turn_id

FAST = ["--max-steps", "4", "--batch-size", "4", "--logging-steps", "2", "--kl-every", "2", "--sample-every", "4"]


def stops_at_end_of_turn(model, tokenizer) -> bool:
    """A saved model's own generation config ends an answer at the end of the assistant's turn."""
    eos = model.generation_config.eos_token_id
    return end_of_turn_id(tokenizer) in (eos if isinstance(eos, list) else [eos])


def answers_as_logged(model, tokenizer, run_dir) -> tuple[list[str], list[str]]:
    """(the saved model's greedy answers, the trained model's answers logged at the last step) to the
    last step's fixed prompts, asked in one batch as the job asked them: equal when what was saved is
    what was trained."""
    samples = read_jsonl(run_dir / "samples.jsonl")
    last = [s for s in samples if s["step"] == samples[-1]["step"]]
    return evals.chat(model, tokenizer, [s["prompt"] for s in last], max_new_tokens=48), [s["completion"] for s in last]


@pytest.mark.parametrize("mode", ["full", "lora", "lora-8bit", "lora-4bit"])
def test_each_mode_trains_and_saves_what_transformers_loads(nano_run, store, mode):
    proc = llm_lab("train", "sft", "--parent", nano_run.name, "--mode", mode, *FAST, "--data", "world")
    run_dir = store / last_line(proc)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["parent"] == nano_run.name
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert any("loss" in r for r in rows) and any("mean_token_accuracy" in r for r in rows)
    kls = [r["kl"] for r in rows if "kl" in r]
    assert len(kls) >= 2 and kls[0] < 1e-4 and kls[-1] > kls[0]  # it starts at the parent and drifts away
    assert any("eval/chat_format" in r for r in rows)
    samples = read_jsonl(run_dir / "samples.jsonl")
    assert samples and all("gold" in s for s in samples)

    if mode == "full":
        model = AutoModelForCausalLM.from_pretrained(run_dir / "model")
        tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    else:
        adapter = run_dir / "adapter"
        config = json.loads((adapter / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == str(nano_run / "model")  # the adapter records its parent
        model = AutoPeftModelForCausalLM.from_pretrained(adapter)
        tokenizer = AutoTokenizer.from_pretrained(adapter)
    assert stops_at_end_of_turn(model, tokenizer)
    if mode in ("full", "lora"):  # a quantized base answers a little otherwise than the full one the adapter loads on
        saved, logged = answers_as_logged(model, tokenizer, run_dir)
        assert saved == logged


def test_labels_cover_assistant_turns_only(nano_run, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(nano_run / "model")
    model = AutoModelForCausalLM.from_pretrained(nano_run / "model")
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 plus 2?"},
            {"role": "assistant", "content": "It is 4."}, {"role": "user", "content": "And 1 plus 1?"},
            {"role": "assistant", "content": "It is 2."}]
    args = SFTConfig(output_dir=str(tmp_path), assistant_only_loss=True, bf16=False, use_cpu=True, report_to="none", gradient_checkpointing=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list([{"messages": chat}]), processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    trained = tokenizer.decode(ids[labels != -100])
    assert trained == " It is 4.<|end|> It is 2.<|end|>"  # both answers and their ends, no user or system text


def test_merged_export_loads_without_peft(nano_run, store, tmp_path):
    run_id = last_line(llm_lab("train", "sft", "--parent", nano_run.name, "--mode", "lora", *FAST))
    out = tmp_path / "merged"
    assert last_line(llm_lab("export", run_id, "--merge", "--out", str(out))) == str(out)
    assert not (out / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert stops_at_end_of_turn(model, tokenizer)
    # its predictions are those of base + adapter
    peft_model = AutoPeftModelForCausalLM.from_pretrained(store / run_id / "adapter")
    enc = tokenizer("The capital of", return_tensors="pt")
    assert (model(**enc).logits - peft_model(**enc).logits).abs().max() < 1e-4


SHAPES = {
    "chats.jsonl": "\n".join(json.dumps({"messages": [{"role": "user", "content": f"Name {i}?"}, {"role": "assistant", "content": f"It is {i}."}]}) for i in range(12)),
    "pairs.csv": "prompt,completion\n" + "\n".join(f"Say {i}.,{i}" for i in range(12)),
    "alpaca.json": json.dumps([{"instruction": f"Add {i} and 1.", "input": "", "output": str(i + 1)} for i in range(12)]),
    "sharegpt.jsonl": "\n".join(json.dumps({"conversations": [{"from": "human", "value": f"Hi {i}"}, {"from": "gpt", "value": "Hello."}]}) for i in range(12)),
    "dolly.jsonl": "\n".join(json.dumps({"instruction": f"How old is Ann {i}?", "context": f"Ann {i} is {i} years old." if i % 2 else "",
                                         "response": f"{i}.", "category": "closed_qa"}) for i in range(12)),
    "flan.jsonl": "\n".join(json.dumps({"inputs": f"Add one to {i}.", "targets": str(i + 1), "task": "math"}) for i in range(12)),
    # HH-RLHF's chosen side: a multi-turn transcript per line
    "hh.jsonl": "\n".join(json.dumps({"chosen": f"\n\nHuman: Hi {i}\n\nAssistant: Hello.\n\nHuman: Say {i}.\n\nAssistant: {i}."}) for i in range(12)),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_user_chat_files_of_every_shape_train(nano_run, store, tmp_path, name):
    path = tmp_path / name
    path.write_text(SHAPES[name])
    run_id = last_line(llm_lab("train", "sft", "--parent", nano_run.name, "--data", str(path), "--max-steps", "2", "--batch-size", "4", "--kl-every", "0", "--sample-every", "2"))
    info = json.loads((store / run_id / "run.json").read_text())
    assert info["status"] == "completed"
    assert read_jsonl(store / run_id / "samples.jsonl")  # it answered the data's own first prompts


def test_a_column_mapping_trains_a_file_with_unusual_column_names(nano_run, store, tmp_path):
    path = tmp_path / "dialogs.jsonl"
    path.write_text("\n".join(json.dumps({"dialog": [{"speaker": "user", "text": f"Hi {i}"}, {"speaker": "assistant", "text": "Hello."}]}) for i in range(12)))
    run_id = last_line(llm_lab("train", "sft", "--parent", nano_run.name, "--data", str(path), "--columns", "messages=dialog,role=speaker,content=text",
                               "--max-steps", "2", "--batch-size", "4", "--kl-every", "0", "--sample-every", "2"))
    info = json.loads((store / run_id / "run.json").read_text())
    assert info["status"] == "completed" and info["config"]["columns"] == "messages=dialog,role=speaker,content=text"
    assert read_jsonl(store / run_id / "samples.jsonl")[0]["prompt"] == "Hi 0"
    # a mapping that names a column the file lacks is refused before a run exists, with the columns found
    message = refused("train", "sft", "--parent", nano_run.name, "--data", str(path), "--columns", "messages=turns")
    assert "messages=turns" in message and "Its columns are: dialog" in message
    # and a mapping with the toy world, whose records have the lab's columns already
    assert "--columns" in refused("train", "sft", "--parent", nano_run.name, "--columns", "prompt=q")


def test_every_assistant_turn_of_a_multi_turn_chat_is_trained_on(nano_run, tmp_path):
    """SFT trains on the assistant's tokens (TRL's assistant_only_loss reads the chat template's assistant mask):
    a transcript's turns stay turns, and both of its answers are learnt."""
    from lab import data

    path = tmp_path / "hh.jsonl"
    path.write_text(json.dumps({"chosen": "\n\nHuman: Hi\n\nAssistant: Hello there.\n\nHuman: Name a colour.\n\nAssistant: Blue."}) + "\n")
    chat = data.as_messages(data.load(path, want=("messages", "prompt_completion")))[0]["messages"]
    assert [t["role"] for t in chat] == ["user", "assistant", "user", "assistant"]
    tokenizer = AutoTokenizer.from_pretrained(nano_run / "model")
    enc = tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    learnt = tokenizer.decode([t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m])
    assert "Hello there." in learnt and "Blue." in learnt and "Hi" not in learnt and "colour" not in learnt


def test_records_lacking_fields_are_refused_with_line_and_shapes(nano_run, store, tmp_path):
    bad = tmp_path / "chats.jsonl"
    bad.write_text(json.dumps({"prompt": "Hi", "completion": "Hello"}) + "\n" + json.dumps({"prompt": "Bye"}) + "\n")
    message = refused("train", "sft", "--parent", nano_run.name, "--data", str(bad))
    assert "chats.jsonl line 2" in message and "completion" in message
    text = tmp_path / "plain.txt"
    text.write_text("just some text\n\nand more")
    message = refused("train", "sft", "--parent", nano_run.name, "--data", str(text))
    assert "messages" in message and "prompt_completion" in message


def test_sft_without_a_parent_says_what_to_pass(store):
    assert "--parent" in refused("train", "sft")
