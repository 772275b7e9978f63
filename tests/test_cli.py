"""The command line as a user types it: world export, config files, and errors that say what to do."""

from __future__ import annotations

import json

from conftest import last_line, llm_lab, read_jsonl, refused


def test_world_writes_its_datasets(tmp_path):
    proc = llm_lab("world", "--out", str(tmp_path / "w"))
    files = {p.name for p in (tmp_path / "w").iterdir()}
    assert {"pretrain_train.jsonl", "pretrain_heldout.jsonl", "sft.jsonl", "preferences_train.jsonl", "eval_pretrain_facts.jsonl"} <= files
    assert "records" in proc.stdout
    sft = read_jsonl(tmp_path / "w" / "sft.jsonl")
    assert sft and all(m["role"] in ("system", "user", "assistant") for chat in sft for m in chat["messages"])


def test_config_file_with_flags_on_top(store, tmp_path):
    config = tmp_path / "nano.json"
    config.write_text(json.dumps({"preset": "nano", "max_steps": 50, "sample_every": 0, "eval_every": 0, "name": "from a file"}))
    proc = llm_lab("train", "pretrain", "--config", str(config), "--max-steps", "2")
    info = json.loads((store / last_line(proc) / "run.json").read_text())
    assert info["status"] == "completed"
    assert info["config"]["preset"] == "nano" and info["config"]["max_steps"] == 2  # the flag wins
    assert info["name"] == "from a file" and "from-a-file" in info["id"]
    assert info["command"] == "llm-lab train pretrain --preset nano --max-steps 2 --eval-every 0 --sample-every 0 --name 'from a file'"
    # the run's own run.json reproduces it
    again = json.loads((store / last_line(llm_lab("train", "pretrain", "--config", str(store / info["id"] / "run.json"))) / "run.json").read_text())
    assert again["config"] == info["config"]


def test_config_file_errors_name_the_field(store, tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"preset": "nano", "max_step": 5}))
    proc = llm_lab("train", "pretrain", "--config", str(config), check=False)  # a config error, as the CLI prints it
    assert proc.returncode == 2 and "max_step" in proc.stderr and "known fields" in proc.stderr and "Traceback" not in proc.stderr
    config.write_text(json.dumps({"preset": "nano", "batch_size": "many"}))
    message = refused("train", "pretrain", "--config", str(config))
    assert message.endswith("bad.json: --batch-size must be a whole number, got 'many'")
    config.write_text("{not json")
    assert "not valid JSON" in refused("train", "pretrain", "--config", str(config))


def test_init_from_a_tokenizer_run_is_refused(store):
    tok = last_line(llm_lab("train", "tokenizer", "--vocab-size", "300"))
    assert "a tokenizer run goes in --tokenizer" in refused("train", "pretrain", "--init-from", tok)


def test_stop_of_an_unknown_run_is_a_clear_error(store):
    proc = llm_lab("stop", "no-such-run", check=False)
    assert proc.returncode == 2 and "no run 'no-such-run'" in proc.stderr


def test_delete_refuses_a_run_others_build_on_then_deletes_them_with_it(store):
    tokenizer = last_line(llm_lab("train", "tokenizer", "--vocab-size", "300"))
    pretrain = last_line(llm_lab("train", "pretrain", "--preset", "nano", "--tokenizer", tokenizer, "--max-steps", "2", "--sample-every", "0", "--eval-every", "0"))
    refusal = llm_lab("delete", tokenizer, check=False)
    assert refusal.returncode == 2 and f"{pretrain} (pretrain" in refusal.stderr and "--with-dependents" in refusal.stderr, refusal.stderr
    assert (store / tokenizer).is_dir() and (store / pretrain).is_dir()
    assert last_line(llm_lab("delete", tokenizer, "--with-dependents")) == f"deleted {pretrain}, {tokenizer}"
    assert not (store / tokenizer).exists() and not (store / pretrain).exists()


def test_bitsandbytes_optional_kernel_notice_stays_out_of_logs(caplog):
    import logging

    import lab  # noqa: F401  (it installs the filter)

    ops = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        ops.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure ...", "No module named 'kernels'")
        ops.warning("a real warning")
    assert [r.getMessage() for r in caplog.records] == ["a real warning"]
