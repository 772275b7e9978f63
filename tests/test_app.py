"""The Gradio lab through its API, as a script would drive it: gradio_client against `python -m lab app`
launched for real on the session's run store, starting real nano jobs."""

from __future__ import annotations

import json
import threading

import pytest
from conftest import wait_for

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

from lab.runs import Run  # noqa: E402

NANO = {"preset": "nano", "logging_steps": 2, "sample_every": 0, "eval_every": 0}


@pytest.fixture(scope="module")
def client(lab_app):
    return Client(lab_app, verbose=False)


def call(client, api_name, *args):
    return client.predict(*args, api_name=f"/{api_name}")


def start(client, stage, **config) -> str:
    return call(client, "start_run", stage, json.dumps(config))


def status(client, run_id) -> dict:
    return call(client, "run_status", run_id)


@pytest.fixture(scope="module")
def stopped_pretrain(client):
    """A long nano pretrain, followed through run_metrics, then stopped: (run id, rows read)."""
    run_id = start(client, "pretrain", **NANO, max_steps=2000)
    rows, offset, offsets = [], 0, []

    def read_more():
        nonlocal offset
        got = call(client, "run_metrics", run_id, offset)
        rows.extend(got["rows"])
        offset = got["offset"]
        offsets.append(offset)
        return len([r for r in rows if "loss" in r]) >= 3

    wait_for(read_more, timeout=180, what="three logged losses")
    st = status(client, run_id)
    assert st["status"] == "running" and st["max_steps"] == 2000 and st["step"] >= 4
    assert st["tokens_per_second"] > 0 and st["eta"] > 0
    with pytest.raises(Exception, match="stop it first"):  # an active run is never deleted
        call(client, "delete_run", run_id)
    assert call(client, "stop_run", run_id) == "stopping"
    wait_for(lambda: status(client, run_id)["status"] == "stopped", timeout=60, what="stopped")
    return run_id, rows, offsets


def test_metrics_stream_incrementally_and_stop_ends_stopped(client, stopped_pretrain):
    run_id, rows, offsets = stopped_pretrain
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # each row read once, in order
    assert offsets == sorted(offsets) and offsets[-1] > offsets[0]
    everything = call(client, "run_metrics", run_id, 0)["rows"]
    assert everything[: len(rows)] == rows  # reading from 0 gives the same rows: what a reloaded page sees
    st = status(client, run_id)
    assert st["final_metrics"]["steps"] < 2000
    assert "[lab] run" in call(client, "run_log", run_id, 50)


def test_sft_from_the_stopped_pretrain_completes_and_lists_its_lineage(client, stopped_pretrain):
    parent = stopped_pretrain[0]
    run_id = start(client, "sft", parent=parent, max_steps=3, batch_size=4, logging_steps=1, kl_every=0, sample_every=0)
    wait_for(lambda: status(client, run_id)["status"] not in ("queued", "running"), timeout=300, what="the SFT run to end")
    st = status(client, run_id)
    assert st["status"] == "completed", st
    assert st["step"] == 3 and st["parent"] == parent
    assert any("loss" in r for r in call(client, "run_metrics", run_id, 0)["rows"])
    listed = {r["id"]: r for r in call(client, "list_runs")}
    assert listed[run_id]["parent"] == parent and listed[run_id]["stage"] == "sft"
    assert listed[parent]["status"] == "stopped"
    diff = {d["field"]: (d["a"], d["b"]) for d in call(client, "config_diff", parent, run_id)}
    assert diff["stage"] == ("pretrain", "sft") and diff["max_steps"] == (2000, 3)
    exported = call(client, "export_run", run_id)  # a full model: copied out as a standalone folder
    assert exported.endswith("merged")


def test_two_clients_at_once_are_queued_and_both_complete(lab_app):
    clients = [Client(lab_app, verbose=False) for _ in range(2)]
    barrier = threading.Barrier(2)
    ids: list[str | None] = [None, None]

    def go(i):
        barrier.wait()
        ids[i] = start(clients[i], "pretrain", **NANO, max_steps=2)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(ids) and ids[0] != ids[1]
    first_client = clients[0]

    def one_running():
        # Read both twice: a queue position is only meaningful once the other run was already seen running
        # before it was read (one pass alone can read the queued run while the other has not left the queue).
        before = [status(first_client, r) for r in ids]
        after = [status(first_client, r) for r in ids]
        same = [b["status"] for b in before] == [a["status"] for a in after]
        return after if same and sorted(s["status"] for s in after) == ["queued", "running"] else None

    states = wait_for(one_running, timeout=120, what="one job running and the other queued")
    assert next(s for s in states if s["status"] == "queued")["queue_position"] == 1
    wait_for(lambda: all(status(first_client, r)["status"] not in ("queued", "running") for r in ids), timeout=240, what="both jobs to end")
    first, second = sorted((status(first_client, r) for r in ids), key=lambda s: s["id"])
    assert first["status"] == second["status"] == "completed"
    a, b = sorted((Run.open(r).info for r in ids), key=lambda i: i["started"])
    assert b["started"] >= a["ended"] - 0.5  # one after the other, never side by side


def test_resume_and_delete(client, stopped_pretrain):
    run_id = stopped_pretrain[0]
    done = status(client, run_id)["final_metrics"]["steps"]
    assert call(client, "resume_run", run_id) == run_id  # the same run goes on, from the checkpoint its stop saved
    wait_for(lambda: status(client, run_id)["step"] > done, timeout=180, what="the resumed run to train past its stop")
    rows = call(client, "run_metrics", run_id, 0)["rows"]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == sorted(set(steps)) and steps[0] <= done < steps[-1]  # one curve: no step twice, none lost at the stop
    call(client, "stop_run", run_id)
    wait_for(lambda: status(client, run_id)["status"] not in ("queued", "running"), timeout=60, what="the resumed run to stop")
    assert call(client, "delete_run", run_id, True).startswith(f"deleted {run_id}")  # with the SFT run a test above built on it
    assert run_id not in {r["id"] for r in call(client, "list_runs")}


@pytest.mark.parametrize(
    "api_name, args, message",
    [
        ("start_run", ("sft", json.dumps({"parent": "no-such-run", "max_steps": 3})), "'no-such-run' is not a run id"),
        ("start_run", ("pretrain", json.dumps({"max_steps": "many"})), "'max steps' must be a whole number, got 'many'"),
        ("start_run", ("pretrain", "{max_steps: 3"), "config_json is not valid JSON"),
        ("start_run", ("distill", "{}"), "unknown stage 'distill'"),
        ("run_status", ("no-such-run",), "no run 'no-such-run'"),
        ("preview_data", ("sft", "/no/such/chats.jsonl"), "does not exist"),
        ("quickstart", ("huge", ""), "'scale' 'huge' is not one of nano, default"),
        ("quickstart", ("nano", "kto"), "the optional steps are grpo"),
        ("report_card", ("no-such-run",), "no run 'no-such-run'"),
        ("eval", ("no-such-run", "", ""), "no run 'no-such-run'"),
    ],
)
def test_user_errors_come_back_as_readable_messages(client, api_name, args, message):
    with pytest.raises(Exception) as caught:
        call(client, api_name, *args)
    text = str(caught.value)
    assert message in text and "Traceback" not in text


def test_a_bad_file_is_named_with_its_line(client, tmp_path):
    bad = tmp_path / "chats.jsonl"
    bad.write_text('{"prompt": "hi", "completion": "hello"}\n{"prompt": "oops"\n')
    with pytest.raises(Exception, match=r"chats.jsonl line 2: not valid JSON"):
        call(client, "preview_data", "sft", str(bad))
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "hi", "completion": "hello"}\n' * 3)
    shown = call(client, "preview_data", "sft", str(good))
    assert shown["format"] == "prompt_completion" and shown["records"] == 3 and len(shown["preview"]) == 3


def test_the_preview_says_how_a_shape_was_mapped_and_reads_a_column_mapping(client, tmp_path):
    dolly = tmp_path / "dolly.jsonl"
    dolly.write_text(json.dumps({"instruction": "Summarise.", "context": "Cats nap.", "response": "Naps."}) + "\n")
    shown = call(client, "preview_data", "sft", str(dolly))
    assert shown["how"] == "Dolly-style: instruction + context → user, response → assistant"
    assert shown["preview"][0]["messages"][0] == {"role": "user", "content": "Summarise.\n\nCats nap."}
    odd = tmp_path / "odd.csv"
    odd.write_text("question,answer\n2+2?,4\n")
    shown = call(client, "preview_data", "sft", str(odd), 5, "prompt=question,completion=answer")
    assert shown["preview"] == [{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}]
    assert shown["how"].startswith("your columns question → prompt, answer → completion")
    with pytest.raises(Exception, match=r"names a column it does not have \(prompt=q\)\. Its columns are: question, answer"):
        call(client, "preview_data", "sft", str(odd), 5, "prompt=q")


def test_tokenize_cuts_a_text_by_each_tokenizer_with_its_figures(client):
    text = "Pirena is the capital of Desur. Ωmega!"
    bpe, wordpiece = call(client, "tokenize", text, ["bpe", "wordpiece"])
    assert bpe["tokenizer"] == "bpe" and wordpiece["tokenizer"] == "wordpiece"
    # Each token knows where it lies in the text; byte-level BPE covers all of it (a two-byte 'Ω' is two tokens over
    # one character) and knows every character.
    for view in (bpe, wordpiece):
        assert all(text[t["start"]:t["end"]] == t["text"] for t in view["tokens"])
    assert {i for t in bpe["tokens"] for i in range(t["start"], t["end"])} == set(range(len(text))) and bpe["stats"]["unknown_rate"] == 0
    assert any(t["unknown"] for t in wordpiece["tokens"]) and wordpiece["stats"]["unknown_rate"] > 0  # 'Ω' was never seen
    for view in (bpe, wordpiece):
        st = view["stats"]
        assert st["tokens"] == len(view["tokens"]) and st["chars_per_token"] > 1 and st["tokens_per_word"] >= 1 and st["vocab_size"] > 300
    for args, message in ((("", ["bpe"]), "no text"), ((text, []), "pick 1 to 4"), ((text, ["bpe", "wordpiece", "unigram", "a/b", "c/d"]), "pick 1 to 4"),
                          ((text, ["no-such-tokenizer"]), "not a run id")):
        with pytest.raises(Exception, match=message):
            call(client, "tokenize", *args)


def test_every_page_is_a_tab_of_its_own_with_nothing_between_tabs(store):
    """A component made between two tabs (a State after a page's `with gr.Tab`) shifted the browser's list of
    tabs: opening the tab before it drew that tab twice and hid the last page (Experiments) until a reload."""
    import gradio as gr

    from pages import app

    demo = app.build()
    tabs = next(b for b in demo.blocks.values() if isinstance(b, gr.Tabs))
    between = [type(c).__name__ for c in tabs.children if not isinstance(c, gr.Tab)]
    assert not between, between
    labels = [c.label for c in tabs.children]
    assert labels[0] == "Home" and "Experiments" in labels and len(set(labels)) == len(labels)
