"""Yes/no questions and the commit dialog (modal: the screen below stays visible)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, Static


class ConfirmScreen(ModalScreen[bool]):
    CSS_PATH = "confirm.tcss"
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__()
        self.question = question
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question, id="question")
            if self.detail:
                yield Static(self.detail, id="detail")
            yield Label("y = yes   n / Esc = no", id="keys")
        yield Footer(compact=True)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class CommitScreen(ModalScreen[str | None]):
    """Shows the pending diff and asks for an optional comment; Enter commits."""

    CSS_PATH = "confirm.tcss"
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("enter", "commit", "Commit")]

    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Commit these changes to running?", id="question")
            with VerticalScroll(id="diff"):
                yield Static("\n".join(self.lines) or "(nothing)")
            yield Label("Comment (optional):")
            yield Input(placeholder="why", id="comment")
            yield Label("Enter = commit   Esc = cancel", id="keys")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#diff", VerticalScroll).can_focus = False
        self.query_one("#comment", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)

    def action_commit(self) -> None:
        self.dismiss(self.query_one("#comment", Input).value)

    def action_cancel(self) -> None:
        self.dismiss(None)
