import json

import pytest

from lab import data
from lab.data import DataError, as_messages, detect_format, load, read_rows, to_text


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path, rows):
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def error(source, **kw):
    with pytest.raises(DataError) as e:
        load(source, **kw)
    return str(e.value)


CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


# ------------------------------------------------------------------ formats and shapes


def test_txt_paragraphs_and_lines(tmp_path):
    d = load(write(tmp_path / "a.txt", "First doc\nstill first.\n\n  \nSecond doc.\n"))
    assert d.format == "text" and d.detected_from == "txt paragraphs"
    assert d.records == [{"text": "First doc\nstill first."}, {"text": "Second doc."}]
    d = load(write(tmp_path / "b.txt", "one\r\ntwo\n\nthree\n".replace("\n\n", "\n")))
    assert d.detected_from == "txt lines" and [r["text"] for r in d.records] == ["one", "two", "three"]


def test_jsonl_text_skips_blank_lines(tmp_path):
    d = load(write(tmp_path / "t.jsonl", '{"text": "a"}\n\n{"text": "b", "id": 3}\n'))
    assert (d.format, d.detected_from, d.records) == ("text", "jsonl text", [{"text": "a"}, {"text": "b"}])
    assert len(d) == 2 and d.preview(1) == [{"text": "a"}]
    assert load(jsonl(tmp_path / "c.jsonl", [{"content": "x"}])).records == [{"text": "x"}]


def test_messages_jsonl_flattens_content_parts(tmp_path):
    parts = [{"role": "system", "content": ""},
             {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
             {"role": "assistant", "content": "Hello!", "name": "bot"}]
    d = load(jsonl(tmp_path / "m.jsonl", [{"messages": CHAT}, {"messages": parts}]), want="messages")
    assert (d.format, d.detected_from) == ("messages", "jsonl messages")
    assert d.records[0] == {"messages": CHAT}
    # an empty system prompt is dropped; extra keys are not canonical
    assert d.records[1] == {"messages": [{"role": "user", "content": "Hi\nthere"}, {"role": "assistant", "content": "Hello!"}]}


def test_prompt_completion_csv_and_synonyms(tmp_path):
    d = load(write(tmp_path / "pc.csv", 'prompt, completion\n"2+2=",4\n"Say ""hi""","hi, you"\n'))
    assert (d.format, d.detected_from) == ("prompt_completion", "csv prompt/completion")
    assert d.records == [{"prompt": "2+2=", "completion": "4"}, {"prompt": 'Say "hi"', "completion": "hi, you"}]
    for p, c in [("prompt", "response"), ("question", "answer"), ("query", "response"), ("input", "output")]:
        d = load(jsonl(tmp_path / f"{p}.jsonl", [{p: "Q", c: 42}]))
        assert (d.format, d.records) == ("prompt_completion", [{"prompt": "Q", "completion": "42"}])
    assert to_text(d) == ["Q\n42"]
    assert as_messages(d) == [{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "42"}]}]


def test_csv_cells_with_json_conversations(tmp_path):
    cell = json.dumps(CHAT).replace('"', '""')
    d = load(write(tmp_path / "m.csv", f'messages\n"{cell}"\n'))
    assert d.records == [{"messages": CHAT}]
    assert read_rows(tmp_path / "m.csv") == [{"messages": CHAT}]


def test_alpaca_json(tmp_path):
    rows = [{"instruction": "Add.", "input": "2, 2", "output": "4"},
            {"instruction": "Greet.", "input": "", "output": "Hi", "system": "Be brief."}]
    d = load(write(tmp_path / "alpaca.json", json.dumps(rows)))
    assert (d.format, d.detected_from) == ("messages", "json alpaca")
    assert d.records[0]["messages"] == [{"role": "user", "content": "Add.\n\n2, 2"}, {"role": "assistant", "content": "4"}]
    assert d.records[1]["messages"] == [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "Greet."}, {"role": "assistant", "content": "Hi"}]
    # an object holding one list of records
    assert load(write(tmp_path / "wrapped.json", json.dumps({"data": rows}))).records == d.records


def test_sharegpt_jsonl(tmp_path):
    conv = [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]
    d = load(jsonl(tmp_path / "s.jsonl", [{"conversations": conv, "id": "x"}]))
    assert (d.format, d.detected_from) == ("messages", "jsonl sharegpt")
    assert d.records == [{"messages": [{"role": "system", "content": "Be kind."}] + CHAT}]
    d = load(jsonl(tmp_path / "s2.jsonl", [{"messages": conv[1:]}]))
    assert d.detected_from == "jsonl sharegpt" and d.records == [{"messages": CHAT}]
    assert to_text(d) == ["user: Hi\nassistant: Hello!"]


def test_preference_shapes(tmp_path):
    d = load(jsonl(tmp_path / "p.jsonl", [{"prompt": "2+2?", "chosen": "4", "rejected": "5", "score": 1}]))
    assert (d.format, d.records) == ("preference", [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}])
    assert to_text(d) == ["2+2?\n4"]

    user, good, bad = [CHAT[0]], [CHAT[1]], [{"role": "assistant", "content": "Go away."}]
    d = load(jsonl(tmp_path / "conv.jsonl", [{"prompt": user, "chosen": good, "rejected": bad}]))
    assert d.detected_from == "jsonl conversational preference"
    assert d.records == [{"prompt": user, "chosen": good, "rejected": bad}]
    assert to_text(d) == ["user: Hi\nassistant: Hello!"]

    # implicit prompt, conversational: full conversations sharing their opening turns
    d = load(jsonl(tmp_path / "imp.jsonl", [{"chosen": user + good, "rejected": user + bad}]))
    assert d.detected_from == "jsonl implicit-prompt conversational preference"
    assert d.records == [{"prompt": user, "chosen": good, "rejected": bad}]

    # implicit prompt, strings: the space before the answer goes with the answer
    d = load(jsonl(tmp_path / "imp.jsonl", [{"chosen": "Q: capital of France? A: Paris.", "rejected": "Q: capital of France? A: Pizza."}]))
    assert d.records == [{"prompt": "Q: capital of France? A:", "chosen": " Paris.", "rejected": " Pizza."}]
    assert to_text(d) == ["Q: capital of France? A: Paris."]
    # answers that differ mid-word keep the whole word
    d = load(jsonl(tmp_path / "word.jsonl", [{"chosen": "The answer is four", "rejected": "The answer is five"}]))
    assert d.records == [{"prompt": "The answer is", "chosen": " four", "rejected": " five"}]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["a", "b"], "completion": ["c", "d"]}), tmp_path / "x.parquet")
    d = load(tmp_path / "x.parquet", limit=1)
    assert (d.format, d.detected_from, d.records) == ("prompt_completion", "parquet prompt/completion",
                                                      [{"prompt": "a", "completion": "c"}])


def test_save_to_disk_folder(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"messages": CHAT}]).save_to_disk(str(tmp_path / "one"))
    d = load(tmp_path / "one")
    assert (d.format, d.detected_from, d.records) == ("messages", "saved dataset messages", [{"messages": CHAT}])
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"text": "tr"}]),
                          "test": datasets.Dataset.from_list([{"text": "te"}])}).save_to_disk(str(tmp_path / "dd"))
    assert load(tmp_path / "dd", split="test").records == [{"text": "te"}]
    msg = error(tmp_path / "dd", split="dev")
    assert "'dev'" in msg and "train" in msg and "test" in msg


def test_folder_of_files(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    write(folder / "b.txt", "second")
    write(folder / "a.txt", "first")
    write(folder / "notes.md", "ignored")
    assert [r["text"] for r in load(folder).records] == ["first", "second"]
    # a hub download keeps splits in separate files: take the asked one
    hub = tmp_path / "hub"
    (hub / "data").mkdir(parents=True)
    jsonl(hub / "data" / "train-0.jsonl", [{"text": "tr"}])
    jsonl(hub / "data" / "test-0.jsonl", [{"text": "te"}])
    assert load(hub).records == [{"text": "tr"}] and load(hub, split="test").records == [{"text": "te"}]


def test_dolly_keeps_its_context_in_the_user_turn(tmp_path):
    rows = [{"instruction": "Summarise this.", "context": "Cats sleep sixteen hours a day.", "response": "Cats sleep a lot.", "category": "summarization"},
            {"instruction": "Say hi.", "context": "", "response": "Hi!", "category": "open_qa"}]
    d = load(jsonl(tmp_path / "dolly.jsonl", rows), want="messages")
    assert (d.format, d.detected_from) == ("messages", "jsonl dolly")
    assert d.how == "Dolly-style: instruction + context → user, response → assistant"
    assert d.records == [
        {"messages": [{"role": "user", "content": "Summarise this.\n\nCats sleep sixteen hours a day."}, {"role": "assistant", "content": "Cats sleep a lot."}]},
        {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}]}]


@pytest.mark.parametrize("prompt,completion", [("inputs", "targets"), ("input", "target"), ("question", "answer"), ("query", "response")])
def test_flan_style_pairs(tmp_path, prompt, completion):
    d = load(jsonl(tmp_path / "flan.jsonl", [{prompt: "Translate to English: chat", completion: "cat", "task": "wmt"}]))
    assert (d.format, d.records) == ("prompt_completion", [{"prompt": "Translate to English: chat", "completion": "cat"}])
    assert f"{prompt} → the user's turn, {completion} → the assistant's answer" in d.how


HH = "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: What is 2+2?\n\nAssistant:"
HH_TURNS = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "What is 2+2?"}]


def test_hh_transcripts_become_turns_with_the_shared_history_as_prompt(tmp_path):
    path = jsonl(tmp_path / "hh.jsonl", [{"chosen": HH + " 4", "rejected": HH + " 5"}])
    d = load(path, want="preference")
    assert (d.format, d.detected_from) == ("preference", "jsonl hh-rlhf")
    assert "HH-RLHF" in d.how and "Human → user" in d.how
    assert d.records == [{"prompt": HH_TURNS, "chosen": [{"role": "assistant", "content": "4"}],
                          "rejected": [{"role": "assistant", "content": "5"}]}]
    # SFT reads the chosen transcript, every turn of it
    chats = load(path, want=("messages", "prompt_completion"))
    assert chats.records == [{"messages": HH_TURNS + [{"role": "assistant", "content": "4"}]}]
    # a single column of transcripts is chats for SFT, and stays text for pretraining
    text = jsonl(tmp_path / "t.jsonl", [{"text": HH + " 4"}])
    assert load(text, want="messages").records == chats.records
    assert load(text).records == [{"text": HH + " 4"}]
    # the history apart (prompt ends with "Assistant:"), each side its answer
    d = load(jsonl(tmp_path / "split.jsonl", [{"prompt": HH, "chosen": " 4", "rejected": " 5"}]), want="preference")
    assert d.records[0]["prompt"] == HH_TURNS and d.records[0]["chosen"] == [{"role": "assistant", "content": "4"}]


@pytest.mark.parametrize("chosen,rejected,message", [
    (HH + " 4", "\n\nHuman: Bye\n\nAssistant: Hello! How can I help?\n\nHuman: What is 2+2?\n\nAssistant: 5", "differ at turn 1"),
    (HH + " ", HH + " 5", "'chosen' turn 4 (Assistant) is empty"),
    ("Intro\n\nHuman: Hi\n\nAssistant: 4", HH + " 5", "text before its first 'Human:' turn"),
    (HH + " 4\n\nHuman: and?", HH + " 5", "'chosen' ends with a user turn"),
    (HH + " 4", HH + " 4", "the same answer"),
])
def test_a_bad_hh_transcript_is_refused_with_its_line(tmp_path, chosen, rejected, message):
    good = {"chosen": HH + " 4", "rejected": HH + " 5"}
    msg = error(jsonl(tmp_path / "hh.jsonl", [good, {"chosen": chosen, "rejected": rejected}]), want="preference")
    assert msg.startswith("hh.jsonl line 2: ") and message in msg and "Human:" in msg


def test_a_column_mapping_reads_unusual_names(tmp_path):
    rows = [{"q": "2+2?", "a": "4", "id": 1}]
    d = load(jsonl(tmp_path / "qa.jsonl", rows), want=("messages", "prompt_completion"), columns="prompt=q, completion=a")
    assert (d.format, d.records) == ("prompt_completion", [{"prompt": "2+2?", "completion": "4"}])
    assert d.how.startswith("your columns q → prompt, a → completion")
    dialog = [{"speaker": "user", "text": "hi"}, {"speaker": "assistant", "text": "hello"}]
    d = load(jsonl(tmp_path / "chat.jsonl", [{"dialog": dialog}]), want="messages", columns="messages=dialog,role=speaker,content=text")
    assert d.records == [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    # a CSV cell holding the turns as JSON, and a preference file, mapped
    csv_path = write(tmp_path / "p.csv", 'question,good,bad\n"2+2?",4,5\n')
    d = load(csv_path, want="preference", columns="prompt=question,chosen=good,rejected=bad")
    assert d.records == [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}]
    # the mapped columns win over other shapes the file also holds
    both = jsonl(tmp_path / "both.jsonl", [{"text": "a document", "q": "2+2?", "a": "4"}])
    assert load(both, columns="prompt=q,completion=a").format == "prompt_completion"


def test_a_mapping_naming_a_missing_column_is_refused_with_the_columns_found(tmp_path):
    path = jsonl(tmp_path / "qa.jsonl", [{"q": "2+2?", "a": "4"}])
    msg = error(path, columns="prompt=question,completion=a")
    assert msg == "qa.jsonl: --columns names a column it does not have (prompt=question). Its columns are: q, a."
    msg = error(jsonl(tmp_path / "chat.jsonl", [{"dialog": [{"who": "user", "text": "hi"}]}]), columns="messages=dialog,role=speaker,content=text")
    assert "role=speaker" in msg and "who, text" in msg
    with pytest.raises(data.UserError, match="'promt' is not one of the lab's names .did you mean prompt"):
        load(path, columns="promt=q")
    with pytest.raises(data.UserError, match="'completion' is not NAME=COLUMN"):
        load(path, columns="prompt=q,completion")
    # without a mapping, the refusal says how to map
    assert "--columns" in error(path) and "prompt=question,completion=answer" in error(path)


def test_want_prefers_matching_shape_and_detect_format():
    rows = [{"prompt": "p", "chosen": "c", "rejected": "r", "messages": CHAT}]
    assert detect_format(rows) == ("preference", "preference")
    assert detect_format(rows, want="messages") == ("messages", "messages")
    assert detect_format([{"instruction": "i", "input": "", "output": "o"}]) == ("messages", "alpaca")


# ------------------------------------------------------------------ errors


def test_malformed_json_line(tmp_path):
    write(tmp_path / "data.jsonl", '{"text": "a"}\n\n{"text": "b" "c"}\n')
    msg = error(tmp_path / "data.jsonl")
    assert msg.startswith("data.jsonl line 3: not valid JSON (Expecting ',' delimiter at column 14)")
    assert 'one JSON object, e.g. {"text": "..."}' in msg


def test_a_structure_error_shows_a_record_of_the_shape_the_stage_reads(tmp_path):
    bad = write(tmp_path / "chats.jsonl", '{"messages": [1, 2]\n')
    chats = error(bad, want=("messages", "prompt_completion"))
    assert 'one JSON object, e.g. {"messages": [{"role": "user", "content": "What is 2+2?"}' in chats and '"text"' not in chats
    empty = error(write(tmp_path / "pairs.jsonl", ""), want="preference")
    assert 'e.g. {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}' in empty


def test_json_line_not_object(tmp_path):
    msg = error(write(tmp_path / "data.jsonl", '{"text": "a"}\n["a", "b"]\n'))
    assert "data.jsonl line 2" in msg and "a list" in msg and "JSON object" in msg


def test_bad_json_file(tmp_path):
    msg = error(write(tmp_path / "data.json", '[\n  {"text": "a"},\n  {"text": }\n]'))
    assert "data.json line 3: not valid JSON" in msg and "list of objects" in msg


def test_no_known_columns(tmp_path):
    msg = error(write(tmp_path / "data.csv", "a,b\n1,2\n"))
    assert msg.startswith("data.csv: no known columns (found: a, b). Accepted shapes: text | messages")
    assert "instruction+output (Alpaca)" in msg and "ShareGPT" in msg


def test_record_lacks_field(tmp_path):
    msg = error(jsonl(tmp_path / "data.jsonl", [{"prompt": "p", "completion": "c"}] * 2 + [{"prompt": "p"}]))
    assert msg.startswith("data.jsonl line 3: record lacks 'completion' (found keys: prompt).")
    assert '{"prompt": "What is 2+2?", "completion": "4"}' in msg
    # csv rows are counted after the header; a short row lacks its last cells
    msg = error(write(tmp_path / "data.csv", "question,answer\nq,a\nq2\n"))
    assert msg.startswith("data.csv row 2: record lacks 'answer' (found keys: question).")
    msg = error(write(tmp_path / "empty.csv", "prompt,completion\nq,a\nq2,\n"))
    assert "empty.csv row 2: 'completion' is empty" in msg and '"completion"' in msg


def test_wrong_type_and_parquet_row(tmp_path):
    msg = error(jsonl(tmp_path / "data.jsonl", [{"text": "a"}, {"text": ["a", "b"]}]))
    assert "data.jsonl line 2: 'text' should be a string, found a list" in msg and '{"text":' in msg
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": ["a", "b"], "completion": ["c", None]}), tmp_path / "data.parquet")
    msg = error(tmp_path / "data.parquet")
    assert "data.parquet row 2: 'completion' is null" in msg and '"completion"' in msg


def test_message_errors(tmp_path):
    bad_role = [CHAT[0], {"role": "tool", "content": "x"}]
    msg = error(jsonl(tmp_path / "data.jsonl", [{"messages": CHAT}, {"messages": bad_role}]))
    assert "data.jsonl line 2: messages[1] has unknown role 'tool'" in msg and "system, user, assistant" in msg
    msg = error(jsonl(tmp_path / "data.jsonl", [{"messages": CHAT}, {"messages": [CHAT[0]]}]))
    assert "data.jsonl line 2: 'messages' has no assistant turn (roles found: user)" in msg
    msg = error(jsonl(tmp_path / "data.jsonl", [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": " "}]}]))
    assert "data.jsonl line 1: conversations[1] (assistant) has empty content" in msg and '"from": "human"' in msg


def test_preference_errors(tmp_path):
    msg = error(jsonl(tmp_path / "data.jsonl", [{"chosen": "Yes", "rejected": "No"}]))
    assert "data.jsonl line 1" in msg and "share no prompt" in msg and '"prompt"' in msg


def test_empty_files(tmp_path):
    assert error(write(tmp_path / "data.jsonl", "\n  \n")).startswith("data.jsonl is empty: no records found.")
    assert error(write(tmp_path / "data.txt", " \n\t\n")).startswith("data.txt is empty: no records found.")
    assert "data.csv is empty" in error(write(tmp_path / "data.csv", "prompt,completion\n"))


def test_not_utf8(tmp_path):
    (tmp_path / "data.txt").write_bytes(b"hello\nworld \xff\n")
    msg = error(tmp_path / "data.txt")
    assert msg.startswith("data.txt is not UTF-8 text (invalid byte 0xff at offset 12, line 2).")
    assert "Re-save it as UTF-8" in msg


def test_unsupported_extension(tmp_path):
    msg = error(write(tmp_path / "data.xlsx", "x"))
    assert "data.xlsx: unsupported file type '.xlsx'" in msg and ".jsonl" in msg and ".parquet" in msg


def test_want_mismatch(tmp_path):
    msg = error(jsonl(tmp_path / "data.jsonl", [{"text": "a"}]), want=("messages", "prompt_completion"))
    assert msg.startswith("data.jsonl holds text records (detected: jsonl text); this stage needs messages or "
                          "prompt_completion — e.g. {\"messages\": [")
    with pytest.raises(DataError):
        as_messages(load(tmp_path / "data.jsonl"))
    with pytest.raises(ValueError):
        load(tmp_path / "data.jsonl", want="chat")


def test_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg = error("owner/name")
    assert msg.startswith("owner/name is not a local file or folder, and the Hugging Face hub is offline")
    assert "save_to_disk" in msg and "pass the folder" in msg


def test_missing_path(tmp_path):
    write(tmp_path / "train.jsonl", '{"text": "a"}\n')
    msg = error(tmp_path / "trian.jsonl")
    assert "trian.jsonl does not exist" in msg and "Did you mean" in msg and "train.jsonl" in msg


def test_never_imports_gradio():
    assert "gradio" not in data.__dict__ and "import gradio" not in open(data.__file__).read()


def test_a_document_over_the_limit_is_refused_with_its_line(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_MAX_DOCUMENT_CHARS", "1000")
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"text": "short"}) + "\n" + json.dumps({"text": "x" * 5000}) + "\n")
    with pytest.raises(DataError, match=r"corpus.jsonl line 2: a record of 5,000 characters, over the limit of 1,000 \(LAB_MAX_DOCUMENT_CHARS\)"):
        load(path)


def test_a_file_of_prompts_alone_is_what_online_rl_reads(tmp_path):
    from lab import stages

    plain = jsonl(tmp_path / "prompts.jsonl", [{"prompt": "What is 2+2?"}, {"prompt": "Name a colour."}])
    assert stages.prompt_set(str(plain)) == [[{"role": "user", "content": "What is 2+2?"}], [{"role": "user", "content": "Name a colour."}]]
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"}]
    assert stages.prompt_set(str(jsonl(tmp_path / "conv.jsonl", [{"prompt": turns}]))) == [turns]
    assert stages.prompt_set(str(jsonl(tmp_path / "q.jsonl", [{"question": "2+2?"}])), columns="prompt=question") == [[turns[2]]]
    assert to_text(load(plain)) == ["What is 2+2?", "Name a colour."]  # a tokenizer can read it too
    assert "holds prompt records" in error(plain, want="messages")
    assert "the prompt's last turn is assistant" in error(jsonl(tmp_path / "bad.jsonl", [{"prompt": turns[:2]}]), want="prompt")


def stages_prompts(path):
    from lab import stages

    return [{"prompt": p} for p in stages.prompt_set(str(path))]


def test_answers_labelled_good_or_bad_for_kto(tmp_path):
    rows = [{"prompt": "2+2?", "completion": "4", "label": True}, {"prompt": "2+2?", "completion": "5", "label": "false"}]
    d = load(jsonl(tmp_path / "l.jsonl", rows), want="unpaired")
    assert (d.format, d.records) == ("unpaired", [{"prompt": "2+2?", "completion": "4", "label": True}, {"prompt": "2+2?", "completion": "5", "label": False}])
    csv_path = write(tmp_path / "l.csv", "prompt,completion,label\n2+2?,4,1\n2+2?,5,0\n")
    assert [r["label"] for r in load(csv_path, want="unpaired").records] == [True, False]
    # chat training would learn the bad answers too: refused; online RL reads their prompts
    assert "train KTO on it" in error(tmp_path / "l.jsonl", want=("messages", "prompt_completion"))
    assert [r["prompt"] for r in stages_prompts(tmp_path / "l.jsonl")] == [[{"role": "user", "content": "2+2?"}]]
    msg = error(jsonl(tmp_path / "bad.jsonl", [{"prompt": "2+2?", "completion": "4", "label": "maybe"}]), want="unpaired")
    assert msg.startswith("bad.jsonl line 1: 'label' is \"maybe\"") and "true or false" in msg
    from lab import stages

    pairs = jsonl(tmp_path / "p.jsonl", [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}] * 3)
    train, _ = stages.labelled_splits(str(pairs))  # a pair is a good and a bad answer
    assert sorted(r["label"] for r in train) == [False, False, False, True, True, True]
    assert train[0]["prompt"] == [{"role": "user", "content": "2+2?"}]
