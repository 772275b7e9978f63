"""Compare and Feedback: the inference engine on real nano models (token probabilities, seeds, raw vs chat,
the LRU cache, the GPU-busy policy, the gold judge), then the app's API as a script drives it: three models
of one lifecycle answer one prompt, votes and rankings land in a preference file that `lab.data` accepts,
undo, and a reward model trained on that file."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import last_line, llm_lab, read_jsonl

from lab import data, inference
from lab.runs import Run, process_start
from lab.world import build_world

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

GREEDY = inference.Settings(temperature=0.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def cache():
    return inference.ModelCache(budget_mb=1024)


def resolved(path) -> str:
    return str(Path(path).resolve())


def world_question() -> tuple[str, str]:
    fact = build_world().facts[0]
    return fact.question, fact.statement


# -- the engine -------------------------------------------------------------------------------------------


def test_token_probabilities_are_probabilities_and_greedy_picks_the_top_token(nano_run, nano_sft_run, cache):
    for run in (nano_run, nano_sft_run):
        pane = inference.complete([run.name], "The capital of", settings=GREEDY, cache=cache)[0]
        assert pane["done"] and pane["tokens"] == len(pane["token_probs"]) > 0
        assert pane["tokens_per_second"] > 0 and 0 <= pane["ttft"] <= pane["seconds"]
        for t in pane["token_probs"]:
            top = [q for _, q in t["top"]]
            assert len(top) == inference.TOP_K and top == sorted(top, reverse=True)
            assert 0 < t["prob"] <= 1 and sum(top) <= 1 + 1e-5
            # greedy: the token generated is the model's most likely one, with the same probability
            assert t["top"][0][0] == t["token"] and t["prob"] == pytest.approx(top[0])


def test_raw_for_base_models_and_chat_for_the_rest_overridable(nano_run, nano_sft_run, cache):
    assert inference.choose_mode("pretrain", True) == "raw"  # the lab's pretrain tokenizer has a template it never learnt
    assert inference.choose_mode("sft", True) == "chat"
    assert inference.choose_mode(None, False) == "raw"  # a folder without a chat template is a base model
    assert inference.choose_mode(None, True) == "chat"
    assert inference.choose_mode("pretrain", True, "chat") == "chat"
    assert inference.choose_mode("sft", True, "raw") == "raw"
    with pytest.raises(ValueError, match="no chat template"):
        inference.choose_mode(None, False, "chat")
    panes = inference.complete([nano_run.name, nano_sft_run.name], "Hello", settings=GREEDY, cache=cache)
    assert [p["mode"] for p in panes] == ["raw", "chat"]
    forced = inference.complete([nano_run.name, nano_sft_run.name], "Hello", settings=GREEDY, mode="raw", cache=cache)
    assert [p["mode"] for p in forced] == ["raw", "raw"]


def test_a_seed_gives_the_same_answer_alone_and_side_by_side(nano_run, nano_sft_run, cache):
    sampled = inference.Settings(temperature=1.0, top_p=0.9, max_new_tokens=16, seed=7)
    alone = inference.complete([nano_sft_run.name], "Tell me a story.", settings=sampled, cache=cache)[0]["answer"]
    side_by_side = inference.complete([nano_run.name, nano_sft_run.name, nano_sft_run.name], "Tell me a story.", settings=sampled, cache=cache)
    assert side_by_side[1]["answer"] == side_by_side[2]["answer"] == alone
    # K answers of one model for the Feedback page: seed, seed + 1, ...
    distinct = inference.complete([nano_sft_run.name] * 3, "Tell me a story.", settings=sampled, seeds=[7, 8, 9], cache=cache)
    assert distinct[0]["answer"] == alone and len({p["answer"] for p in distinct}) > 1


def test_the_cache_evicts_the_least_recently_used_model_under_its_budget(nano_run, nano_sft_run, nano_dpo_run):
    one = inference.ModelCache(budget_mb=1024)
    size = one.get(nano_run.name).bytes
    assert one.get(str(nano_run)) is one.get(nano_run.name)  # keyed by the resolved folder: a run by id or by path loads once
    assert len(one.keys()) == 1

    two = inference.ModelCache(budget_mb=2.5 * size / 2**20)  # room for two nano models
    pre, sft = two.get(nano_run.name), two.get(nano_sft_run.name)
    two.get(nano_run.name)  # used again: now the SFT model is the least recently used
    dpo = two.get(nano_dpo_run.name)  # a LoRA adapter on its base, merged in memory
    held = [k[0] for k in two.keys()]
    assert held == [resolved(pre.path), resolved(dpo.path)] and resolved(sft.path) not in held and two.used <= two.budget

    tiny = inference.ModelCache(budget_mb=0.01)  # smaller than any model: only the one in use stays
    tiny.get(nano_run.name)
    tiny.get(nano_sft_run.name)
    assert [k[0] for k in tiny.keys()] == [resolved(nano_sft_run / "model")]


def test_a_reward_run_is_no_chat_model_and_a_chat_model_no_reward_model(nano_sft_run, cache):
    with pytest.raises(ValueError, match="not a reward model"):
        inference.complete([nano_sft_run.name], "Hi", settings=GREEDY, reward_model=nano_sft_run.name, cache=cache)
    with pytest.raises(ValueError, match="compare 1 to 4"):
        inference.complete([nano_sft_run.name] * 5, "Hi", settings=GREEDY, cache=cache)
    with pytest.raises(ValueError, match="prompt is empty"):
        inference.complete([nano_sft_run.name], "  ", settings=GREEDY, cache=cache)


def test_while_a_job_trains_on_the_gpu_generation_moves_to_the_cpu(store):
    assert inference.pick_device("auto", cuda=True) == ("cuda", None)
    fake = Run.create("sft", {"device": "auto"}, name="fake-gpu-job")  # "running" with this process as its job
    try:
        fake.update(status="running", pid=os.getpid(), pid_start=process_start(os.getpid()), started=time.time())
        device, note = inference.pick_device("auto", cuda=True)  # started, device not recorded yet: it will take the GPU
        assert device == "cpu" and fake.id in note
        fake.update(device="NVIDIA H100 80GB HBM3")
        device, note = inference.pick_device("auto", cuda=True)
        assert device == "cpu" and fake.id in note and "CPU" in note
        with pytest.raises(ValueError, match="is using the GPU"):
            inference.pick_device("cuda", cuda=True)
        fake.update(device="cpu (2 threads)")  # a CPU job leaves the GPU free
        assert inference.pick_device("auto", cuda=True) == ("cuda", None)
    finally:
        fake.update(status="completed")
        from lab import runs

        runs.delete(fake)


def test_the_gold_judge_scores_only_the_worlds_prompts():
    question, statement = world_question()
    score, breakdown = inference.gold_score([{"role": "user", "content": question}], statement)
    assert score > 0.9 and breakdown["correct"] == 1.0
    assert inference.gold_score([{"role": "user", "content": question}], "No idea, go away.")[0] < score
    assert inference.gold_score([{"role": "user", "content": "Write me a poem about the sea."}], "Waves.") == (None, {})


# -- the app's API ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(lab_app):
    return Client(lab_app, verbose=False)


def call(client, api_name, *args):
    return client.predict(*args, api_name=f"/{api_name}")


@pytest.fixture(scope="module")
def lifecycle(client, nano_run, nano_sft_run, nano_dpo_run) -> list[str]:
    chain = call(client, "lifecycle", nano_dpo_run.name)
    assert chain == [nano_run.name, nano_sft_run.name, nano_dpo_run.name]  # base → instruct → aligned, by parent links
    return chain


def test_three_models_of_a_lifecycle_answer_one_prompt(client, lifecycle):
    question, _ = world_question()
    panes = call(client, "compare", lifecycle, question, 0.7, 0.95, 24, 0)
    assert [p["model"] for p in panes] == lifecycle and all(p["done"] for p in panes)
    assert [p["mode"] for p in panes] == ["raw", "chat", "chat"]
    for p in panes:
        assert p["tokens"] == len(p["token_probs"]) > 0 and p["tokens_per_second"] > 0
        assert p["gold"] is not None and "correct" in p["gold_breakdown"]  # a toy-world question: the judge knows it
        assert p["reward"] is None  # no reward model picked
    # Streaming: the same call, read as it grows, gives partial answers before the last.
    job = client.submit(lifecycle, question, 0.7, 0.95, 24, 0, api_name="/compare")
    updates = list(job)
    assert len(updates) > 2 and not all(p["done"] for p in updates[0])
    assert [p["answer"] for p in updates[-1]] == [p["answer"] for p in panes]  # same seed, same answers


def test_votes_and_rankings_land_in_a_preference_file_that_trains_a_reward_model(client, lifecycle, nano_sft_run, store):
    dataset = "api-votes"
    question, _ = world_question()
    # Distinct seeds: two steps of LoRA DPO leave the aligned model so close to its SFT parent that with one
    # seed both would write the same answer, and a pair of identical answers is left out.
    panes = call(client, "compare", lifecycle, question, 1.0, 0.95, 16, 3, "auto", "", None, True)
    voted = [p["answer"] for p in panes]
    assert all(a.strip() for a in voted) and len(set(voted)) == 3
    saved = call(client, "vote", question, voted, 1, None, dataset, lifecycle)  # B is best: B > A, B > C
    path = store / "feedback" / f"{dataset}.jsonl"
    assert saved == {"file": str(path), "pairs": 2, "labels": 0, "rankings": 1, "added": 2, "skipped": 0}

    # A two-turn conversation, then three answers ranked 2, 1, 3: every implied pair (3 choose 2).
    history = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hello, how can I help?"}]
    panes = call(client, "compare", [nano_sft_run.name] * 3, question, 1.0, 0.95, 16, 11, "auto", "", [history] * 3, True)
    answers = [p["answer"] for p in panes]
    ranked = call(client, "rank", question, answers, [2, 1, 3], history, dataset, nano_sft_run.name)
    assert ranked["added"] == 3 and ranked["pairs"] == 5 and ranked["rankings"] == 2

    loaded = data.load(path, want="preference")  # what the reward and DPO stages read
    assert loaded.format == "preference" and len(loaded.records) == 5
    turn = lambda role, text: [{"role": role, "content": text}]  # noqa: E731
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in loaded.records[:2]] == [
        (turn("user", question), turn("assistant", voted[1]), turn("assistant", voted[0])),
        (turn("user", question), turn("assistant", voted[1]), turn("assistant", voted[2]))]
    assert all(r["prompt"] == history + turn("user", question) for r in loaded.records[2:])
    assert {(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in loaded.records[2:]} == {
        (answers[1], answers[0]), (answers[1], answers[2]), (answers[0], answers[2])}

    # Undo takes back exactly the last ranking; redo it, so the file has both again.
    assert call(client, "undo_feedback", dataset) == {"file": str(path), "pairs": 2, "labels": 0, "rankings": 1, "removed": 3}
    call(client, "rank", question, answers, [2, 1, 3], history, dataset, nano_sft_run.name)
    assert call(client, "feedback_count", dataset) == {"file": str(path), "pairs": 5, "labels": 0, "rankings": 2}

    # The reward and DPO forms offer the file as data.
    from pages.stage import data_choices

    assert str(path) in [value for _, value in data_choices("reward")] and str(path) in [value for _, value in data_choices("dpo")]
    assert str(path) not in [value for _, value in data_choices("sft")]

    reward = store / last_line(llm_lab("train", "reward", "--parent", nano_sft_run.name, "--data", str(path), "--max-steps", "2", "--batch-size", "2"))
    assert Run(reward).status == "completed" and (reward / "model").is_dir()
    scored = call(client, "compare", lifecycle, question, 0.0, 1.0, 8, 0, "auto", reward.name)
    assert all(isinstance(p["reward"], float) for p in scored)
    with pytest.raises(Exception, match="is a reward model"):  # it scores answers; it writes none
        call(client, "compare", [reward.name, nano_sft_run.name], "Hi")


def test_thumbs_up_and_down_land_as_kto_labels_that_kto_trains_on(client, nano_sft_run, store):
    dataset = "api-thumbs"
    question, _ = world_question()
    panes = call(client, "compare", [nano_sft_run.name] * 3, question, 1.0, 0.95, 16, 5, "auto", "", None, True)
    answers = [p["answer"] for p in panes]
    saved = call(client, "label_answers", question, answers, ["good", None, "bad"], None, dataset, nano_sft_run.name)
    path = store / "feedback" / f"{dataset}.jsonl"
    assert saved == {"file": str(path), "pairs": 0, "labels": 2, "rankings": 1, "added": 2, "skipped": 0}
    history = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hello, how can I help?"}]
    call(client, "label_answers", question, answers[:2], ["down", "up"], history, dataset, nano_sft_run.name)

    loaded = data.load(path, want="unpaired")  # what KTO reads: conversational prompt, the answer's turn, the label
    assert loaded.format == "unpaired" and [r["label"] for r in loaded.records] == [True, False, False, True]
    assert loaded.records[0]["prompt"] == [{"role": "user", "content": question}]
    assert loaded.records[0]["completion"] == [{"role": "assistant", "content": answers[0].strip()}]
    assert loaded.records[2]["prompt"] == [*history, {"role": "user", "content": question}]
    rows = read_jsonl(path)
    assert all(r["labeled_by"] == "human" and r["model"] == nano_sft_run.name for r in rows)

    # One dataset, one kind: pairs into a labels file (and labels into a pairs file) are refused, nothing written.
    with pytest.raises(Exception, match="holds answers labelled good or bad"):
        call(client, "rank", question, answers, [1, 2, 3], None, dataset)
    with pytest.raises(Exception, match="no answer has a thumb"):
        call(client, "label_answers", question, answers, [None, None, None], None, dataset)
    with pytest.raises(Exception, match="give each answer good or bad"):
        call(client, "label_answers", question, answers, ["great", None, None], None, dataset)
    assert len(read_jsonl(path)) == 4

    # KTO's form offers the file (the reward model's does not: it holds no pairs); KTO trains on it.
    from pages.stage import data_choices

    assert str(path) in [value for _, value in data_choices("kto")] and str(path) not in [value for _, value in data_choices("reward")]
    kto = store / last_line(llm_lab("train", "kto", "--parent", nano_sft_run.name, "--data", str(path), "--max-steps", "2", "--batch-size", "2",
                                    "--no-world-evals"))
    assert Run(kto).status == "completed" and (kto / "model").is_dir()
    assert call(client, "undo_feedback", dataset)["removed"] == 2


@pytest.mark.parametrize(
    "api_name, args, message",
    [
        ("compare", (["no-such-run"], "Hi"), "'no-such-run' is not a run id"),
        ("compare", ([], "Hi"), "compare 1 to 4"),
        ("vote", ("Hi", ["a", "b"], 5), "best 5 is out of range: it must be from 0 to 1"),
        ("rank", ("Hi", ["a", "b"], [1, 1]), "every answer has the same rank"),
        ("rank", ("Hi", ["same", "same"], [1, 2]), "identical or empty"),
        ("rank", ("Hi", ["a", "b"], [1, 2], None, "../escape"), "dataset name"),
        ("undo_feedback", ("never-used",), "nothing to undo"),
        ("lifecycle", ("no-such-run",), "no run 'no-such-run'"),
    ],
)
def test_user_errors_come_back_as_readable_messages(client, api_name, args, message):
    with pytest.raises(Exception) as caught:
        call(client, api_name, *args)
    assert message in str(caught.value) and "Traceback" not in str(caught.value)
