"""Help: every key of the console."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from tui.screens.base import ConsoleScreen

KEYS = """\
Everywhere   1 Dash 2 Services 3 Endpoints 4 Sessions 5 History 6 Events
             7 Interfaces and VIPs   ?/F1 Help
             C  commit (asks for a comment)   U  discard uncommitted changes
             q, Ctrl-C  quit (asks first if there are uncommitted changes)
             Tab/Shift-Tab  next/previous field   arrows, PgUp/PgDn  move
Services     /  filter (Enter/Esc: back to list)   a  add   Enter  edit
             x/Del  delete (staged, asks)          e  endpoints of service
Form         Tab/Enter  next field   Enter on a choice: open, arrows, Enter
             Ctrl-G/F2  apply: validated by the daemon, errors under the
             field; a bad value is not staged      Esc  cancel
Endpoints    [ ]  previous/next service   n  enable   o  disable   r  drain
Sessions     /  edit filters (service, client, endpoint), Enter applies
History      r  roll back to the selected commit (asks)   Tab  list/diff

Edits go to this session's candidate: nothing changes until C commits.
Screens refresh every 2 s; "daemon not reachable" means retrying.
"""


class HelpScreen(ConsoleScreen):
    MODE = "help"
    CSS_PATH = "help.tcss"

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="help-pane"):
            yield Static(KEYS, id="help")
