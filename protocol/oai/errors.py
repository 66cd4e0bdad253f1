"""OAI-PMH error conditions (spec §3.6): reported in a 200 body, never as HTTP status codes."""

from __future__ import annotations

import enum

from protocol.errors import ProtocolError


class ErrorCode(enum.StrEnum):
    BAD_ARGUMENT = "badArgument"
    BAD_RESUMPTION_TOKEN = "badResumptionToken"
    BAD_VERB = "badVerb"
    CANNOT_DISSEMINATE_FORMAT = "cannotDisseminateFormat"
    ID_DOES_NOT_EXIST = "idDoesNotExist"
    NO_RECORDS_MATCH = "noRecordsMatch"
    NO_METADATA_FORMATS = "noMetadataFormats"
    NO_SET_HIERARCHY = "noSetHierarchy"


# Spec §3.2: after badVerb / badArgument the <request> element carries no attributes.
BARE_REQUEST_CODES = frozenset({ErrorCode.BAD_VERB, ErrorCode.BAD_ARGUMENT})


class OaiError(ProtocolError):
    """One OAI-PMH error condition; the response echoes the request unless the code forbids it."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
