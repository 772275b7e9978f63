"""Load the user's data (a file, a folder or a hub id), map common community shapes onto the four canonical
formats the stages consume, and validate every record.

Every mistake a user can make surfaces as a DataError whose message names the file, the line or row, what was
found, what was expected and what to do, because the UI shows that message as-is. Imports no gradio.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.errors import DataError, UserError

FORMATS = ("text", "messages", "prompt_completion", "preference")


@dataclass
class Loaded:
    records: list[dict]  # canonical records, see EXAMPLES
    format: str  # one of FORMATS
    source: str  # what the user passed
    detected_from: str  # how the format was recognised, e.g. "jsonl alpaca" or "txt paragraphs"

    def __len__(self):
        return len(self.records)

    def preview(self, n=5) -> list[dict]:
        return self.records[:n]


EXAMPLES = {
    "text": {"text": "Once upon a time there was a tiny language model."},
    "messages": {"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]},
    "prompt_completion": {"prompt": "The capital of France is", "completion": " Paris."},
    "preference": {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
}
SHAREGPT = [{"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": "4"}]

# Shapes in detection order: (name, format, the keys that identify it, an example record).
# Preference comes first because preference sets (UltraFeedback, HH) often also carry 'messages' or 'prompt';
# Alpaca comes before input/output because Alpaca rows have an 'input' too.
SHAPES = [
    ("preference", "preference", ("chosen", "rejected"), EXAMPLES["preference"]),
    ("messages", "messages", ("messages",), EXAMPLES["messages"]),
    ("sharegpt", "messages", ("conversations",), {"conversations": SHAREGPT}),
    ("sharegpt", "messages", ("conversation",), {"conversation": SHAREGPT}),
    ("alpaca", "messages", ("instruction", "output"), {"instruction": "Add the numbers.", "input": "2, 2", "output": "4"}),
    *[(f"{p}/{c}", "prompt_completion", (p, c), {p: "What is 2+2?", c: "4"})
      for p, c in [("prompt", "completion"), ("prompt", "response"), ("question", "answer"), ("query", "response"), ("input", "output")]],
    ("text", "text", ("text",), EXAMPLES["text"]),
    ("content", "text", ("content",), {"content": EXAMPLES["text"]["text"]}),
]
ACCEPTED_SHAPES = ("text | messages | prompt+completion | prompt+chosen+rejected | instruction+output (Alpaca) "
                   "| conversations with from/value (ShareGPT)")
KNOWN_KEYS = {k for shape in SHAPES for k in shape[2]} | {"prompt", "system"}
ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
         "bot": "assistant", "model": "assistant", "chatgpt": "assistant"}
EXTENSIONS = (".txt", ".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet")
SPLIT_WORDS = {"train", "test", "validation", "valid", "dev", "eval"}
# The record the messages about a file's structure show: the one the stage reads (`load`'s want), by default text.
TEXT = '{"text": "..."}'
EMPTY_HINTS = {
    ".txt": "Put plain text in it and separate documents with a blank line.",
    ".jsonl": "Put one JSON object per line in it, e.g. {example}.",
    ".json": "Put a list of objects in it, e.g. [{example}].",
    ".csv": "Put a header row (e.g. prompt,completion) and one row per record in it.",
    ".parquet": "Write at least one row to it.",
}


def _dumps(value, limit=None):
    s = json.dumps(value, ensure_ascii=False, default=str)
    return s if limit is None or len(s) <= limit else s[: limit - 1] + "…"


def _kind(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _keys(row):
    return ", ".join(map(str, row)) or "none"


# ---------------------------------------------------------------------------------------------------------
# reading: each reader returns (rows, where, kind); where[i] names row i in error messages, e.g. "x.csv row 3"


def _decode(path: Path, label: str) -> str:
    raw = path.read_bytes()
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0  # Excel and Notepad write one
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = e.start + bom
        line = raw.count(b"\n", 0, at) + 1
        utf16 = raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
        raise DataError(
            f"{label} is not UTF-8 text (invalid byte 0x{raw[at]:02x} at offset {at}, line {line})."
            + (" It looks like UTF-16 (what Windows calls 'Unicode')." if utf16 else "")
            + " Re-save it as UTF-8 (most editors: Save As → Encoding: UTF-8), or convert it with e.g. "
            f"`iconv -f {'utf-16' if utf16 else 'latin1'} -t utf-8 {path.name} > utf8-{path.name}`.") from None


def _read_txt(path, label, limit):
    text = _decode(path, label).replace("\r\n", "\n").strip()
    # Paragraphs when there are blank lines between documents; otherwise every line is its own document.
    blank = re.compile(r"\n[^\S\n]*\n")
    kind = "txt paragraphs" if blank.search(text) else "txt lines"
    docs = [d.strip() for d in (blank.split(text) if kind == "txt paragraphs" else text.split("\n")) if d.strip()]
    docs = docs[:limit] if limit is not None else docs
    return [{"text": d} for d in docs], [f"{label} document {i}" for i in range(1, len(docs) + 1)], kind


def _json_lines(text, label, limit, example=TEXT):
    rows, where = [], []
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold a raw U+2028
        if limit is not None and len(rows) >= limit:
            break
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{label} line {n}: not valid JSON ({e.msg} at column {e.colno}). "
                            f"Each line must hold one JSON object, e.g. {example}") from None
        if not isinstance(row, dict):
            raise DataError(f"{label} line {n}: found {_kind(row)} ({_dumps(row, 60)}), expected a JSON object. "
                            f"Each line must hold one JSON object, e.g. {example}")
        rows.append(row)
        where.append(f"{label} line {n}")
    return rows, where


def _read_json(path, label, limit, example=TEXT):
    text = _decode(path, label)
    kind = "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "json"
    # A .json file that is really JSON Lines, or a .jsonl file that holds one list, is read as what it is.
    if kind == "jsonl" and not text.lstrip().startswith("["):
        return *_json_lines(text, label, limit, example), kind
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        first = next((line for line in text.split("\n") if line.strip()), "")
        try:
            jsonl = isinstance(json.loads(first), dict)
        except json.JSONDecodeError:
            jsonl = False
        if jsonl or kind == "jsonl":
            return *_json_lines(text, label, limit, example), "jsonl"
        raise DataError(f"{label} line {e.lineno}: not valid JSON ({e.msg} at column {e.colno}). "
                        f"A .json file must hold a list of objects, e.g. [{example}], "
                        "or one object per line (JSON Lines).") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if set(data) & KNOWN_KEYS:  # a file holding a single record
            data = [data]
        elif len(lists) == 1:  # {"data": [...]}, {"version": 2, "rows": [...]}
            data = lists[0]
        else:
            raise DataError(f"{label} holds a JSON object with keys ({_keys(data)}) but no single list of records. "
                            f"Expected a list of objects, e.g. [{example}], or an object with one list, "
                            f'e.g. {{"data": [{example}]}}.')
    if not isinstance(data, list):
        raise DataError(f"{label} holds {_kind(data)} ({_dumps(data, 60)}); expected a list of objects, "
                        f"e.g. [{example}].")
    data = data[:limit] if limit is not None else data
    for i, row in enumerate(data, 1):
        if not isinstance(row, dict):
            raise DataError(f"{label} record {i}: found {_kind(row)} ({_dumps(row, 60)}), expected a JSON object, "
                            f"e.g. {example}.")
    return data, [f"{label} record {i}" for i in range(1, len(data) + 1)], kind


def _cell(key, value, label, n):
    # Spreadsheets can only hold conversations as JSON text in a cell.
    if key not in ("messages", "conversations", "conversation", "prompt", "chosen", "rejected") or not value.lstrip().startswith("["):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        if key in ("prompt", "chosen", "rejected"):  # plain text that happens to start with '['
            return value
        raise DataError(f"{label} row {n}: the {key!r} cell is not a valid JSON list ({e.msg} at column {e.colno}). "
                        f"Write the conversation as JSON, e.g. {_dumps(EXAMPLES['messages']['messages'])}") from None
    is_turns = isinstance(parsed, list) and all(isinstance(t, dict) for t in parsed)
    return parsed if is_turns or key not in ("prompt", "chosen", "rejected") else value


def _read_csv(path, label, limit):
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    csv.field_size_limit(2**31 - 1)  # whole documents in one cell exceed the 128 KiB default
    reader = csv.DictReader(io.StringIO(_decode(path, label), newline=""), delimiter=sep)
    rows, where = [], []
    try:
        if reader.fieldnames:
            reader.fieldnames = [f.strip() for f in reader.fieldnames]  # "prompt, completion" is a common header
        for n, row in enumerate(reader, 1):
            if limit is not None and len(rows) >= limit:
                break
            if None in row:
                raise DataError(f"{label} row {n}: {len(reader.fieldnames) + len(row[None])} cells but the header has "
                                f"{len(reader.fieldnames)} columns ({', '.join(reader.fieldnames)}). "
                                f"Quote cells that contain a '{sep}', e.g. \"a{sep} b\".")
            # A short row leaves its missing cells as None: treat them as absent keys.
            rows.append({k: _cell(k, v, label, n) for k, v in row.items() if v is not None})
            where.append(f"{label} row {n}")
    except csv.Error as e:
        raise DataError(f"{label} row {len(rows) + 1}: not valid CSV ({e}). "
                        "Save it as CSV (UTF-8) with a header row.") from None
    return rows, where, path.suffix.lower().lstrip(".")


def _read_parquet(path, label, limit):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError variants for broken files
        raise DataError(f"{label} could not be read as Parquet ({e}). Check that the file is a complete "
                        ".parquet file (e.g. written by pandas.DataFrame.to_parquet).") from None
    rows = (table.slice(0, limit) if limit is not None else table).to_pylist()
    return rows, [f"{label} row {i}" for i in range(1, len(rows) + 1)], "parquet"


def _read_file(path: Path, label: str, limit, example=TEXT):
    suffix = path.suffix.lower()
    if suffix not in EXTENSIONS:
        raise DataError(f"{label}: unsupported file type '{suffix or '(no extension)'}'. Accepted: {', '.join(EXTENSIONS)}, "
                        "or a folder (saved with datasets' save_to_disk, or holding such files).")
    reader = {".txt": _read_txt, ".csv": _read_csv, ".tsv": _read_csv, ".parquet": _read_parquet}.get(suffix)
    rows, where, kind = reader(path, label, limit) if reader else _read_json(path, label, limit, example)
    if not rows:
        hint = EMPTY_HINTS.get(suffix, EMPTY_HINTS.get({".tsv": ".csv", ".ndjson": ".jsonl"}.get(suffix), "")).format(example=example)
        raise DataError(f"{label} is empty: no records found. {hint}")
    return rows, where, kind


def _rows_of_dataset(ds, label, limit):
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    rows = ds.to_list()
    if not rows:
        raise DataError(f"{label} is empty: no records found. Save a dataset with at least one row.")
    return rows, [f"{label} row {i}" for i in range(1, len(rows) + 1)]


def _read_folder(folder: Path, label, split, limit, example=TEXT):
    if (folder / "dataset_dict.json").exists() or (folder / "state.json").exists():
        import datasets

        try:
            ds = datasets.load_from_disk(str(folder))
        except Exception as e:
            raise DataError(f"{label} looks like a folder written by datasets' save_to_disk but could not be loaded "
                            f"({type(e).__name__}: {e}). Save it again with Dataset.save_to_disk.") from None
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{label} has no split {split!r} (it has: {', '.join(ds)}). Pick one of those splits.")
            ds = ds[split]
        return *_rows_of_dataset(ds, label, limit), "saved dataset"

    def tokens(p):
        return set(re.split(r"[^a-z0-9]+", str(p.relative_to(folder)).lower()))

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise DataError(f"{label} holds no data files ({', '.join(EXTENSIONS)}) and is not a folder saved with "
                        "datasets' save_to_disk. Put your data files in it, or pass a file.")
    # A dataset downloaded from the hub keeps each split in its own files (data/train-00000.parquet, test.jsonl):
    # when every file is named after a split, take only the asked split.
    if all(tokens(p) & SPLIT_WORDS for p in files):
        found = sorted(set.union(*(tokens(p) & SPLIT_WORDS for p in files)))
        files = [p for p in files if split in tokens(p)]
        if not files:
            raise DataError(f"{label} has files for the splits {', '.join(found)} but none for split {split!r}. "
                            "Pick one of those splits.")
    kinds = sorted({p.suffix.lower() for p in files})
    if len(kinds) > 1:
        raise DataError(f"{label} mixes files of different kinds ({', '.join(kinds)}). "
                        "Keep one kind of data file per folder.")
    rows, where, seen = [], [], []
    for p in files:
        r, w, kind = _read_file(p, str(p.relative_to(folder.parent)), None if limit is None else limit - len(rows), example)
        rows += r
        where += w
        seen.append(kind)
        if limit is not None and len(rows) >= limit:
            break
    return rows, where, seen[0] if len(set(seen)) == 1 else kinds[0].lstrip(".")


def _read_hub(source, split, limit):
    repo, _, config = source.partition(":")
    advice = (f"To use it, download it on a machine with internet, e.g. `python -c \"import datasets; "
              f"datasets.load_dataset('{repo}'{f', {config!r}' if config else ''}, split='{split}')"
              f".save_to_disk('{repo.split('/')[-1]}')\"`, copy that folder here and pass the folder's path.")
    offline = [v for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
               if os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")]
    if offline:
        raise DataError(f"{source} is not a local file or folder, and the Hugging Face hub is offline "
                        f"({offline[0]}=1), so it cannot be downloaded. {advice}")
    import datasets

    try:
        ds = datasets.load_dataset(repo, config or None, split=split if limit is None else f"{split}[:{limit}]")
    except datasets.exceptions.DatasetNotFoundError:
        raise DataError(f"{source} is not a local file or folder, and the Hugging Face hub has no dataset by that "
                        "name (or it is private/gated: log in with `hf auth login`). Check the path or the id.") from None
    except ValueError as e:  # an unknown split, or a config that must be named
        raise DataError(f"{source}: {e} (pick a config by passing owner/name:config, and a split with split=)") from None
    except Exception as e:  # network failures come in many classes (ConnectionError, HTTP errors, timeouts)
        raise DataError(f"{source} is not a local file or folder, and downloading it from the Hugging Face hub "
                        f"failed ({type(e).__name__}: {e}). {advice}") from None
    return *_rows_of_dataset(ds, source, limit), "hub"


def _read(source, split="train", limit=None, example=TEXT):
    """-> (rows, where, kind, label): raw rows, where each came from, how they were read, and the source's name.
    `example`: the record a message about the file's structure shows."""
    path = Path(source).expanduser()
    label = path.name or str(source)
    if path.is_dir():
        return *_read_folder(path, label, split, limit, example), label
    if path.is_file():
        return *_read_file(path, label, limit, example), label
    s = str(source)
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?", s) and path.suffix.lower() not in EXTENSIONS:
        return *_read_hub(s, split, limit), s
    near = difflib.get_close_matches(path.name, os.listdir(path.parent), n=1, cutoff=0.8) if path.parent.is_dir() else []
    raise DataError(f"{s} does not exist: no such file or folder."
                    + (f" Did you mean {path.parent / near[0]}?" if near else " Check the path.")
                    + " (A Hugging Face dataset id looks like owner/name.)")


def read_rows(source, split="train") -> list[dict]:
    """The raw rows of a file, folder or hub id, before any mapping or validation."""
    return _read(source, split)[0]


# ---------------------------------------------------------------------------------------------------------
# detecting and mapping onto the canonical formats


def _wanted(want):
    wanted = (want,) if isinstance(want, str) else tuple(want or ())
    if bad := [w for w in wanted if w not in FORMATS]:
        raise UserError(f"unknown format(s) {bad}; expected some of {FORMATS}")
    return wanted


def _detect(rows, label, wanted=()):
    if not rows:
        raise DataError(f"{label} is empty: no records found.")
    keys = dict.fromkeys(k for row in rows for k in row)  # union, in first-seen order
    matches = [s for s in SHAPES if all(k in keys for k in s[2])]
    if not matches:
        found = ", ".join(map(str, list(keys)[:20])) + (", …" if len(keys) > 20 else "")
        raise DataError(f"{label}: no known columns (found: {found or 'none'}). Accepted shapes: {ACCEPTED_SHAPES}")
    # Data holding several shapes (UltraFeedback has chosen/rejected and messages) serves the stage that asks.
    shape = next((s for s in matches if s[1] in wanted), matches[0])
    name, first = shape[0], next((row for row in rows if all(k in row for k in shape[2])), rows[0])
    if name == "preference":
        name = ("implicit-prompt " if first.get("prompt") is None else "") + \
               ("conversational preference" if isinstance(first.get("chosen"), list) else "preference")
    elif name == "messages" and isinstance(turns := first.get("messages"), list) and turns \
            and isinstance(turns[0], dict) and "from" in turns[0]:
        name = "sharegpt"
    return shape, name


def detect_format(rows: list[dict], source: str = "", want: str | Sequence[str] | None = None) -> tuple[str, str]:
    """-> (format, detected_from), e.g. ("messages", "alpaca"). `want` breaks ties when rows hold several shapes."""
    shape, name = _detect(rows, source or "the data", _wanted(want))
    return shape[1], name


def _require(row, key, where, hint):
    if row.get(key) is None:
        found = f"{key!r} is null" if key in row else f"record lacks {key!r} (found keys: {_keys(row)})"
        raise DataError(f"{where}: {found}. {hint}")
    return row[key]


def _string(row, key, where, hint, optional=False):
    if optional and row.get(key) is None:
        return ""
    value = _require(row, key, where, hint)
    if isinstance(value, (int, float)) and not isinstance(value, bool):  # numeric answers (GSM8K-style) are text
        return str(value)
    if not isinstance(value, str):
        raise DataError(f"{where}: {key!r} should be a string, found {_kind(value)} ({_dumps(value, 60)}). {hint}")
    return value


def _filled(row, key, where, hint):
    value = _string(row, key, where, hint)
    if not value.strip():
        raise DataError(f"{where}: {key!r} is empty. {hint}")
    return value


def _content(content, at):
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI-style parts: [{"type": "text", "text": "..."}]
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
            else:
                raise DataError(f"{at} has a content part that is not text ({_dumps(part, 60)}). "
                                'Only text parts like {"type": "text", "text": "..."} are supported.')
        return "\n".join(parts)
    raise DataError(f"{at} content should be a string, found {_kind(content)} ({_dumps(content, 60)}).")


def _turns(value, where, key, hint):
    if isinstance(value, str) and value.lstrip().startswith("["):  # a conversation stored as JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if not isinstance(value, list):
        raise DataError(f"{where}: {key!r} should be a list of turns like "
                        f"{_dumps(EXAMPLES['messages']['messages'])}, found {_kind(value)} ({_dumps(value, 60)}). {hint}")
    turns = []
    for i, turn in enumerate(value):
        at = f"{where}: {key}[{i}]"
        if not isinstance(turn, dict):
            raise DataError(f'{at} should be an object like {{"role": "user", "content": "..."}}, '
                            f"found {_kind(turn)} ({_dumps(turn, 60)}). {hint}")
        if "role" in turn:
            role, content = turn["role"], turn.get("content")
        elif "from" in turn:  # ShareGPT
            role, content = turn["from"], turn.get("value")
        else:
            raise DataError(f"{at} has no 'role' (found keys: {_keys(turn)}). Each turn needs 'role' and 'content' "
                            f"(or ShareGPT's 'from' and 'value'). {hint}")
        canonical = ROLES.get(role.strip().lower()) if isinstance(role, str) else None
        if canonical is None:
            raise DataError(f"{at} has unknown role {role!r}. Accepted roles: system, user, assistant "
                            "(ShareGPT's human and gpt are mapped to user and assistant).")
        if content is None:
            raise DataError(f"{at} ({canonical}) has no content (found keys: {_keys(turn)}). {hint}")
        content = _content(content, at)
        if not content.strip():
            if canonical == "system":  # many exports carry an empty system prompt on every row
                continue
            raise DataError(f"{at} ({canonical}) has empty content. {hint}")
        turns.append({"role": canonical, "content": content})
    return turns


def _messages(value, where, key, hint):
    turns = _turns(value, where, key, hint)
    roles = [t["role"] for t in turns]
    for needed in ("user", "assistant"):
        if needed not in roles:
            raise DataError(f"{where}: {key!r} has no {needed} turn (roles found: {', '.join(roles) or 'none'}). "
                            f"A conversation needs at least one user and one assistant turn. {hint}")
    return turns


def _shared_prefix(chosen, rejected, where, hint):
    """Split an implicit-prompt pair of strings into (prompt, chosen, rejected)."""
    n = len(os.path.commonprefix([chosen, rejected]))
    if 0 < n < min(len(chosen), len(rejected)) and not chosen[n - 1].isspace() \
            and not chosen[n].isspace() and not rejected[n].isspace():
        while n > 0 and not chosen[n - 1].isspace():  # the answers differ mid-word: keep that word in the answers
            n -= 1
    if n > 0 and chosen[n - 1] == " ":  # tokenizers attach the space to the next word, so it belongs to the answer
        n -= 1
    prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    if not prompt.strip():
        raise DataError(f"{where}: 'chosen' and 'rejected' share no prompt (no common beginning) and there is no "
                        f"'prompt' field. Add the prompt, e.g. {_dumps(EXAMPLES['preference'])}")
    if not chosen.strip() or not rejected.strip():
        raise DataError(f"{where}: after the shared prompt, 'chosen' or 'rejected' is empty (are they identical?). {hint}")
    return prompt, chosen, rejected


def _preference(row, where, hint):
    for key in ("chosen", "rejected"):
        _require(row, key, where, hint)
    if isinstance(row["chosen"], list) or isinstance(row["rejected"], list):
        # TRL's conversational shape; stays conversational because TRL applies the chat template itself.
        chosen = _turns(row["chosen"], where, "chosen", hint)
        rejected = _turns(row["rejected"], where, "rejected", hint)
        prompt = row.get("prompt")
        if isinstance(prompt, list):
            prompt = _turns(prompt, where, "prompt", hint)
        else:
            # Implicit prompt: full conversations that share their opening turns. UltraFeedback-style rows
            # also carry the prompt as a string, which those shared turns already hold.
            n = 0
            while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
                n += 1
            if n:
                prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
            elif isinstance(prompt, str) and prompt.strip():
                prompt = [{"role": "user", "content": prompt}]
            else:
                raise DataError(f"{where}: 'chosen' and 'rejected' share no opening turns to use as the prompt, and "
                                "there is no 'prompt' field. Add a 'prompt' with the conversation so far, e.g. "
                                f'{{"prompt": [{{"role": "user", "content": "What is 2+2?"}}], '
                                f'"chosen": [{{"role": "assistant", "content": "4"}}], '
                                f'"rejected": [{{"role": "assistant", "content": "5"}}]}}')
        if "user" not in {t["role"] for t in prompt}:
            raise DataError(f"{where}: the prompt has no user turn (roles: {', '.join(t['role'] for t in prompt) or 'none'}). {hint}")
        for key, turns in (("chosen", chosen), ("rejected", rejected)):
            if "assistant" not in {t["role"] for t in turns}:
                raise DataError(f"{where}: {key!r} has no assistant turn after the prompt "
                                f"(roles: {', '.join(t['role'] for t in turns) or 'none'}; are chosen and rejected identical?). {hint}")
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    chosen, rejected = _filled(row, "chosen", where, hint), _filled(row, "rejected", where, hint)
    if row.get("prompt") is None:
        prompt, chosen, rejected = _shared_prefix(chosen, rejected, where, hint)
    else:
        prompt = _filled(row, "prompt", where, hint)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _canonical(row, shape, where):
    """One raw row -> its canonical record (None for a blank text row); raises DataError naming `where`."""
    name, fmt, keys, example = shape
    hint = f"Every record must look like {_dumps(example)} (detected shape: {name})."
    if fmt == "text":
        text = _string(row, keys[0], where, hint)
        return {"text": text} if text.strip() else None  # hub corpora (wikitext) use empty rows as separators
    if fmt == "prompt_completion":
        return {"prompt": _filled(row, keys[0], where, hint), "completion": _filled(row, keys[1], where, hint)}
    if fmt == "preference":
        return _preference(row, where, hint)
    if name == "alpaca":
        user = _filled(row, "instruction", where, hint)
        extra, system = _string(row, "input", where, hint, optional=True), _string(row, "system", where, hint, optional=True)
        turns = [{"role": "system", "content": system}] if system.strip() else []
        turns += [{"role": "user", "content": user + ("\n\n" + extra if extra.strip() else "")},
                  {"role": "assistant", "content": _filled(row, "output", where, hint)}]
        return {"messages": turns}
    return {"messages": _messages(_require(row, keys[0], where, hint), where, keys[0], hint)}


def load(source: str | os.PathLike, want: str | Sequence[str] | None = None, split: str = "train",
         limit: int | None = None) -> Loaded:
    """Read `source` (file, folder or hub id), detect its shape, map it onto a canonical format and validate it.

    want: the format(s) the calling stage accepts; other data raises a DataError saying what it holds.
    limit: read at most this many rows (for previews of big data)."""
    from lab import demo

    demo.check_data(str(source))
    wanted = _wanted(want)
    rows, where, kind, label = _read(source, split, limit, _dumps(EXAMPLES[wanted[0]]) if wanted else TEXT)
    shape, name = _detect(rows, label, wanted)
    fmt = shape[1]
    detected = kind if kind.startswith("txt") else f"{kind} {name}"
    if wanted and fmt not in wanted:
        raise DataError(f"{label} holds {fmt} records (detected: {detected}); this stage needs "
                        f"{' or '.join(wanted)} — e.g. {_dumps(EXAMPLES[wanted[0]])}")
    records = [r for row, at in zip(rows, where) if (r := _canonical(row, shape, at)) is not None]
    if not records:
        raise DataError(f"{label} is empty: every {shape[2][0]!r} is blank. Give at least one record with text in it.")
    longest = max_document_chars()
    for r, at in zip(records, where):
        if (n := _chars(r)) > longest:  # one huge document would go whole into the tokenizer (and its memory)
            raise DataError(f"{at}: a record of {n:,} characters, over the limit of {longest:,} (LAB_MAX_DOCUMENT_CHARS): "
                            "split it into several (in a .txt, a blank line ends a document)")
    if fmt == "preference":  # trainers batch records together, so one file must not mix the two shapes
        conversational = isinstance(records[0]["prompt"], list)
        for r, at in zip(records, where):
            if isinstance(r["prompt"], list) != conversational:
                raise DataError(f"{at}: mixes conversational (lists of turns) and plain-text preference records; "
                                f"the first record is {'conversational' if conversational else 'plain text'}. "
                                "Keep one shape per file.")
    return Loaded(records, fmt, str(source), detected)


def max_document_chars() -> int:
    from lab import demo

    return int(os.environ.get("LAB_MAX_DOCUMENT_CHARS", "100000" if demo.on() else "2000000"))


def _chars(value) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_chars(v) for v in value.values())
    if isinstance(value, list):
        return sum(_chars(v) for v in value)
    return 0


def _chat(turns):
    return "\n".join(f"{t['role']}: {t['content']}" for t in turns)


def to_text(loaded: Loaded) -> list[str]:
    """Any format -> plain strings, so tokenizers and pretraining can use any data."""
    out = []
    for r in loaded.records:
        if loaded.format == "text":
            out.append(r["text"])
        elif loaded.format == "messages":
            out.append(_chat(r["messages"]))
        elif loaded.format == "prompt_completion":
            out.append(r["prompt"] + "\n" + r["completion"])
        elif isinstance(r["prompt"], list):
            out.append(_chat(r["prompt"] + r["chosen"]))
        else:  # an extracted prompt already ends where the answer's space begins; a separate one needs a break
            glue = "" if r["prompt"][-1:].isspace() or r["chosen"][:1].isspace() else "\n"
            out.append(r["prompt"] + glue + r["chosen"])
    return out


def as_messages(loaded: Loaded) -> list[dict]:
    """messages or prompt_completion records -> messages records (user prompt, assistant completion) for SFT."""
    if loaded.format == "messages":
        return loaded.records
    if loaded.format == "prompt_completion":
        return [{"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]}
                for r in loaded.records]
    raise DataError(f"{Path(loaded.source).name or loaded.source} holds {loaded.format} records "
                    f"(detected: {loaded.detected_from}); chat training needs messages or prompt_completion — "
                    f"e.g. {_dumps(EXAMPLES['messages'])}")
