"""``essaim hub crosswalk …``: the hub operator's per-source tag crosswalk and the unmapped-tag queue."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any


def cmd_hub_crosswalk(args: argparse.Namespace) -> int:
    from essaim.cli import CliError, _settings, _with_db
    from harvesting import normalise

    settings = _settings(args)
    action = args.crosswalk_command

    async def work(db: Any) -> Any:
        if action == "set":
            codes = [] if args.ignore else args.codes
            if not codes and not args.ignore:
                raise normalise.CrosswalkError("give taxonomy codes, or --ignore to ignore the tag")
            return await normalise.set_rule(db, args.source, args.tag, codes)
        if action == "remove":
            return await normalise.remove_rule(db, args.source, args.tag)
        if action == "unmapped":
            return await normalise.unmapped(db, args.source, limit=args.limit)
        return await normalise.rules(db, args.source)

    try:
        result = asyncio.run(_with_db(settings, work))
    except normalise.CrosswalkError as exc:
        raise CliError(str(exc)) from None
    if action == "set":
        target = " ".join(result["codes"]) or "(ignored)"
        print(f"{result['source']}: {result['tag']!r} → {target}; the next harvest of the source is a full one")
    elif action == "remove":
        if not result:
            raise CliError(f"no rule for {args.tag!r} in {args.source!r}")
        print(f"removed the rule for {args.tag!r} in {args.source}")
    elif args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    elif action == "unmapped":
        for row in result:
            print(f"{row['source']}  {row['occurrences']:>6}  {row['tag']}")
    else:
        for row in result:
            print(f"{row['source']}  {row['tag']}  →  {row['codes'] or '(ignored)'}")
    return 0


def add_crosswalk_parsers(hub: Any, common: argparse.ArgumentParser) -> None:
    crosswalk = hub.add_parser("crosswalk", help="partner tags → taxonomy codes, per source").add_subparsers(
        dest="crosswalk_command", required=True
    )
    p = crosswalk.add_parser("list", parents=[common], help="the rules (of one source, or all)")
    p.add_argument("--source")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_hub_crosswalk)
    p = crosswalk.add_parser("set", parents=[common], help="map a tag of a source to taxonomy codes")
    p.add_argument("source")
    p.add_argument("tag")
    p.add_argument("codes", nargs="*", help="theme or sub-theme codes (e.g. ENV ALI)")
    p.add_argument("--ignore", action="store_true", help="the tag maps to nothing (and leaves the queue)")
    p.set_defaults(func=cmd_hub_crosswalk)
    p = crosswalk.add_parser("remove", parents=[common], help="delete a rule")
    p.add_argument("source")
    p.add_argument("tag")
    p.set_defaults(func=cmd_hub_crosswalk)
    p = crosswalk.add_parser("unmapped", parents=[common], help="the queue of tags no rule maps, most frequent first")
    p.add_argument("--source")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_hub_crosswalk)


def cmd_hub_rules_check(args: argparse.Namespace) -> int:
    from essaim.cli import CliError
    from harvesting.extract import RulesError, check_rules, load_rules

    try:
        rules = load_rules(args.file)
    except RulesError as exc:
        raise CliError(str(exc)) from None
    failures = check_rules(rules)
    for failure in failures:
        print(f"{args.file}: {failure}")
    if failures:
        return 1
    print(f"{args.file}: version {rules.version}, {len(rules.fields)} fields, {len(rules.tests)} test(s) passed")
    return 0


def add_rules_parsers(hub: Any) -> None:
    rules = hub.add_parser("rules", help="per-site extraction rules of crawled sources").add_subparsers(
        dest="rules_command", required=True
    )
    p = rules.add_parser("check", help="check a rules file and run its [[tests]] pages")
    p.add_argument("file")
    p.set_defaults(func=cmd_hub_rules_check)
