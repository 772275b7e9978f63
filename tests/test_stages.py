"""A stage is its module and one line of the registry: a throw-away stage, declared in a module of its own,
gets its `llm-lab train` parser, its page and its API fields with no other edit. And the declared stages
hold together: every parent picker offers stages that exist, every page has a tab."""

from __future__ import annotations

import sys
import textwrap

import pytest

from lab import configs, stages

ECHO = '''
"""Echo: a throw-away stage that writes its loudness as a loss.

    llm-lab train echo --parent SFT_RUN --loudness 5
"""

from dataclasses import dataclass

from lab.configs import DATA, MODEL, option
from lab.errors import UserError
from lab.stages import Stage
from lab.stages.base import TrainArgs

STAGE = Stage(label="Echo", page="Echo lab", data="chats", produces="chat")


@dataclass
class Config(TrainArgs):
    parent: str = option("", "the model it echoes", order=MODEL, runs=("sft",))
    data: str = option("world", "chats to echo", order=DATA)
    loudness: int = option(3, "how loud it echoes")


def check(config):
    if config.loudness < 0:
        raise UserError(f"--loudness {config.loudness}: an echo is at least silent (0)")


def run(config, run):
    run.log_metrics({"step": 1, "loss": float(config.loudness)})
    return {"loudness": config.loudness}
'''


@pytest.fixture
def echo_stage(tmp_path, monkeypatch):
    (tmp_path / "labtest_echo.py").write_text(textwrap.dedent(ECHO))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(stages.REGISTRY, "echo", "labtest_echo")  # the one registry line
    yield "echo"
    sys.modules.pop("labtest_echo", None)


def test_a_new_stage_gets_its_cli_parser(echo_stage, capsys):
    from lab.cli import build_parser

    args = build_parser(["train", "echo"]).parse_args(["train", "echo", "--loudness", "5"])
    config = configs.from_args(stages.get("echo").Config, args)
    assert config.loudness == 5 and config.max_steps == 100  # its own field, and the shared ones with their defaults
    assert configs.cli_command("echo", config) == "llm-lab train echo --loudness 5"
    with pytest.raises(SystemExit):
        build_parser(["train", "echo", "--help"]).parse_args(["train", "echo", "--help"])
    shown = capsys.readouterr().out
    assert "--loudness" in shown and "llm-lab train echo --parent SFT_RUN --loudness 5" in shown


def test_a_new_stage_gets_its_api_config_fields_and_preview(echo_stage):
    from pages import api

    fields = {f["name"]: f for f in api.config_fields("echo")}
    assert fields["loudness"]["default"] == 3 and fields["loudness"]["help"] == "how loud it echoes"
    assert list(fields)[:2] == ["parent", "data"]  # the order key puts the model and the data first
    assert api.cli_command("echo", '{"loudness": 7}') == "llm-lab train echo --loudness 7"
    preview = api.preview_data("echo", "world", 2)
    assert preview["format"] == "messages" and len(preview["preview"]) == 2  # it reads chats, as declared


def test_a_new_stage_gets_its_page(echo_stage):
    from pages.app import build

    components = build().config["components"]
    tabs = [c["props"].get("label") for c in components if c["type"] == "tabitem"]
    ids = {c["props"].get("elem_id"): c for c in components if c["props"].get("elem_id")}
    assert "Echo lab" in tabs and "echo-start" in ids and "echo-curves" in ids
    assert ids["echo-field-loudness"]["type"] == "number"
    assert ids["echo-field-parent"]["type"] == "dropdown"  # a run picker: its field names the stages it takes runs of


def test_declarations_hold_together():
    for name in stages.names():
        spec = stages.spec(name)
        config = stages.get(name).Config
        for f in configs.fields(config):
            assert set(f.metadata.get("runs") or ()) <= set(stages.names()), f"{name}.{f.name} offers runs of a stage that does not exist"
        assert all(field in {f.name for f in configs.fields(config)} for field in spec.lineage + ((spec.resume_from,) if spec.resume_from else ()))


def test_the_preview_shows_what_the_stage_reads(store, tmp_path):
    import gradio as gr

    from pages import api

    shown = api.preview_data("ppo", "world", 3)
    assert shown["format"] == "prompts" and all(list(r) == ["prompt"] and r["prompt"][-1]["role"] == "user" for r in shown["preview"])
    chats = tmp_path / "chats.jsonl"
    chats.write_text('{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}\n')
    shown = api.preview_data("grpo", str(chats))
    assert shown["format"] == "messages" and shown["preview"] == [{"prompt": [{"role": "user", "content": "Hi?"}]}]  # the prompt, not the chat
    notes = tmp_path / "notes.txt"
    notes.write_text("plain text\n\nwith no prompts")
    with pytest.raises(gr.Error, match="this stage needs preference or prompt_completion or messages"):
        api.preview_data("ppo", str(notes))  # refused as the stage refuses it


def test_the_gold_judge_of_compare_knows_the_world_a_model_learnt(store):
    from lab import inference
    from lab.runs import Run
    from lab.world import WorldConfig, build_world

    base = Run.create("pretrain", {"data": "world:3", "max_steps": 1})
    instruct = Run.create("sft", {"data": "chats.jsonl", "parent": base.id}, parent=base.id)
    for run in (base, instruct):  # folders with no job: not waiting in the queue of the store the other tests share
        run.update(status="failed", error="a lineage for the test, never run")
    assert inference.world_of_model(instruct.id).config.seed == 3  # through the lineage, past the user's chats
    fact = build_world(WorldConfig(seed=3)).eval_sets()["fact_qa"][0]
    score, _ = inference.gold_score([{"role": "user", "content": fact["question"]}], fact["answer"], inference.world_of_model(instruct.id))
    assert score is not None and score > 0.5


def test_precision_auto_takes_bf16_on_a_cpu_only_where_it_measured_faster():
    from lab import models

    assert models.use_bf16("cpu", "bf16") and not models.use_bf16("cpu", "fp32", 10**9)
    assert not models.use_bf16("cpu", "auto", 3_000_000)  # tiny: autocast's casts cost more than AMX saves
    assert models.use_bf16("cpu", "auto", 26_000_000) == models.cpu_has_bf16()  # small: 1.5-1.7 times faster with AMX


def test_reading_the_declarations_loads_no_training_stack():
    """The app's pages, the evaluations and the CLI's parsers read every stage's declaration: the Trainer (with
    peft and bitsandbytes) and TRL load only in a job that trains, or the app and each evaluation start seconds later."""
    import subprocess

    probe = ("import sys; from lab import stages; [stages.spec(s) for s in stages.names()]; "
             "print(sorted(m for m in ('transformers.trainer', 'peft', 'bitsandbytes', 'trl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
