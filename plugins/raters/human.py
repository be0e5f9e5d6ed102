"""The `human` rater: you, at the terminal. Shows the question, the passages (shortened; `e`
expands them) and the two answers side by side (stacked when the terminal is narrow), and
reads single key presses without Enter (keys typed ahead, say a key and Enter, are taken in
order). A verdict key records the item at once; a comment is asked for only after `c`.
Plain text when stdout is not a terminal."""

from __future__ import annotations

import codecs
import getpass
import os
import re
import sys
from dataclasses import replace

from ragloop.core import Comparison, RagloopError, Rater, StopRating, Verdict, hookimpl

CHOICE_KEYS = {"a": "a", "b": "b", "t": "tie", "n": "both-bad", "s": None}
HELP = [("a", "the left answer, A, is better"), ("b", "the right answer, B, is better"),
        ("t", "tie: equally good"), ("n", "both bad"), ("s", "skip this one"),
        ("c", "write a comment first (then press the verdict key)"),
        ("e", "expand or shorten the passages"), ("q", "quit; this item is not stored"),
        ("?", "this help")]
KEYS_LINE = ("a: A  b: B  t: tie  n: both bad  s: skip  c: comment  e: expand  q: quit  "
             "?: help")
SHORT_PASSAGE = 160        # characters of each passage before `e`
SIDE_BY_SIDE = 70          # narrower terminals get the answers one above the other
MAX_COMMENT = 2000


def printable(text: str) -> str:
    """Model output may hold control characters (an escape sequence would repaint the
    terminal); show them as U+FFFD instead."""
    return "".join(c if c.isprintable() or c in "\n\t" else "\ufffd" for c in text)


def shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1].rsplit(" ", 1)[0] + " …"


# One key: Enter (as \r\n too), an escape sequence (arrow keys send several bytes), or a
# single character.
KEY = re.compile(r"\r\n|\x1b(?:\[[0-?]*[ -/]*[@-~]|O.|.)?|.", re.S)
NEWLINE = re.compile(r"\r\n|\r|\n")


class Keyboard:
    """Single keys in raw mode, lines in the terminal's normal mode.

    Keys typed ahead arrive in one read: `a` and Enter typed fast, or keys typed while the
    answers were being generated. They are kept and handed out one at a time."""

    def __init__(self, fd: int):
        self.fd = fd
        self.pending = ""
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def _read_raw(self) -> bytes:
        import termios
        import tty
        old = termios.tcgetattr(self.fd)
        try:
            # TCSANOW, not setraw's default TCSAFLUSH, which would drop keys typed ahead.
            tty.setraw(self.fd, termios.TCSANOW)
            return os.read(self.fd, 64)
        except OSError:             # the terminal went away
            return b""
        finally:
            try:
                termios.tcsetattr(self.fd, termios.TCSANOW, old)
            except termios.error:
                pass

    def key(self) -> str:
        """One key press, Enter as a newline; '' at end of input. Ctrl-C still interrupts."""
        while not self.pending:
            data = self._read_raw()
            if not data:
                return ""
            self.pending = self.decoder.decode(data)   # '' while a character is incomplete
        key = KEY.match(self.pending).group()
        self.pending = self.pending[len(key):]
        if key == "\x03":
            self.pending = ""
            raise KeyboardInterrupt
        # Ctrl-D; typed ahead while the terminal was in its normal mode, the kernel keeps it
        # as a NUL, and that is what the raw read gets.
        if key in ("\x04", "\x00"):
            self.pending = ""
            return ""
        return "\n" if NEWLINE.fullmatch(key) else key

    def skip_enter(self) -> None:
        """Drop an Enter typed right behind the key just taken: `a` + Enter is one answer."""
        enter = NEWLINE.match(self.pending)
        if enter:
            self.pending = self.pending[enter.end():]

    def discard(self) -> None:
        """Forget keys typed ahead (after a wrong one, the rest is not to be trusted)."""
        self.pending = ""

    def line(self, echo) -> str | None:
        """A line, with the terminal's own editing; None at end of input. Text typed ahead
        comes first (`echo` shows it: raw mode did not)."""
        typed, self.pending = self.pending, ""
        end = NEWLINE.search(typed)
        if end:
            self.pending = typed[end.end():]
            echo(typed[:end.start()] + "\n")
            return typed[:end.start()]
        if typed:
            echo(typed)
        try:
            data = os.read(self.fd, 4096)
        except OSError:
            data = b""
        if not data:
            return typed or None
        return typed + self.decoder.decode(data).rstrip("\r\n")


class Screen:
    def __init__(self):
        from rich.console import Console
        self.console = Console(highlight=False)
        self.rich = self.console.is_terminal

    def write(self, text: str = "", end: str = "\n") -> None:
        self.console.print(text, end=end, markup=False, highlight=False, soft_wrap=True)

    def show(self, item: Comparison, expanded: bool) -> None:
        item = replace(item, question=printable(item.question),
                       answer_a=printable(item.answer_a), answer_b=printable(item.answer_b),
                       passages=[printable(p) for p in item.passages])
        counter = f"{item.position}/{item.total}" if item.total else f"{item.position}"
        sources = item.sources or [""] * len(item.passages)
        passages = [(i, src, p if expanded else shorten(p, SHORT_PASSAGE))
                    for i, (src, p) in enumerate(zip(sources, item.passages), 1)]
        if self.rich:
            self._show_rich(item, counter, passages, expanded)
            return
        self.write(f"\n=== Question {counter} ===\n{item.question}\n\nPassages:")
        for i, src, text in passages:
            self.write(f"[{i}] {src}\n    {text}")
        for side, answer in (("A", item.answer_a), ("B", item.answer_b)):
            self.write(f"\n--- Answer {side} ---\n{answer.strip() or '(empty)'}")
        self.write(f"\n{KEYS_LINE}")

    def _show_rich(self, item, counter, passages, expanded) -> None:
        from rich.panel import Panel
        from rich.rule import Rule
        from rich.table import Table
        from rich.text import Text

        print_ = self.console.print
        print_(Rule(f"{counter}", align="left"))
        print_(Panel(Text(item.question, style="bold"), title="Question", title_align="left"))
        body = Text()
        for i, src, text in passages:
            body.append(f"[{i}] ", style="bold cyan")
            body.append(f"{src}\n" if src else "", style="dim")
            body.append(text + ("\n" if i < len(passages) else ""))
        print_(Panel(body or Text("(none)"), title_align="left",
                     title="Passages" + ("" if expanded else " (e: expand)")))
        panels = [Panel(Text(answer.strip() or "(empty)"), title=side, title_align="left")
                  for side, answer in (("A", item.answer_a), ("B", item.answer_b))]
        if self.console.width >= SIDE_BY_SIDE:
            grid = Table.grid(expand=True, padding=(0, 1))
            grid.add_column(ratio=1)
            grid.add_column(ratio=1)
            grid.add_row(*panels)
            print_(grid)
        else:
            for panel in panels:
                print_(panel)
        print_(Text(KEYS_LINE, style="dim"))


class HumanRater(Rater):
    name = "human"
    description = ("You, at the terminal: one key per verdict, optional 1-5 scores, passage "
                   "marks, comment (c).")
    interactive = True             # rate prefetches the next item while you read

    def check(self) -> None:
        if not sys.stdin.isatty():
            raise RagloopError("the human rater needs an interactive terminal and stdin is not "
                               "one; use `--rater judge` for automatic ratings")
        try:
            import termios  # noqa: F401
        except ImportError:
            raise RagloopError("the human rater needs a POSIX terminal (termios); use "
                               "`--rater judge` here") from None

    def default_rater_id(self) -> str:
        try:
            return getpass.getuser()
        except Exception:            # no user name in this environment (some containers)
            return self.name

    def compare(self, item: Comparison) -> Verdict:
        self.screen, self.keys = Screen(), Keyboard(sys.stdin.fileno())
        expanded, comment = False, ""
        self.screen.show(item, expanded)
        while True:
            key = self._ask("Which is better? ", "abtnsceq?")
            if key == "?":
                for k, what in HELP:
                    self.screen.write(f"  {k}  {what}")
            elif key == "e":
                expanded = not expanded
                self.screen.show(item, expanded)
            elif key == "c":
                # One key per verdict: the comment prompt appears only when asked for.
                self.screen.write("Comment (Enter when done): ", end="")
                typed = self.keys.line(lambda text: self.screen.write(text, end=""))
                comment = (typed or "").strip()
                if len(comment) > MAX_COMMENT:
                    self.screen.write(f"The comment was cut to {MAX_COMMENT} characters.")
                    comment = comment[:MAX_COMMENT]
            else:
                break
        choice = CHOICE_KEYS[key]
        if choice is None:
            return Verdict(None)
        scores = tuple(int(self._ask(f"Score for {side} (1-5): ", "12345q"))
                       for side in "AB") if item.ask_scores else None
        relevant = [self._ask(f"Is passage [{i}] relevant? (y/n): ", "ynq") == "y"
                    for i in range(1, len(item.passages) + 1)] if item.ask_passages else None
        return Verdict(choice, scores, relevant, comment)

    def _ask(self, prompt: str, valid: str) -> str:
        """Read keys until a valid one; q anywhere quits, end of input stops cleanly."""
        self.screen.write(prompt, end="")
        while True:
            key = self.keys.key()
            if key == "":
                self.screen.write()
                raise StopRating("end of input")
            if key.lower() in valid and len(key) == 1:
                self.keys.skip_enter()
                self.screen.write(key.lower())
                if key.lower() == "q":
                    raise StopRating("quit")
                return key.lower()
            self.keys.discard()
            shown = "Enter" if key == "\n" else repr(key)
            self.screen.write(f"\n{shown} is not a key here; press one of: "
                              f"{', '.join(valid)}")
            self.screen.write(prompt, end="")


@hookimpl
def register_raters(register):
    register(HumanRater)
