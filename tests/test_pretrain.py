"""Pretraining as a user runs it: `llm-lab train pretrain` in a subprocess, then the saved model
loaded by plain transformers, with no lab code."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import last_line, llm_lab, read_jsonl, refused
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer


def test_nano_pretrain_completes_with_falling_loss_and_a_loadable_model(nano_run):
    info = json.loads((nano_run / "run.json").read_text())
    assert info["status"] == "completed", info["error"]
    assert info["stage"] == "pretrain" and info["config"]["preset"] == "nano"

    losses = [r["loss"] for r in read_jsonl(nano_run / "metrics.jsonl") if "loss" in r]
    assert len(losses) >= 5
    assert losses[-1] < losses[0] - 1.0, losses
    rows = read_jsonl(nano_run / "metrics.jsonl")
    assert all("step" in r and "time" in r for r in rows)
    assert any("eval_loss" in r for r in rows) and any("tokens_per_second" in r for r in rows)

    samples = read_jsonl(nano_run / "samples.jsonl")
    assert {s["step"] for s in samples} >= {0, 10, 20, 30}
    assert all(s["prompt"] and "completion" in s for s in samples)

    model_dir = nano_run / "model"
    assert (model_dir / "model.safetensors").exists()
    assert "pretrain" in (model_dir / "README.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert 300_000 < model.num_parameters() < 800_000  # nano: ≈0.5M
    ids = tokenizer("The capital of", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert tokenizer.chat_template and "generation" in tokenizer.chat_template


def test_runs_lists_the_run_with_its_metrics(nano_run):
    rows = json.loads(llm_lab("runs", "--json").stdout)
    row = next(r for r in rows if r["id"] == nano_run.name)
    assert row["stage"] == "pretrain" and row["status"] == "completed"
    assert "loss" in row["last_metrics"]
    table = llm_lab("runs").stdout
    assert nano_run.name in table and "completed" in table


def test_continued_pretraining_names_its_parent(nano_run, tmp_path):
    text = tmp_path / "more.txt"
    text.write_text("\n\n".join(f"The river Ulm flows past the town of Brask number {i}." for i in range(300)))
    proc = llm_lab("train", "pretrain", "--init-from", nano_run.name, "--data", str(text), "--max-steps", "6", "--logging-steps", "2", "--sample-every", "0")
    run_dir = nano_run.parent / last_line(proc)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed" and info["parent"] == nano_run.name
    assert AutoModelForCausalLM.from_pretrained(run_dir / "model").num_parameters() == AutoModelForCausalLM.from_pretrained(nano_run / "model").num_parameters()


def test_masked_lm_pretraining_fills_a_mask(store):
    proc = llm_lab("train", "pretrain", "--preset", "nano", "--objective", "mlm", "--max-steps", "12", "--logging-steps", "4", "--sample-every", "6")
    run_dir = store / last_line(proc)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"
    model = AutoModelForMaskedLM.from_pretrained(run_dir / "model")
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    enc = tokenizer(f"The capital of Zorbia is {tokenizer.mask_token}.", return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    pos = (enc["input_ids"][0] == tokenizer.mask_token_id).nonzero()[0, 0]
    top = tokenizer.decode([int(logits[0, pos].argmax())])
    assert top.strip() and top != tokenizer.mask_token
    assert any(s["step"] == 12 for s in read_jsonl(run_dir / "samples.jsonl"))


def test_diverging_loss_fails_the_run_with_a_message_and_saves_nothing(store, nano_run, tmp_path):
    """A model whose weights went NaN (the learning rate's bounds keep a run from diverging on purpose): the
    first loss is NaN, the run fails saying so, saves nothing, and its metrics stay strict JSON."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(nano_run / "model")
    torch.nn.init.constant_(model.get_output_embeddings().weight, float("nan"))
    model.save_pretrained(tmp_path / "broken")
    AutoTokenizer.from_pretrained(nano_run / "model").save_pretrained(tmp_path / "broken")
    proc = llm_lab("train", "pretrain", "--init-from", str(tmp_path / "broken"), "--max-steps", "10", "--logging-steps", "1",
                   "--sample-every", "0", "--eval-every", "0", "--no-world-evals", check=False)
    assert proc.returncode == 1
    run_dir = store / last_line(proc)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed"
    assert "diverged" in info["error"] and "learning rate" in info["error"]
    assert not (run_dir / "model").exists()
    assert "diverged" in proc.stderr

    assert any(r.get("loss", 0) is None for r in read_jsonl(run_dir / "metrics.jsonl"))  # the NaN, as null


@pytest.mark.parametrize("args, message", [
    (["--data", "/no/such/file.jsonl"], "/no/such/file.jsonl"),
    (["--tokenizer", "no-such-run"], "no-such-run"),
    (["--max-steps", "0", "--epochs", "0"], "nothing to train"),
])
def test_bad_input_gets_a_named_error(store, args, message):
    assert message in refused("train", "pretrain", *args)


def test_an_unknown_choice_is_refused_by_the_parser(capsys):
    from lab.cli import build_parser

    with pytest.raises(SystemExit) as exit:
        build_parser(["train", "pretrain"]).parse_args(["train", "pretrain", "--preset", "huge"])
    assert exit.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err


def test_a_malformed_data_file_is_refused_with_its_line(store, tmp_path):
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "broken\n')
    proc = llm_lab("train", "pretrain", "--preset", "nano", "--data", str(bad), check=False)
    assert proc.returncode == 2
    assert "corpus.jsonl line 2" in proc.stderr and "Traceback" not in proc.stderr


def test_a_small_user_file_trains_or_says_what_to_lower(store, tmp_path):
    small = tmp_path / "notes.txt"
    small.write_text("\n".join(f"Note {i}: the mill by the river grinds {i} sacks of grain." for i in range(40)))
    proc = llm_lab("train", "pretrain", "--preset", "nano", "--data", str(small), "--tokenizer", "", "--vocab-size", "300", check=False)
    assert proc.returncode == 1 and "fewer than one batch" in proc.stderr and "--batch-size" in proc.stderr
    proc = llm_lab("train", "pretrain", "--preset", "nano", "--data", str(small), "--vocab-size", "300", "--batch-size", "4", "--seq-len", "32", "--max-steps", "4", "--sample-every", "2")
    info = json.loads((store / last_line(proc) / "run.json").read_text())
    assert info["status"] == "completed"
    assert read_jsonl(store / info["id"] / "samples.jsonl")[0]["prompt"].startswith("Note")
