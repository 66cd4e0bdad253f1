"""One typed request per OAI-PMH verb, parsed and validated before any storage access (spec §3.1, §4).

:func:`parse_request` takes the multi-valued arguments of a GET query or a POST
form (``Mapping[str, Sequence[str]]``, so a repeated argument is visible) and
returns a frozen request or raises :class:`OaiError`. Argument rules are one
table, ``VERBS``; the verb-specific checks are small builders in the same table.
"""

from __future__ import annotations

import re
from calendar import timegm
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from protocol.oai.config import OaiConfig
from protocol.oai.errors import ErrorCode, OaiError
from protocol.oai.metadata import PREFIXES
from protocol.oai.sets import SET_SPEC
from protocol.oai.tokens import TokenState, decode_token

# metadataPrefixType of OAI-PMH.xsd.
PREFIX_SYNTAX = re.compile(r"^[A-Za-z0-9\-_.!~*'()]+$")
# Spec §3.3.1: day or seconds granularity, UTC 'Z'; no fractions, no offsets.
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SECONDS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


@dataclass(frozen=True, slots=True)
class Identify:
    pass


@dataclass(frozen=True, slots=True)
class ListMetadataFormats:
    identifier: str | None = None


@dataclass(frozen=True, slots=True)
class ListSets:
    pass


@dataclass(frozen=True, slots=True)
class GetRecord:
    identifier: str
    prefix: str


@dataclass(frozen=True, slots=True)
class ListQuery:
    """ListIdentifiers / ListRecords, first page or resumed: always a complete keyset query.

    ``until_stamp`` is inclusive and frozen; ``after`` is the (stamp, pk) of the
    last record already sent, None on the first page; ``complete_size`` is None
    until counted at the first page.
    """

    verb: str
    prefix: str
    set_spec: str | None
    from_stamp: int | None
    until_stamp: int
    after: tuple[int, int] | None = None
    complete_size: int | None = None
    cursor: int = 0

    @property
    def headers_only(self) -> bool:
        return self.verb == "ListIdentifiers"

    @classmethod
    def resume(cls, state: TokenState) -> ListQuery:
        return cls(
            verb=state.verb,
            prefix=state.prefix,
            set_spec=state.set_spec,
            from_stamp=state.from_stamp,
            until_stamp=state.until_stamp,
            after=(state.last_stamp, state.last_pk),
            complete_size=state.complete_size,
            cursor=state.cursor,
        )


OaiRequest = Identify | ListMetadataFormats | ListSets | GetRecord | ListQuery
Builder = Callable[[dict[str, str], OaiConfig, int], OaiRequest]


def _bad(message: str) -> OaiError:
    return OaiError(ErrorCode.BAD_ARGUMENT, message)


def parse_datestamp(value: str, *, end_of_day: bool) -> tuple[int, str]:
    """(epoch seconds, granularity) of a ``from``/``until`` argument; a day is widened to its last second
    for ``until`` so that ``until`` is inclusive at either granularity (spec §3.3.1)."""
    if _DAY.match(value):
        fmt, granularity = "%Y-%m-%d", "day"
    elif _SECONDS.match(value):
        fmt, granularity = "%Y-%m-%dT%H:%M:%SZ", "seconds"
    else:
        raise _bad(f"{value!r} is not a UTC datestamp YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ")
    try:
        parsed = datetime.strptime(value, fmt)
    except ValueError:
        raise _bad(f"{value!r} is not a valid date") from None
    stamp = timegm(parsed.timetuple())
    if granularity == "day" and end_of_day:
        stamp += 86_399
    return stamp, granularity


def _prefix(value: str) -> str:
    if not PREFIX_SYNTAX.match(value):
        raise _bad(f"{value!r} is not a legal metadataPrefix")
    if value not in PREFIXES:
        raise OaiError(ErrorCode.CANNOT_DISSEMINATE_FORMAT, f"metadata format {value!r} is not supported")
    return value


def _identify(args: dict[str, str], config: OaiConfig, now: int) -> OaiRequest:
    return Identify()


def _list_formats(args: dict[str, str], config: OaiConfig, now: int) -> OaiRequest:
    return ListMetadataFormats(args.get("identifier"))


def _list_sets(args: dict[str, str], config: OaiConfig, now: int) -> OaiRequest:
    if "resumptionToken" in args:
        # ListSets is never split into pages here, so no token of ours can resume it.
        raise OaiError(ErrorCode.BAD_RESUMPTION_TOKEN, "ListSets is complete in one response and has no tokens")
    return ListSets()


def _get_record(args: dict[str, str], config: OaiConfig, now: int) -> OaiRequest:
    return GetRecord(identifier=args["identifier"], prefix=_prefix(args["metadataPrefix"]))


def _list(verb: str) -> Builder:
    def build(args: dict[str, str], config: OaiConfig, now: int) -> OaiRequest:
        if "resumptionToken" in args:
            return ListQuery.resume(decode_token(args["resumptionToken"], config.token_secret, verb=verb, now=now))
        prefix = _prefix(args["metadataPrefix"])
        set_spec = args.get("set")
        if set_spec is not None and not SET_SPEC.match(set_spec):
            raise _bad(f"{set_spec!r} is not a legal setSpec")
        from_stamp = until_stamp = None
        if "from" in args:
            from_stamp, from_gran = parse_datestamp(args["from"], end_of_day=False)
        if "until" in args:
            until_stamp, until_gran = parse_datestamp(args["until"], end_of_day=True)
        if from_stamp is not None and until_stamp is not None:
            if from_gran != until_gran:
                raise _bad("from and until must have the same granularity")
            if from_stamp > until_stamp:
                raise _bad("from is later than until")
        # Freeze 'until' one second before the responseDate: a record changed during this
        # second (or during the harvest) gets a stamp past it, so it is not sent twice in this
        # harvest and the next incremental harvest (from = this responseDate) picks it up.
        frozen = now - 1 if until_stamp is None else min(until_stamp, now - 1)
        return ListQuery(verb, prefix, set_spec, from_stamp, frozen)

    return build


@dataclass(frozen=True, slots=True)
class VerbRule:
    required: frozenset[str]
    optional: frozenset[str]
    exclusive: str | None
    build: Builder


_LIST_ARGS = frozenset({"from", "until", "set"})
VERBS: Mapping[str, VerbRule] = {
    "Identify": VerbRule(frozenset(), frozenset(), None, _identify),
    "ListMetadataFormats": VerbRule(frozenset(), frozenset({"identifier"}), None, _list_formats),
    "ListSets": VerbRule(frozenset(), frozenset(), "resumptionToken", _list_sets),
    "GetRecord": VerbRule(frozenset({"identifier", "metadataPrefix"}), frozenset(), None, _get_record),
    "ListIdentifiers": VerbRule(frozenset({"metadataPrefix"}), _LIST_ARGS, "resumptionToken", _list("ListIdentifiers")),
    "ListRecords": VerbRule(frozenset({"metadataPrefix"}), _LIST_ARGS, "resumptionToken", _list("ListRecords")),
}


def single_arguments(arguments: Mapping[str, Sequence[str]]) -> tuple[str, dict[str, str]]:
    """(verb, other arguments) once badVerb and repeated / unknown-shape arguments are ruled out."""
    verbs = list(arguments.get("verb", ()))
    if len(verbs) != 1 or verbs[0] not in VERBS:
        if not verbs:
            raise OaiError(ErrorCode.BAD_VERB, "the verb argument is missing")
        if len(verbs) > 1:
            raise OaiError(ErrorCode.BAD_VERB, "the verb argument is repeated")
        raise OaiError(ErrorCode.BAD_VERB, f"{verbs[0]!r} is not an OAI-PMH verb")
    args: dict[str, str] = {}
    for name, values in arguments.items():
        if name == "verb":
            continue
        if len(values) != 1:
            raise _bad(f"the argument {name!r} is repeated")
        args[name] = values[0]
    return verbs[0], args


def parse_request(arguments: Mapping[str, Sequence[str]], config: OaiConfig, now: int) -> OaiRequest:
    """Validate a request (spec §3.6 error semantics) into a typed record, or raise :class:`OaiError`."""
    verb, args = single_arguments(arguments)
    rule = VERBS[verb]
    allowed = rule.required | rule.optional | ({rule.exclusive} if rule.exclusive else set())
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise _bad(f"{verb} does not take the argument(s) {', '.join(unknown)}")
    empty = sorted(name for name, value in args.items() if not value)
    if empty:
        raise _bad(f"the argument(s) {', '.join(empty)} must not be empty")
    if rule.exclusive and rule.exclusive in args:
        if len(args) > 1:
            raise _bad(f"{rule.exclusive} is an exclusive argument")
    else:
        missing = sorted(rule.required - set(args))
        if missing:
            raise _bad(f"{verb} requires the argument(s) {', '.join(missing)}")
    return rule.build(args, config, now)


def echo_arguments(arguments: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Attributes of the ``<request>`` element for a valid request (one value per argument)."""
    return {name: values[0] for name, values in arguments.items() if values}
