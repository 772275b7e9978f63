"""What a user can get wrong, as its own exceptions. Only these become one-line messages (in the CLI, a
job's run.json, the pages and the API); any other exception is a bug of ours and keeps its traceback.
Torch-free, so that `llm-lab runs` and the app import it for nothing.

UserError subclasses ValueError, so code that catches ValueError around a user's input still does.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: the message names what was wrong and what to do instead."""


class NotFound(UserError, FileNotFoundError, LookupError):
    """Something the user named is not there: a run, a file, a model, a hub id while offline."""


class ConfigError(UserError):
    """A config field out of its bounds or its choices, or an unknown field."""


class DataError(UserError):
    """A data file the lab cannot read as the stage needs: the message names the file, the line and the shapes accepted."""


class Diverged(UserError):
    """The loss became NaN or inf: the weights are garbage, so the run fails without saving them. The
    user's to fix (a lower learning rate, warm-up, clipping), so its message is one line too."""


# Where this process's messages are read, so that they name what the reader has: "cli" (a terminal), "page"
# (the app, set by `pages.app.launch`: a form's field, a button) or "job" (a job's run.json and log, read on a
# page and in a terminal alike, set by `lab.jobs.execute`: both).
SURFACE = "cli"


def hint(cli: str, page: str) -> str:
    """How to do something, in the words of where the message is read: `cli` is a command, `page` a control."""
    if SURFACE == "page":
        return page
    return f"`{cli}`" if SURFACE == "cli" else f"{page} (`{cli}`)"


def flag(name: str) -> str:
    """A config field as the reader sets it: its form label on a page, its flag in a terminal."""
    cli, page = "--" + name.replace("_", "-"), f"'{name.replace('_', ' ')}'"
    return page if SURFACE == "page" else cli if SURFACE == "cli" else f"{page} ({cli})"
