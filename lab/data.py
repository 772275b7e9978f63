"""Load the user's data (a file, a folder or a hub id), map common community shapes (or the user's own column
names) onto the canonical formats the stages consume (FORMATS), and validate every record.

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

from lab.errors import DataError, UserError, flag

FORMATS = ("text", "messages", "prompt_completion", "preference", "prompt", "unpaired")


@dataclass
class Loaded:
    records: list[dict]  # canonical records, see EXAMPLES
    format: str  # one of FORMATS
    source: str  # what the user passed
    detected_from: str  # how the format was recognised, e.g. "jsonl alpaca" or "txt paragraphs"
    how: str = ""  # how its columns became the canonical records, in words (Shape.how, and the user's column mapping)

    def __len__(self):
        return len(self.records)

    def preview(self, n=5) -> list[dict]:
        return self.records[:n]


EXAMPLES = {
    "text": {"text": "Once upon a time there was a tiny language model."},
    "messages": {"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]},
    "prompt_completion": {"prompt": "The capital of France is", "completion": " Paris."},
    "preference": {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
    "prompt": {"prompt": "What is 2+2?"},  # prompts only (TRL's prompt-only shape): online RL samples its own answers
    "unpaired": {"prompt": "What is 2+2?", "completion": "4", "label": True},  # an answer labelled good or bad (KTO)
}
SHAREGPT = [{"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": "4"}]

@dataclass(frozen=True)
class Shape:
    name: str  # how detected_from names it, e.g. "alpaca"
    format: str  # the canonical format it maps onto, one of FORMATS
    keys: tuple[str, ...]  # the columns that identify it
    example: dict  # a record of it, for the messages
    how: str  # the mapping in words a user recognises, shown by the data preview


def _pair(p: str, c: str, style: str = "") -> Shape:
    return Shape(f"{p}/{c}", "prompt_completion", (p, c), {p: "What is 2+2?", c: "4"},
                 f"{style}{p} → the user's turn, {c} → the assistant's answer")


HH_EXAMPLE = {"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4", "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 5"}
# Shapes in detection order. Preference comes first because preference sets (UltraFeedback, HH) often also carry
# 'messages' or 'prompt'; Alpaca and Dolly come before the prompt/completion pairs because their rows have an
# 'input' or a 'response' too. HH-RLHF transcripts are recognised by their content, not their columns (_shapes).
SHAPES = [
    Shape("preference", "preference", ("chosen", "rejected"), EXAMPLES["preference"], "prompt + chosen + rejected → a preference pair"),
    Shape("messages", "messages", ("messages",), EXAMPLES["messages"], "messages → the conversation's turns"),
    *[Shape("sharegpt", "messages", (k,), {k: SHAREGPT}, f"ShareGPT-style: {k} (from/value) → turns, human → user, gpt → assistant")
      for k in ("conversations", "conversation")],
    Shape("alpaca", "messages", ("instruction", "output"), {"instruction": "Add the numbers.", "input": "2, 2", "output": "4"},
          "Alpaca-style: instruction + input → user, output → assistant"),
    # before prompt/completion: its rows have those two too
    Shape("unpaired", "unpaired", ("prompt", "completion", "label"), EXAMPLES["unpaired"],
          "prompt + completion + label → an answer labelled good (true) or bad (false)"),
    # Dolly's context is reference text the instruction is about (a passage to summarise or answer from): it
    # follows the instruction in the user's turn after a blank line, as Alpaca's input does.
    Shape("dolly", "messages", ("instruction", "response"),
          {"instruction": "How many legs does a spider have?", "context": "Spiders are arachnids with eight legs.", "response": "Eight."},
          "Dolly-style: instruction + context → user, response → assistant"),
    *[_pair(p, c) for p, c in [("prompt", "completion"), ("prompt", "response"), ("question", "answer"), ("query", "response")]],
    _pair("inputs", "targets", "FLAN-style: "),
    _pair("input", "target", "FLAN-style: "),
    _pair("input", "output"),
    Shape("text", "text", ("text",), EXAMPLES["text"], "text → one document per record"),
    Shape("content", "text", ("content",), {"content": EXAMPLES["text"]["text"]}, "content → one document per record"),
    Shape("prompt", "prompt", ("prompt",), EXAMPLES["prompt"], "prompt → a prompt (the user's turn) for the policy to answer"),
]
HH_PREFERENCE = Shape("hh-rlhf", "preference", ("chosen", "rejected"), HH_EXAMPLE,
                      "HH-RLHF transcripts: Human → user, Assistant → assistant; the shared history → the prompt, "
                      "each side's last Assistant turn → its answer")
ACCEPTED_SHAPES = ("text | messages | prompt+completion (or question+answer, inputs+targets, ...) | prompt+chosen+rejected "
                   "| chosen+rejected HH-RLHF transcripts | instruction+output (Alpaca) | instruction+response, with a context (Dolly) "
                   "| conversations with from/value (ShareGPT) | prompt alone (for PPO and GRPO)")
KNOWN_KEYS = {k for shape in SHAPES for k in shape.keys} | {"prompt", "system", "context"}
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


def _cell(key, value, at):
    # Spreadsheets can only hold conversations as JSON text in a cell.
    if key not in ("messages", "conversations", "conversation", "prompt", "chosen", "rejected") or not value.lstrip().startswith("["):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        if key in ("prompt", "chosen", "rejected"):  # plain text that happens to start with '['
            return value
        raise DataError(f"{at}: the {key!r} cell is not a valid JSON list ({e.msg} at column {e.colno}). "
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
            rows.append({k: _cell(k, v, f"{label} row {n}") for k, v in row.items() if v is not None})
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


def _first_values(rows) -> dict:
    """Each column's first non-null value, in first-seen order (a column only some rows fill is still there)."""
    first: dict = {}
    for row in rows:
        for k, v in row.items():
            if first.get(k) is None:
                first[k] = v
    return first


def _shapes(rows) -> list[Shape]:
    """The shapes `rows` match, in detection order. HH-RLHF transcripts are known by their content: a
    chosen/rejected pair of transcripts (or a transcript prompt, as in the HH variants that keep the history
    apart) is HH's preference shape; a column of transcripts can be chats for SFT (after the shapes that read
    it as text, so that pretraining on transcripts keeps them as written)."""
    first = _first_values(rows)
    transcripts = [k for k, v in first.items() if _is_transcript(v)]
    matches = []
    for s in SHAPES:
        if not all(k in first for k in s.keys):
            continue
        if s.format == "preference" and {"chosen", "rejected", "prompt"} & set(transcripts):
            s = HH_PREFERENCE
        elif s.format == "messages" and s.keys[0] in transcripts:  # a transcript where turns were expected
            continue
        matches.append(s)
    chats = [k for k in ("chosen", *transcripts) if k in transcripts and k not in ("prompt", "rejected")]
    if chats:
        matches.append(Shape("hh-rlhf transcript", "messages", (chats[0],), {chats[0]: HH_EXAMPLE["chosen"]},
                             f"HH-RLHF transcripts: {chats[0]}'s Human turns → user, Assistant turns → assistant"))
    return matches


def _detect(rows, label, wanted=(), mapped=()):
    if not rows:
        raise DataError(f"{label} is empty: no records found.")
    matches = _shapes(rows)
    if not matches:
        keys = list(_first_values(rows))
        found = ", ".join(map(str, keys[:20])) + (", …" if len(keys) > 20 else "")
        raise DataError(f"{label}: no known columns (found: {found or 'none'}). Accepted shapes: {ACCEPTED_SHAPES}. "
                        f"Other column names: map them with {flag('columns')}, e.g. {COLUMNS_EXAMPLE}")
    # The columns a user mapped say which shape they mean, past others the file also holds.
    matches = [s for s in matches if set(s.keys) & set(mapped)] or matches
    # Data holding several shapes (UltraFeedback has chosen/rejected and messages) serves the stage that asks.
    shape = next((s for s in matches if s.format in wanted), matches[0])
    if shape.format == "prompt_completion" and "prompt" not in wanted and any(s.format == "unpaired" for s in matches):
        # chat training would learn the answers labelled bad as well as the good ones
        raise DataError(f"{label} holds answers labelled good or bad (prompt, completion, label): train KTO on it "
                        "(llm-lab train kto), or keep only the good answers (label true) for this stage")
    name, first = shape.name, next((row for row in rows if all(k in row for k in shape.keys)), rows[0])
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
    return shape.format, name


# ---------------------------------------------------------------------------------------------------------
# HH-RLHF transcripts: "\n\nHuman: …\n\nAssistant: …", one string per side of a pair


HH_TURN = re.compile(r"(?:\A\s*|\n\n)(Human|Assistant):[^\S\n]?")
HH_EXPECTED = ("An HH-style transcript alternates turns that each start on a new paragraph with 'Human:' or 'Assistant:', "
               f"e.g. {_dumps(HH_EXAMPLE['chosen'])}, starting with Human and ending with the Assistant's answer.")


def _is_transcript(value) -> bool:
    return isinstance(value, str) and re.match(r"\s*Human:", value) is not None and "\n\nAssistant:" in value


def _hh_turns(value, where, key, open_end=False) -> list[dict]:
    """One transcript -> its turns. open_end: a prompt that ends where the answer would start ("…\n\nAssistant:")."""
    if not isinstance(value, str) or "Human:" not in value or "\n\nAssistant:" not in value:
        raise DataError(f"{where}: {key!r} is not an HH-style transcript (found {_kind(value)}: {_dumps(value, 60)}). {HH_EXPECTED}")
    pieces = HH_TURN.split(value)
    if pieces[0].strip():
        raise DataError(f"{where}: {key!r} has text before its first 'Human:' turn ({_dumps(pieces[0].strip(), 40)}). {HH_EXPECTED}")
    said = list(zip(pieces[1::2], pieces[2::2]))
    turns = []
    for i, (speaker, text) in enumerate(said, 1):
        if not text.strip():
            if open_end and i == len(said) and speaker == "Assistant":
                break
            raise DataError(f"{where}: {key!r} turn {i} ({speaker}) is empty. {HH_EXPECTED}")
        turns.append({"role": "user" if speaker == "Human" else "assistant", "content": text.strip()})
    last = "user" if open_end else "assistant"
    if turns[-1]["role"] != last:
        raise DataError(f"{where}: {key!r} ends with a {turns[-1]['role']} turn; "
                        f"{'a prompt ends with the Human turn the answer replies to' if open_end else 'it must end with the Assistant answer'}. {HH_EXPECTED}")
    return turns


def _hh_pair(row, where, hint) -> tuple[list, list, list]:
    """(the shared history, chosen's last answer, rejected's last answer) of an HH-RLHF pair."""
    prompt = row.get("prompt")
    if _is_transcript(prompt):  # the history apart, each side its answer (or its whole transcript)
        history = _hh_turns(prompt, where, "prompt", open_end=True)
        sides = []
        for key in ("chosen", "rejected"):
            if _is_transcript(row.get(key)):
                turns = _hh_turns(row[key], where, key)
                sides.append(turns[len(history):] if turns[: len(history)] == history else turns)
            else:
                sides.append([{"role": "assistant", "content": _filled(row, key, where, hint).strip()}])
        return history, *sides
    chosen, rejected = (_hh_turns(_require(row, k, where, hint), where, k) for k in ("chosen", "rejected"))
    if chosen[:-1] != rejected[:-1]:
        turn = next(i for i, (a, b) in enumerate(zip(chosen + [None], rejected + [None]), 1) if a != b)
        raise DataError(f"{where}: the 'chosen' and 'rejected' transcripts differ at turn {turn}, before their last Assistant "
                        "turns: an HH pair shares its history and differs only in the last answer. " + HH_EXPECTED)
    return chosen[:-1], chosen[-1:], rejected[-1:]


# ---------------------------------------------------------------------------------------------------------
# a user's column mapping: the lab's names for the columns of a file of another shape


COLUMN_NAMES = ("text", "prompt", "completion", "messages", "chosen", "rejected", "system")
TURN_KEYS = ("role", "content")  # the keys of each turn in a list of turns
COLUMNS_EXAMPLE = "prompt=question,completion=answer"


def parse_columns(spec: str | dict) -> dict[str, str]:
    """'prompt=question,completion=answer' (or that dict) -> {"prompt": "question", "completion": "answer"}: each of
    the lab's names (COLUMN_NAMES, any column a known shape reads, or TURN_KEYS for the keys inside chat turns) ->
    the user's column or key."""
    items = [f"{k}={v}" for k, v in spec.items()] if isinstance(spec, dict) else (spec or "").split(",")
    names = COLUMN_NAMES + tuple(sorted(KNOWN_KEYS - set(COLUMN_NAMES))) + TURN_KEYS
    mapping: dict[str, str] = {}
    for item in (part.strip() for part in items):
        if not item:
            continue
        ours, eq, theirs = (x.strip() for x in item.partition("="))
        if not eq or not ours or not theirs:
            raise UserError(f"{flag('columns')} {spec!r}: {item!r} is not NAME=COLUMN. Write the lab's name, '=', then your "
                            f"column, comma-separated, e.g. {COLUMNS_EXAMPLE}")
        if ours not in names:
            close = difflib.get_close_matches(ours, names, n=1)
            raise UserError(f"{flag('columns')} {spec!r}: {ours!r} is not one of the lab's names"
                            + (f" (did you mean {close[0]}?)" if close else "")
                            + f"; the names are {', '.join(COLUMN_NAMES)} (or any column of a shape the lab knows, e.g. instruction, context, response), "
                            f"and {' and '.join(TURN_KEYS)} for the keys inside chat turns; e.g. {COLUMNS_EXAMPLE}")
        if ours in mapping:
            raise UserError(f"{flag('columns')} {spec!r}: {ours} is mapped twice ({mapping[ours]} and {theirs}); map each name once")
        mapping[ours] = theirs
    return mapping


def _map_columns(rows, where, mapping: dict[str, str], label: str) -> list[dict]:
    """Rows with the user's columns renamed to the lab's (and the keys inside chat turns); checks that every
    mapped column and turn key exists, naming those found instead."""
    columns = {ours: theirs for ours, theirs in mapping.items() if ours not in TURN_KEYS}
    keys = {theirs: ours for ours, theirs in mapping.items() if ours in TURN_KEYS}
    found = list(_first_values(rows))
    missing = [f"{ours}={theirs}" for ours, theirs in columns.items() if theirs not in found]
    if missing:
        shown = ", ".join(map(str, found[:30])) + (", …" if len(found) > 30 else "")
        raise DataError(f"{label}: {flag('columns')} names {'columns' if len(missing) > 1 else 'a column'} it does not have "
                        f"({', '.join(missing)}). Its columns are: {shown or 'none'}.")
    renamed = set(columns.values())
    out = []
    for row, at in zip(rows, where):
        new = {k: v for k, v in row.items() if k not in renamed and k not in columns}
        for ours, theirs in columns.items():
            if theirs not in row:
                raise DataError(f"{at}: no {theirs!r}, the column {flag('columns')} maps to {ours} (found keys: {_keys(row)})")
            value = row[theirs]
            if isinstance(value, str) and ours in ("messages", "conversations", "conversation", "prompt", "chosen", "rejected"):
                value = _cell(ours, value, at)  # a list of turns written as JSON text
            new[ours] = value
        out.append(new)
    if keys:
        turn_keys = dict.fromkeys(k for row in out for v in row.values() if isinstance(v, list) for t in v if isinstance(t, dict) for k in t)
        if not turn_keys:
            raise DataError(f"{label}: {flag('columns')} maps keys inside chat turns ({', '.join(f'{o}={t}' for t, o in keys.items())}) "
                            "but no column holds a list of turns. Map the column that does, e.g. messages=dialog")
        if absent := [f"{o}={t}" for t, o in keys.items() if t not in turn_keys]:
            raise DataError(f"{label}: {flag('columns')} names turn keys its chat turns do not have ({', '.join(absent)}). "
                            f"The turns' keys are: {', '.join(map(str, turn_keys))}.")
        out = [{k: [{keys.get(tk, tk): tv for tk, tv in t.items()} if isinstance(t, dict) else t for t in v] if isinstance(v, list) else v
                for k, v in row.items()} for row in out]
    return out


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


def _preference(row, where, hint, hh=False):
    for key in ("chosen", "rejected"):
        _require(row, key, where, hint)
    if hh or isinstance(row["chosen"], list) or isinstance(row["rejected"], list):
        # TRL's conversational shape; stays conversational because TRL applies the chat template itself.
        if hh:
            prompt, chosen, rejected = _hh_pair(row, where, hint)
            if chosen == rejected:
                raise DataError(f"{where}: 'chosen' and 'rejected' end with the same answer; a pair needs two different answers. {hint}")
        else:
            prompt, chosen, rejected = _conversational_pair(row, where, hint)
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


def _conversational_pair(row, where, hint) -> tuple[list, list, list]:
    chosen = _turns(row["chosen"], where, "chosen", hint)
    rejected = _turns(row["rejected"], where, "rejected", hint)
    prompt = row.get("prompt")
    if isinstance(prompt, list):
        return _turns(prompt, where, "prompt", hint), chosen, rejected
    # Implicit prompt: full conversations that share their opening turns. UltraFeedback-style rows
    # also carry the prompt as a string, which those shared turns already hold.
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if n:
        return chosen[:n], chosen[n:], rejected[n:]
    if isinstance(prompt, str) and prompt.strip():
        return [{"role": "user", "content": prompt}], chosen, rejected
    raise DataError(f"{where}: 'chosen' and 'rejected' share no opening turns to use as the prompt, and "
                    "there is no 'prompt' field. Add a 'prompt' with the conversation so far, e.g. "
                    f'{{"prompt": [{{"role": "user", "content": "What is 2+2?"}}], '
                    f'"chosen": [{{"role": "assistant", "content": "4"}}], '
                    f'"rejected": [{{"role": "assistant", "content": "5"}}]}}')


LABELS = {True: True, False: False, "true": True, "false": False, "1": True, "0": False, "yes": True, "no": False,
          "good": True, "bad": False, "up": True, "down": False}


def _unpaired(row, where, hint) -> dict:
    label = _require(row, "label", where, hint)
    key = label.strip().lower() if isinstance(label, str) else label
    if isinstance(key, float) and key.is_integer():
        key = int(key)
    if isinstance(key, (dict, list)) or key not in LABELS:
        raise DataError(f"{where}: 'label' is {_dumps(label, 40)}; a label says whether the completion is a good answer: true or false "
                        f"(also 1/0, yes/no, good/bad, up/down). {hint}")
    prompt, completion = row["prompt"] if "prompt" in row else None, row.get("completion")
    if isinstance(prompt, list) or isinstance(completion, list):  # TRL's conversational shape
        prompt = _turns(_require(row, "prompt", where, hint), where, "prompt", hint)
        completion = _turns(_require(row, "completion", where, hint), where, "completion", hint)
        if not prompt or prompt[-1]["role"] != "user" or [t["role"] for t in completion] != ["assistant"] * len(completion):
            raise DataError(f"{where}: a labelled answer is the prompt's turns ending with the user's, then the assistant's answer. {hint}")
        return {"prompt": prompt, "completion": completion, "label": LABELS[key]}
    return {"prompt": _filled(row, "prompt", where, hint), "completion": _filled(row, "completion", where, hint), "label": LABELS[key]}


def _canonical(row, shape: Shape, where):
    """One raw row -> its canonical record (None for a blank text row); raises DataError naming `where`."""
    keys = shape.keys
    hint = f"Every record must look like {_dumps(shape.example)} (detected shape: {shape.name})."
    if shape.format == "text":
        text = _string(row, keys[0], where, hint)
        return {"text": text} if text.strip() else None  # hub corpora (wikitext) use empty rows as separators
    if shape.format == "prompt_completion":
        return {"prompt": _filled(row, keys[0], where, hint), "completion": _filled(row, keys[1], where, hint)}
    if shape.format == "preference":
        return _preference(row, where, hint, hh=shape is HH_PREFERENCE)
    if shape.format == "unpaired":
        return _unpaired(row, where, hint)
    if shape.format == "prompt":
        if isinstance(row.get("prompt"), list):  # the conversation so far, ending with the user's turn
            turns = _turns(row["prompt"], where, "prompt", hint)
            if not turns or turns[-1]["role"] != "user":
                raise DataError(f"{where}: the prompt's last turn is {turns[-1]['role'] if turns else 'missing'}; a prompt ends "
                                f"with the user's turn the policy answers. {hint}")
            return {"prompt": turns}
        return {"prompt": _filled(row, "prompt", where, hint)}
    if shape.name in ("alpaca", "dolly"):
        user = _filled(row, "instruction", where, hint)
        extra = _string(row, "input" if shape.name == "alpaca" else "context", where, hint, optional=True)
        system = _string(row, "system", where, hint, optional=True)
        turns = [{"role": "system", "content": system}] if system.strip() else []
        turns += [{"role": "user", "content": user + ("\n\n" + extra if extra.strip() else "")},
                  {"role": "assistant", "content": _filled(row, keys[1], where, hint)}]
        return {"messages": turns}
    if shape.name == "hh-rlhf transcript":
        return {"messages": _hh_turns(_require(row, keys[0], where, hint), where, keys[0])}
    return {"messages": _messages(_require(row, keys[0], where, hint), where, keys[0], hint)}


def load(source: str | os.PathLike, want: str | Sequence[str] | None = None, split: str = "train",
         limit: int | None = None, columns: str = "") -> Loaded:
    """Read `source` (file, folder or hub id), detect its shape, map it onto a canonical format and validate it.

    want: the format(s) the calling stage accepts; other data raises a DataError saying what it holds.
    limit: read at most this many rows (for previews of big data).
    columns: the user's column mapping onto the lab's names, e.g. "prompt=question,completion=answer" (parse_columns)."""
    from lab import demo

    demo.check_data(str(source))
    wanted = _wanted(want)
    mapping = parse_columns(columns)
    rows, where, kind, label = _read(source, split, limit, _dumps(EXAMPLES[wanted[0]]) if wanted else TEXT)
    if mapping:
        rows = _map_columns(rows, where, mapping, label)
    shape, name = _detect(rows, label, wanted, mapped=mapping)
    fmt = shape.format
    detected = kind if kind.startswith("txt") else f"{kind} {name}"
    how = shape.how
    if mapping:
        how = f"your columns {', '.join(f'{theirs} → {ours}' for ours, theirs in mapping.items())}; then {how}"
    if wanted and fmt not in wanted:
        raise DataError(f"{label} holds {fmt} records (detected: {detected}); this stage needs "
                        f"{' or '.join(wanted)} — e.g. {_dumps(EXAMPLES[wanted[0]])}"
                        + ("" if mapping else f". Other column names: map them with {flag('columns')}, e.g. {COLUMNS_EXAMPLE}"))
    kept = [(r, at) for row, at in zip(rows, where) if (r := _canonical(row, shape, at)) is not None]
    if not kept:
        raise DataError(f"{label} is empty: every {shape.keys[0]!r} is blank. Give at least one record with text in it.")
    longest = max_document_chars()
    for r, at in kept:
        if (n := _chars(r)) > longest:  # one huge document would go whole into the tokenizer (and its memory)
            raise DataError(f"{at}: a record of {n:,} characters, over the limit of {longest:,} (LAB_MAX_DOCUMENT_CHARS): "
                            "split it into several (in a .txt, a blank line ends a document)")
    if fmt == "preference":  # trainers batch records together, so one file must not mix the two shapes
        conversational = isinstance(kept[0][0]["prompt"], list)
        for r, at in kept:
            if isinstance(r["prompt"], list) != conversational:
                raise DataError(f"{at}: mixes conversational (lists of turns) and plain-text preference records; "
                                f"the first record is {'conversational' if conversational else 'plain text'}. "
                                "Keep one shape per file.")
    return Loaded([r for r, _ in kept], fmt, str(source), detected, how)


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
        elif loaded.format == "prompt":
            out.append(_chat(r["prompt"]) if isinstance(r["prompt"], list) else r["prompt"])
        elif loaded.format == "unpaired":
            out.append(_chat(r["prompt"] + r["completion"]) if isinstance(r["prompt"], list) else r["prompt"] + "\n" + r["completion"])
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
