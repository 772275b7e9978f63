"""AI feedback: the constitution, the judging chats the toy world writes, a labeler trained on them (a real nano SFT
run), its verdict on a hand-made pair, and `llm-lab feedback` saving AI-labeled pairs with their provenance, which
the reward model and DPO then train on."""

from __future__ import annotations

import json

import pytest
from conftest import last_line, llm_lab, read_jsonl

from lab import feedback, labeler
from lab.errors import UserError
from lab.runs import Run
from lab.world import build_world

JUDGE_STEPS = 300


@pytest.fixture(scope="session")
def judging_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    llm_lab("world", "--out", str(out))
    return out


@pytest.fixture(scope="session")
def nano_base(store):
    """A nano model pretrained on the toy world long enough to write its words (the 30-step nano_run writes dots)."""
    return last_line(llm_lab("train", "pretrain", "--preset", "nano", "--max-steps", "300", "--batch-size", "16", "--logging-steps", "50",
                             "--sample-every", "0", "--eval-every", "0", "--no-world-evals"))


@pytest.fixture(scope="session")
def nano_judge_run(nano_base, judging_files):
    """The nano base taught to judge the toy world: SFT on the world's judging chats."""
    return last_line(llm_lab("train", "sft", "--parent", nano_base, "--data", str(judging_files / "judging_train.jsonl"), "--max-steps", str(JUDGE_STEPS),
                             "--batch-size", "16", "--learning-rate", "3e-3", "--kl-every", "0", "--sample-every", "0", timeout=600))


@pytest.fixture(scope="session")
def nano_instruct_run(nano_base):
    """The nano base tuned on the world's chats as the nano lifecycle tunes it (60 steps): a model that answers, so it
    can critique and revise (nano_sft_run, 3 steps on a 30-step base, writes dots or nothing)."""
    return last_line(llm_lab("train", "sft", "--parent", nano_base, "--max-steps", "60", "--batch-size", "16", "--kl-every", "0",
                             "--sample-every", "0", "--no-world-evals"))


def test_the_constitution_has_the_worlds_defaults_and_keeps_an_edit(store, tmp_path):
    assert [p.name for p in labeler.constitution()] == ["correct", "harmless", "polite", "concise"]
    saved = labeler.save_constitution([{"name": "kind", "text": "Be   kind\nto the user."}, {"name": "brief", "text": "Be brief."}])
    try:
        assert labeler.constitution() == saved and saved[0].text == "Be kind to the user."
        text = tmp_path / "principles.txt"
        text.write_text("# mine\npolite: Be polite.\n\nhonest: Say only what is true.\n")
        assert [(p.name, p.text) for p in labeler.read_constitution(text)] == [("polite", "Be polite."), ("honest", "Say only what is true.")]
    finally:
        labeler.constitution_path().unlink()
    for bad, message in [([], "it has none"), ([{"name": "a", "text": "x"}, {"name": "a", "text": "y"}], "named twice"),
                         ([{"name": "a b", "text": "x"}], "use letters, digits"), ([{"name": "a", "text": " "}], "give it 1 to 300"),
                         ([{"name": "a"}], "give it a name and a text")]:
        with pytest.raises(UserError, match=message):
            labeler.check_constitution(bad)
    (tmp_path / "bad.txt").write_text("polite Be polite.\n")
    with pytest.raises(UserError, match=r"line 1: write each principle as `name: text`"):
        labeler.read_constitution(tmp_path / "bad.txt")


def test_the_world_writes_judging_chats_in_both_orders_with_the_gold_verdict(judging_files):
    world = build_world()
    train, heldout = (read_jsonl(judging_files / f"judging_{s}.jsonl") for s in ("train", "heldout"))
    assert len(train) == 2 * sum(1 for p in world.preference_pairs("train") if p["criterion"] in labeler.CRITERION_PRINCIPLE)
    by_question = {}
    for chat in train:
        user, verdict = chat["messages"][0]["content"], chat["messages"][1]["content"]
        lines = dict(line.split(": ", 1) for line in user.splitlines()[:4])
        assert verdict in ("A", "B") and user.endswith("Reply A or B.")
        # the same two answers under the same principle appear once in each order, with the verdict following the better one
        key = (lines["Principle"], lines["Question"], frozenset((lines["Answer A"], lines["Answer B"])))
        by_question.setdefault(key, []).append(lines["Answer A"] if verdict == "A" else lines["Answer B"])
    assert all(len(better) % 2 == 0 and len(set(better)) == 1 for better in by_question.values())
    asked = {dict(line.split(": ", 1) for line in c["messages"][0]["content"].splitlines()[:2])["Question"] for c in heldout}
    assert asked and not asked & {k[1] for k in by_question}  # held-out prompts never appear in training


def test_the_labelers_verdict_on_a_hand_made_pair(nano_judge_run):
    from lab import inference

    judge = inference.load(nano_judge_run, "causal")
    world = build_world()
    harmful = world.eval_sets()["harmful"][0]["prompt"]
    harmless = next(p for p in labeler.DEFAULT_CONSTITUTION if p.name == "harmless").text
    refusal, compliance = "I'm sorry, but I can't help with that.", "Sure, here is how: first you take the key from the guard."
    (forward, backward) = labeler.log_odds(judge.model, judge.tokenizer, [(harmless, harmful, refusal, compliance), (harmless, harmful, compliance, refusal)])
    assert forward > 0, f"the judge prefers complying with {harmful!r} under {harmless!r} (log-odds {forward:.3f})"
    assert backward == pytest.approx(-forward)  # asked in both orders: which answer is shown first does not matter
    held = labeler.agreement_with_gold(judge.model, judge.tokenizer, world)
    assert held["pairs"] > 100 and held["agreement"] > 0.6, held


def test_ai_feedback_saves_pairs_with_provenance_that_the_reward_model_and_dpo_train_on(store, nano_judge_run, nano_sft_run):
    name = "ai-test"
    feedback.add_ranking("people", [{"role": "user", "content": "Hi"}], ["Hello! How can I help?", "What."], [1, 2], "feedback")
    people = len(feedback.human_pairs())  # this one, and any other test's of the same store
    proc = llm_lab("feedback", "--labeler", nano_judge_run, "--model", nano_sft_run.name, "--limit", "6", "-k", "3", "--name", name,
                   "--temperature", "1.5", "--heldout", timeout=600)
    assert "agreement with the gold judge:" in proc.stdout and "with the people's pairs so far: " in proc.stdout
    assert f" of {min(people, 200)}\n" in proc.stdout, proc.stdout
    assert "held-out pairs:" in proc.stdout
    rows = read_jsonl(feedback.path_of(name))
    assert rows, proc.stdout
    principles = {p.name: p.text for p in labeler.DEFAULT_CONSTITUTION}
    for r in rows:
        assert r["source"] == "ai" and r["labeled_by"] == nano_judge_run and r["chosen_model"] == nano_sft_run.name
        assert principles[r["principle"]] == r["principle_text"] and r["margin"] > 0
        assert r["prompt"][-1]["role"] == "user" and r["chosen"][0]["content"] != r["rejected"][0]["content"]
    assert read_jsonl(feedback.path_of("people"))[0]["labeled_by"] == "human"
    # the reward model and DPO take AI-labeled pairs like the human ones
    for stage, quiet in (("reward", []), ("dpo", ["--sample-every", "0", "--kl-every", "0"])):
        run = Run.open(last_line(llm_lab("train", stage, "--parent", nano_sft_run.name, "--data", str(feedback.path_of(name)), "--max-steps", "2",
                                         "--batch-size", "2", *quiet)))
        assert run.status == "completed", run.info.get("error")


def test_critique_and_revision_writes_sft_chats_that_sft_trains_on(store, nano_instruct_run, nano_sft_run):
    """--revise: the model answers, critiques its answer under a principle and revises it; the revisions are SFT
    chats among the store's uploads (where the SFT form offers them), each with its principle, first answer and
    critique, and the gold score before and after says whether revising helped."""
    from pages import api

    proc = llm_lab("feedback", "--revise", "--model", nano_instruct_run, "--limit", "8", "--name", "revised-test", timeout=600)
    assert "revised answers of" in proc.stdout and "gold score: first answers " in proc.stdout, proc.stdout
    path = store / "uploads" / "revised-test.jsonl"
    rows = read_jsonl(path)
    assert 0 < len(rows) <= 8 and str(path) in api.uploads()
    principles = {p.name for p in labeler.DEFAULT_CONSTITUTION}
    for r in rows:
        assert [t["role"] for t in r["messages"]] == ["user", "assistant"] and r["messages"][1]["content"].strip()
        assert r["principle"] in principles and "first_answer" in r and "critique" in r
    run = Run.open(last_line(llm_lab("train", "sft", "--parent", nano_sft_run.name, "--data", str(path), "--max-steps", "2", "--batch-size", "2",
                                     "--sample-every", "0", "--kl-every", "0", "--no-world-evals")))
    assert run.status == "completed", run.info.get("error")
    again = llm_lab("feedback", "--revise", "--model", nano_instruct_run, "--name", "revised-test", check=False)
    assert again.returncode == 2 and "exists already" in again.stderr and read_jsonl(path) == rows  # never written over
    none = llm_lab("feedback", "--model", nano_sft_run.name, check=False)  # neither a judge nor --revise
    assert none.returncode == 2 and "--labeler" in none.stderr and "--revise" in none.stderr and "Traceback" not in none.stderr


def test_ai_feedback_refuses_what_it_cannot_do_in_one_line(store, nano_sft_run, tmp_path):
    bad = tmp_path / "constitution.json"
    bad.write_text(json.dumps([{"name": "x", "text": ""}]))
    for argv, message in [(["-k", "1"], "-k 1: sample 2 to 16 answers"), (["--constitution", str(bad)], "give it 1 to 300"),
                          (["--name", "no/slash"], "dataset name"), (["--labeler", "no-such-run"], "is not a run id, a local model folder or a hub id")]:
        args = ["feedback", "--labeler", nano_sft_run.name, "--model", nano_sft_run.name, *argv]
        proc = llm_lab(*args, check=False)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_the_pages_constitution_is_saved_from_its_lines_and_shared_only_outside_a_demo(store, monkeypatch):
    import gradio as gr

    from pages import api

    assert api.constitution().splitlines()[0].startswith("correct: ")
    try:
        assert api.save_constitution("# the lab's own\nkind: Be kind.\nbrief: Be brief.") == "kind: Be kind.\nbrief: Be brief."
        assert [p.name for p in labeler.constitution()] == ["kind", "brief"]
        with pytest.raises(gr.Error, match="line 2: write each principle as `name: text`"):
            api.save_constitution("kind: Be kind.\nbrief")
        monkeypatch.setenv("LAB_DEMO_MODE", "1")
        with pytest.raises(gr.Error, match="every visitor shares the constitution"):
            api.save_constitution("kind: Be kind.")
    finally:
        labeler.constitution_path().unlink(missing_ok=True)
