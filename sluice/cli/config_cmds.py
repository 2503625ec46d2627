"""`sluice config …` and `sluice apply -f FILE`: history, rollback, export/import, files."""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from appliance.control.client import ControlClient
from sluice.cli.output import fail, print_json, print_table, warn_datapath_errors


def add_parsers(sub: argparse._SubParsersAction) -> None:
    cfg = sub.add_parser("config", help="configuration history, rollback, export, import")
    verbs = cfg.add_subparsers(dest="verb", metavar="VERB", required=True)

    history = verbs.add_parser("history", help="list commits")
    history.add_argument("-n", "--limit", type=int, default=20)
    history.add_argument("-o", "--output", choices=["table", "json"], default="table")
    history.set_defaults(func=cmd_history)

    diff = verbs.add_parser("diff", help="what a commit changed (default: the latest)")
    diff.add_argument("id", nargs="?", type=int)
    diff.add_argument("-o", "--output", choices=["text", "json"], default="text")
    diff.set_defaults(func=cmd_diff)

    rollback = verbs.add_parser("rollback", help="restore the config as it was after commit N")
    rollback.add_argument("id", type=int, help="commit id from `sluice config history`")
    rollback.add_argument("-m", "--comment", default="")
    rollback.set_defaults(func=cmd_rollback)

    export = verbs.add_parser("export", help="print the running config (secrets masked)")
    export.add_argument("-f", "--file", help="write to FILE instead of stdout")
    export.add_argument("--format", choices=["json", "yaml"], default="json")
    export.set_defaults(func=cmd_export)

    imp = verbs.add_parser("import", help="replace the whole running config with FILE")
    imp.add_argument("file")
    imp.add_argument("-m", "--comment", default="")
    imp.set_defaults(func=cmd_import)

    save = verbs.add_parser("save", help="copy running to startup")
    save.set_defaults(func=cmd_save)

    apply = sub.add_parser("apply", help="declare the services and sections in a file")
    apply.add_argument("-f", "--file", required=True, help="YAML or JSON config file")
    apply.add_argument("-m", "--comment", default="")
    apply.set_defaults(func=cmd_apply)


class ConfigFileError(ValueError):
    pass


def load_config_file(path: str) -> Any:
    """Read a YAML or JSON config file (JSON is YAML); the error names file, line and column."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise ConfigFileError(f"{path}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise ConfigFileError(f"{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path}: {exc}") from None


def cmd_history(client: ControlClient, args: argparse.Namespace) -> int:
    commits = client.call("config.history", limit=args.limit)
    if args.output == "json":
        print_json(commits)
        return 0
    rows = []
    for c in commits:
        s = c["summary"]
        parts = [
            f"+{s['services-added']}",
            f"-{s['services-removed']}",
            f"~{s['services-changed']}",
        ]
        if s.get("sections-changed"):
            parts.append(",".join(s["sections-changed"]))
        rows.append([c["id"], c["at"], c["user"], c["interface"], " ".join(parts), c["comment"]])
    print_table(["id", "when", "user", "via", "services", "comment"], rows)
    return 0


def cmd_diff(client: ControlClient, args: argparse.Namespace) -> int:
    params = {"id": args.id} if args.id else {}
    commit = client.call("config.show-commit", **params)
    if args.output == "json":
        print_json(commit)
        return 0
    print(f"commit {commit['id']}  {commit['at']}  {commit['user']} via {commit['interface']}")
    if commit["comment"]:
        print(f"    {commit['comment']}")
    for change in commit["changes"]:
        label = f"{change['kind']} {change['name']}"
        old = _lines(change["old"])
        new = _lines(change["new"])
        sys.stdout.writelines(
            difflib.unified_diff(old, new, fromfile=f"a/{label}", tofile=f"b/{label}")
        )
    return 0


def _lines(doc: Any) -> list[str]:
    if doc is None:
        return []
    return [line + "\n" for line in json.dumps(doc, indent=2).splitlines()]


def cmd_rollback(client: ControlClient, args: argparse.Namespace) -> int:
    result = client.call("config.rollback", id=args.id, comment=args.comment)
    if result["commit-id"] is None:
        print(f"running already matches commit {args.id}; nothing to do")
    else:
        print(f"rolled back to commit {args.id} (new commit {result['commit-id']})")
    return 0


def cmd_export(client: ControlClient, args: argparse.Namespace) -> int:
    doc = client.call("config.export")
    text = (
        yaml.safe_dump(doc, sort_keys=False)
        if args.format == "yaml"
        else json.dumps(doc, indent=2) + "\n"
    )
    if args.file:
        Path(args.file).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _file_command(client: ControlClient, method: str, path: str, comment: str) -> int:
    try:
        doc = load_config_file(path)
    except ConfigFileError as exc:
        return fail(str(exc))
    result = client.call(method, config=doc, comment=comment)
    if result["commit-id"] is None:
        print("no change: running already matches the file")
    else:
        s = result["summary"]
        print(
            f"commit {result['commit-id']}: {s['services-added']} added, "
            f"{s['services-removed']} removed, {s['services-changed']} changed"
        )
        warn_datapath_errors(result)
    return 0


def cmd_import(client: ControlClient, args: argparse.Namespace) -> int:
    return _file_command(client, "config.import", args.file, args.comment or "import")


def cmd_apply(client: ControlClient, args: argparse.Namespace) -> int:
    return _file_command(client, "config.apply", args.file, args.comment or f"apply {args.file}")


def cmd_save(client: ControlClient, args: argparse.Namespace) -> int:
    client.call("config.save")
    print("running config saved to startup")
    return 0
