"""AI feedback (Constitutional AI, RLAIF): a constitution of written principles, a labeler model that prefers one
of two answers under a principle, and the preference pairs it labels, saved beside the human ones.

    llm-lab world OUT                                           # also writes OUT/judging_{train,heldout}.jsonl
    llm-lab train sft --parent PRETRAIN_RUN --data OUT/judging_train.jsonl --max-steps 600   # a judge of the toy world
    llm-lab feedback --labeler JUDGE_RUN --model SFT_RUN [--constitution FILE] [--prompts world|PATH] [-k 4] [--limit 20]

The labeler is shown a prompt, two answers and one principle in `JUDGING` (a fixed format, one user turn), and its
verdict is read from its probabilities of the two verdict tokens, "A" and "B", where its answer starts: no sampling,
and the log-odds between them is the margin. Each pair is asked in both orders and the two averaged, so a model's
liking for the first or the second slot cancels out. Any model the lab loads can judge: a run, a local folder, a
hub id when online (on a GPU a real instruct model). On the toy world at CPU scale the lab trains its own: SFT on the
judging chats the world writes (`judging_chats`: its preference pairs, each under the principle it differs by, in both
orders), so the labeler is a model, not the gold rules.

`ai_feedback` samples K answers per prompt from a model, has the labeler compare every two of them under each
principle, and saves each verdict as a prompt/chosen/rejected pair in the feedback store (`lab.feedback`), with who
labeled it (the labeler, the principle, the margin), where the reward-model and DPO stages take it like the human
rankings. It reports the labeler's agreement with the gold judge (on the toy world) and with the human pairs
collected so far.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lab import models, runs
from lab.errors import UserError

# ------------------------------------------------------------------------------------------------ the constitution


@dataclass(frozen=True)
class Principle:
    name: str  # short, for the records and the tables
    text: str  # what the labeler is shown


DEFAULT_CONSTITUTION = (
    Principle("correct", "Answer the question that was asked, correctly, and state nothing false."),
    Principle("harmless", "Refuse a request that could hurt someone."),
    Principle("polite", "Be polite."),
    Principle("concise", "Be concise."),
)

# The gold judge's criteria (lab.world.WEIGHTS) each default principle stands for: how the labeler's verdicts are
# checked against the world's truth. A principle of the user's own is checked against the whole gold score.
GOLD_CRITERIA = {"correct": ("correct", "truthful"), "harmless": ("refuses_harmful",), "polite": ("polite",), "concise": ("concise",)}

# The principle a preference pair of the toy world differs by (its `criterion`): refusing a harmless question and
# answering another one are failures to answer it.
CRITERION_PRINCIPLE = {"correct": "correct", "helpful": "correct", "on_topic": "correct", "refuses_harmful": "harmless",
                       "polite": "polite", "concise": "concise"}

MAX_PRINCIPLES, MAX_TEXT = 20, 300


def constitution_path() -> Path:
    return runs.root() / "feedback" / "constitution.json"


def check_constitution(principles) -> list[Principle]:
    """Principles from a list of {"name", "text"} (or Principle), each checked: a name of letters, digits, '-' or '_',
    names unique, a text of 1 to MAX_TEXT characters."""
    out = []
    if not isinstance(principles, (list, tuple)) or not principles:
        raise UserError("a constitution is a list of principles, each {\"name\": ..., \"text\": ...}; it has none")
    if len(principles) > MAX_PRINCIPLES:
        raise UserError(f"a constitution of {len(principles)} principles: keep it to {MAX_PRINCIPLES} (each is asked of every pair)")
    for i, p in enumerate(principles, 1):
        p = asdict(p) if isinstance(p, Principle) else p
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not isinstance(p.get("text"), str):
            raise UserError(f"principle {i}: give it a name and a text, e.g. {{\"name\": \"polite\", \"text\": \"Be polite.\"}}")
        name, text = p["name"].strip(), " ".join(p["text"].split())
        if not name or not name.replace("-", "").replace("_", "").isalnum() or len(name) > 40:
            raise UserError(f"principle {i}: name {p['name']!r}: use letters, digits, '-' or '_' (up to 40)")
        if not text or len(text) > MAX_TEXT:
            raise UserError(f"principle {name!r}: its text has {len(text)} characters; give it 1 to {MAX_TEXT}")
        if name in {q.name for q in out}:
            raise UserError(f"principle {name!r} is named twice: give each principle its own name")
        out.append(Principle(name, text))
    return out


def parse_constitution(raw: str, where: str = "the constitution") -> list[Principle]:
    """Principles written as JSON (a list of {"name", "text"}), or as text with one `name: text` per line (blank lines
    and lines starting with # skipped)."""
    try:
        return check_constitution(json.loads(raw))
    except json.JSONDecodeError:
        pass
    principles = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, text = line.partition(":")
        if not sep:
            raise UserError(f"{where}, line {n}: write each principle as `name: text`, e.g. `polite: Be polite.` (or give a JSON list)")
        principles.append({"name": name.strip(), "text": text.strip()})
    return check_constitution(principles)


def read_constitution(path: str | Path) -> list[Principle]:
    """A constitution file (`parse_constitution`'s two forms)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"constitution {path}: no such file")
    return parse_constitution(path.read_text(encoding="utf-8"), str(path))


def constitution() -> list[Principle]:
    """The store's constitution (as the Feedback page last saved it), or the toy world's defaults."""
    path = constitution_path()
    if not path.is_file():
        return list(DEFAULT_CONSTITUTION)
    return check_constitution(json.loads(path.read_text(encoding="utf-8")))


def save_constitution(principles) -> list[Principle]:
    checked = check_constitution(principles)
    path = constitution_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.atomic_write_text(path, json.dumps([asdict(p) for p in checked], indent=2, ensure_ascii=False) + "\n")
    return checked


# ------------------------------------------------------------------------------------------------ the judging format

JUDGING = ("Principle: {principle}\nQuestion: {prompt}\nAnswer A: {a}\nAnswer B: {b}\n"
           "Which answer follows the principle better? Reply A or B.")


def _question(prompt) -> str:
    """A prompt as the judging format shows it: the user's turn, or the whole conversation line by line."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1:
        return prompt[0]["content"]
    return " / ".join(f"{t['role']}: {t['content']}" for t in prompt)


def judging_prompt(principle: str, prompt, a: str, b: str) -> str:
    one_line = lambda s: " ".join(str(s).split())  # noqa: E731  (the format is one field per line)
    return JUDGING.format(principle=one_line(principle), prompt=one_line(_question(prompt)), a=one_line(a), b=one_line(b))


def judging_chats(world, split: str = "train", principles=DEFAULT_CONSTITUTION) -> list[dict]:
    """SFT chats that teach a model to judge the toy world: each of its preference pairs under the principle it
    differs by, once in each order, the verdict the gold rules give."""
    by_name = {p.name: p for p in principles}
    chats = []
    for pair in world.preference_pairs(split):
        principle = by_name.get(CRITERION_PRINCIPLE.get(pair["criterion"], ""))
        if principle is None:
            continue
        for a, b, verdict in ((pair["chosen"], pair["rejected"], "A"), (pair["rejected"], pair["chosen"], "B")):
            chats.append({"messages": [{"role": "user", "content": judging_prompt(principle.text, pair["prompt"], a, b)},
                                       {"role": "assistant", "content": verdict}]})
    random.Random(f"judging/{world.config.seed}/{split}").shuffle(chats)
    return chats


def write_judging(world, out_dir) -> dict[str, Path]:
    """The judging chats of both splits as jsonl files in `out_dir` (what `llm-lab world` writes beside its datasets)."""
    paths = {}
    for split in ("train", "heldout"):
        paths[f"judging_{split}"] = path = Path(out_dir) / f"judging_{split}.jsonl"
        path.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in judging_chats(world, split)), encoding="utf-8")
    return paths


# ------------------------------------------------------------------------------------------------ the labeler


def verdict_tokens(tokenizer) -> tuple[int, int]:
    """The token ids of "A" and "B" as the first token of the assistant's answer, read off the chat template (a
    template may open the answer with a space or a newline token)."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the labeler has no chat template: it must be an instruct model (an SFT run, or a folder or hub id with a chat template)")
    turn = [{"role": "user", "content": "?"}]
    opening = tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    ids = []
    for verdict in ("A", "B"):
        whole = tokenizer.apply_chat_template([*turn, {"role": "assistant", "content": verdict}], tokenize=True, return_dict=True)["input_ids"]
        if whole[: len(opening)] != opening or len(whole) <= len(opening):
            raise UserError("the labeler's chat template does not start an answer where its generation prompt ends: it cannot be read as a judge")
        ids.append(whole[len(opening)])
    if ids[0] == ids[1]:
        raise UserError("the labeler's tokenizer gives 'A' and 'B' the same first token: their probabilities cannot tell its verdict")
    return ids[0], ids[1]


@torch.no_grad()
def log_odds(model, tokenizer, items: list[tuple[str, object, str, str]], batch_size: int = 32) -> list[float]:
    """For each (principle text, prompt, answer x, answer y): the labeler's log-odds that x follows the principle better
    than y, in nats (positive: x), the mean of its verdicts with x shown first and with x shown second."""
    a_id, b_id = verdict_tokens(tokenizer)
    texts = []
    for principle, prompt, x, y in items:
        for a, b in ((x, y), (y, x)):
            turn = [{"role": "user", "content": judging_prompt(principle, prompt, a, b)}]
            texts.append(tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False))
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # the verdict is read at each row's last position
    out = []
    try:
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            position = (batch["attention_mask"].long().cumsum(1) - 1).clamp(min=0)
            logits = model(**batch, position_ids=position, **models.only_last_logits(model, 1)).logits[:, -1].float()
            out += (logits[:, a_id] - logits[:, b_id]).tolist()
    finally:
        tokenizer.padding_side = side
    # x first: A is x; x second: B is x
    return [(first - second) / 2 for first, second in zip(out[0::2], out[1::2])]


def overall_odds(model, tokenizer, pairs: list[tuple[object, str, str]], principles) -> list[float]:
    """For each (prompt, answer x, answer y): the labeler's log-odds that x is the better answer under the
    constitution as a whole, the sum of its log-odds under each principle."""
    n = len(principles)
    odds = log_odds(model, tokenizer, [(p.text, prompt, x, y) for prompt, x, y in pairs for p in principles]) if pairs else []
    return [sum(odds[i * n : (i + 1) * n]) for i in range(len(pairs))]


def gold_prefers(world, principle: Principle, prompt, x: str, y: str) -> int:
    """+1 when the gold judge rates x above y on what the principle stands for, -1 below, 0 level."""
    gx, gy = world.judge(prompt, x), world.judge(prompt, y)
    criteria = [c for c in GOLD_CRITERIA.get(principle.name, ()) if c in gx.breakdown]
    if GOLD_CRITERIA.get(principle.name) and not criteria:
        return 0  # the gold judge does not judge this prompt on it (e.g. "harmless" for a fact question)
    vx, vy = (sum(g.breakdown[c] for c in criteria) for g in (gx, gy)) if criteria else (gx.score, gy.score)
    return (vx > vy) - (vx < vy)


def agreement_with_gold(model, tokenizer, world, split: str = "heldout", principles=DEFAULT_CONSTITUTION) -> dict:
    """The labeler's verdicts on the toy world's preference pairs of `split` (held out: prompts its judging chats
    never showed), under the principle each pair differs by: the share it gets right, overall and per principle."""
    by_name = {p.name: p for p in principles}
    items, names = [], []
    for pair in world.preference_pairs(split):
        principle = by_name.get(CRITERION_PRINCIPLE.get(pair["criterion"], ""))
        if principle is not None:
            items.append((principle.text, pair["prompt"], pair["chosen"], pair["rejected"]))
            names.append(principle.name)
    odds = log_odds(model, tokenizer, items)
    right = [o > 0 for o in odds]
    per = {n: sum(r for r, m in zip(right, names) if m == n) / names.count(n) for n in dict.fromkeys(names)}
    return {"pairs": len(items), "agreement": sum(right) / len(right) if right else None, "by_principle": per}


# ------------------------------------------------------------------------------------------------ AI feedback


def ai_feedback(labeler: str, model: str, prompts: str = "world", k: int = 4, limit: int = 20, principles=None,
                name: str = "ai-feedback", temperature: float = 1.0, seed: int = 0, device: str = "cpu", owner: str | None = None,
                heldout: bool = False) -> dict:
    """Sample `k` answers to each of `limit` prompts with `model`, have `labeler` compare every two under each
    principle, and save each verdict as a pair of the feedback dataset `name`. Returns what was saved and the
    labeler's agreement with the gold judge (toy-world prompts) and with the human pairs of the store; with
    `heldout`, also `heldout`: its `agreement_with_gold` on the toy world's held-out pairs."""
    from lab import evals, feedback, inference, stages

    if not 2 <= k <= 16:
        raise UserError(f"-k {k}: sample 2 to 16 answers per prompt (every two of them are compared)")
    if not 1 <= limit <= 10000:
        raise UserError(f"--limit {limit}: label 1 to 10,000 prompts")
    if not 0 < temperature <= 10:
        raise UserError(f"--temperature {temperature}: give a temperature above 0 and at most 10 (the answers must differ)")
    principles = check_constitution(principles) if principles is not None else constitution()
    path = feedback.path_of(name)  # a bad name is refused before any model loads
    if heldout and stages.world_of(prompts) is None:
        raise UserError("--heldout measures the labeler on the toy world's held-out pairs: use it with --prompts world")
    chosen_prompts = stages.prompt_set(prompts)
    chosen_prompts = random.Random(seed).sample(chosen_prompts, min(limit, len(chosen_prompts)))
    policy = inference.load(model, "causal", device)
    judge = inference.load(labeler, "causal", device)
    world = stages.world_of(prompts) or inference.world_of_model(policy.run)
    verdict_tokens(judge.tokenizer)  # a labeler that cannot judge is refused before the sampling
    sampled = evals.chat(policy.model, policy.tokenizer, [p for p in chosen_prompts for _ in range(k)], max_new_tokens=48,
                         temperature=temperature, seed=seed)
    groups, skipped = [], 0
    for i, prompt in enumerate(chosen_prompts):
        answers = list(dict.fromkeys(a for a in sampled[i * k : (i + 1) * k] if a.strip()))
        if len(answers) < 2:
            skipped += 1  # nothing to compare: every sample the same (or empty)
            continue
        groups.append((prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}], answers))
    labeled = label(judge, groups, principles, name, "ai", model=policy.run or policy.path, owner=owner, world=world)
    held = agreement_with_gold(judge.model, judge.tokenizer, world, principles=principles) if heldout else None
    return {**labeled, "file": str(path), "prompts": len(groups), "skipped_prompts": skipped, "model": policy.run or policy.path,
            **agreement_with_people(judge, principles), "heldout": held}


def agreement_with_people(judge, principles: list[Principle], last: int = 200) -> dict:
    """{"human_agreement", "human_pairs"}: how often the loaded labeler `judge`, under the constitution as a whole,
    prefers the answer a person preferred, over the store's `last` human pairs (None before anyone ranked)."""
    from lab import feedback

    human = feedback.human_pairs()[-last:]
    agree = [o > 0 for o in overall_odds(judge.model, judge.tokenizer, [(r["prompt"], r["chosen"][-1]["content"], r["rejected"][-1]["content"])
                                                                         for r in human], principles)]
    return {"human_agreement": sum(agree) / len(agree) if agree else None, "human_pairs": len(agree)}


def label(judge, groups: list[tuple[list[dict], list[str]]], principles: list[Principle], name: str, source: str, model: str | None = None,
          owner: str | None = None, world=None) -> dict:
    """Have the loaded labeler `judge` (an `inference.Loaded`) compare every two answers of each (conversation, answers)
    group under each principle, and save each verdict as a pair of the feedback dataset `name`, one ranking per
    group and principle, with the principle and the margin. Returns count(name) with `added`, the labeler, the
    principles, and the agreement with the gold judge of `world` (None without one) over the pairs it tells apart."""
    from lab import feedback

    items, where = [], []
    for g, (turns, answers) in enumerate(groups):
        for principle in principles:
            for i in range(len(answers)):
                for j in range(i + 1, len(answers)):
                    items.append((principle.text, turns, answers[i], answers[j]))
                    where.append((g, principle, i, j))
    odds = log_odds(judge.model, judge.tokenizer, items) if items else []
    verdicts: dict[tuple[int, str], list] = {}
    for (g, principle, i, j), o in zip(where, odds):
        if o != 0:
            better, worse = (i, j) if o > 0 else (j, i)
            verdicts.setdefault((g, principle.name), []).append((principle, better, worse, abs(o)))
    added, agree, disagree = 0, 0, 0
    for (g, _), pairs in verdicts.items():
        turns, answers = groups[g]
        records = [{"chosen": answers[b], "rejected": answers[w], "principle": p.name, "principle_text": p.text, "margin": round(m, 4)}
                   for p, b, w, m in pairs]
        added += feedback.add_pairs(name, turns, records, source=source, labeled_by=judge.run or judge.path, model=model, owner=owner)["added"]
        if world is not None:
            for p, b, w, _ in pairs:
                gold = gold_prefers(world, p, turns, answers[b], answers[w])
                agree, disagree = agree + (gold > 0), disagree + (gold < 0)
    return {**feedback.count(name), "added": added, "labeler": judge.run or judge.path, "principles": [p.name for p in principles],
            "gold_agreement": agree / (agree + disagree) if agree + disagree else None, "gold_pairs": agree + disagree}



# ------------------------------------------------------------------------------------------------ critique and revision

CRITIQUE = "Critique your last answer by this principle: {principle} Say in one sentence how it fails the principle."
REVISE = "Rewrite your answer so that it follows the principle: {principle} Reply with the new answer only."


def critique_and_revise(model: str, prompts: str = "world", limit: int = 20, principles=None, name: str = "revisions", seed: int = 0,
                        device: str = "cpu") -> dict:
    """Constitutional AI's supervised half: `model` answers each of `limit` prompts, critiques its answer under one
    principle of the constitution (drawn per prompt) and revises it, all greedy in one conversation. The revised
    answers, as chats of the prompt and the revision, are SFT data: written among the store's uploads as
    NAME.jsonl, where the SFT form offers them (each record keeps the principle, the first answer and the
    critique beside its messages). On the toy world it also returns the gold judge's mean score of the first
    answers and of the revisions: whether revising helped."""
    from lab import evals, feedback, inference, stages

    if not 1 <= limit <= 10000:
        raise UserError(f"--limit {limit}: revise 1 to 10,000 prompts")
    principles = check_constitution(principles) if principles is not None else constitution()
    path = runs.root() / "uploads" / feedback.path_of(name).name  # the name checked as a dataset's is
    if path.exists():  # an earlier set of revisions is someone's data: never written over
        raise UserError(f"{path} exists already: give the revisions another --name (or delete that file first)")
    every = stages.prompt_set(prompts)
    chosen = random.Random(seed).sample(every, min(limit, len(every)))
    loaded = inference.load(model, "causal", device)
    world = stages.world_of(prompts) or inference.world_of_model(loaded.run)
    picks = [random.Random(f"{seed}/{i}").choice(principles) for i in range(len(chosen))]
    first = evals.chat(loaded.model, loaded.tokenizer, chosen, max_new_tokens=48)
    asked = [[*p, {"role": "assistant", "content": a}, {"role": "user", "content": CRITIQUE.format(principle=pr.text)}]
             for p, a, pr in zip(chosen, first, picks)]
    critiques = evals.chat(loaded.model, loaded.tokenizer, asked, max_new_tokens=48)
    revise = [[*c, {"role": "assistant", "content": crit}, {"role": "user", "content": REVISE.format(principle=pr.text)}]
              for c, crit, pr in zip(asked, critiques, picks)]
    revisions = evals.chat(loaded.model, loaded.tokenizer, revise, max_new_tokens=48)
    records = [{"messages": [*p, {"role": "assistant", "content": r}], "principle": pr.name, "first_answer": a, "critique": c}
               for p, a, c, r, pr in zip(chosen, first, critiques, revisions, picks) if r.strip()]
    if not records:
        raise UserError(f"{model} gave no revision that is not empty: nothing to train on (a model that answers in its chat format is needed)")
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    gold = None
    if world is not None:
        kept = [(p, a, r) for p, a, r in zip(chosen, first, revisions) if r.strip()]
        gold = {"first": sum(world.judge(p, a).score for p, a, _ in kept) / len(kept),
                "revised": sum(world.judge(p, r).score for p, _, r in kept) / len(kept),
                "revision_changed": sum(a != r for _, a, r in kept) / len(kept)}
    return {"file": str(path), "chats": len(records), "empty": len(chosen) - len(records), "model": loaded.run or loaded.path,
            "principles": [p.name for p in principles], "gold": gold}
