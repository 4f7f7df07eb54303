"""What other contexts see of relay control: command kinds and states, plain result values, and the ports
control needs (a command sender: the head-end; a meter directory: the registry)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from openami.control.policy import Rule
from openami.headend.codec import Command
from openami.registry.interfaces import AccountInfo, MeterInfo, SiteInfo


class CommandKind(enum.StrEnum):
    DISCONNECT = "disconnect"  # open the relay; confirmed by a report of the relay open
    RECONNECT = "reconnect"  # close the relay; confirmed by a report of the relay closed
    READ_NOW = "read_now"  # re-read the recent load profile; confirmed by the meter's reply
    SET_CLOCK = "set_clock"  # set the meter's clock to the head-end's time at sending; confirmed by the reply
    # Set the meter's load limit to `limit_w` W (0: none); confirmed by a reply reporting that limit (0-0:17.0.0).
    SET_LOAD_LIMIT = "set_load_limit"


RELAY_KINDS = frozenset({CommandKind.DISCONNECT, CommandKind.RECONNECT})


class CommandState(enum.StrEnum):
    QUEUED = "queued"  # waiting to be sent (or its bulk operation's rate limit)
    SENT = "sent"  # sent at least once, no confirming report yet; retried with backoff
    CONFIRMED = "confirmed"  # the meter reported the outcome (relay state, or its reply)
    UNCONFIRMED = "unconfirmed"  # sent, but no report came back before the deadline: nobody knows the outcome
    FAILED = "failed"  # refused by the safety policy, or the head-end cannot reach such a meter
    EXPIRED = "expired"  # the deadline passed before it could be sent at all
    CANCELLED = "cancelled"  # withdrawn by an operator, its bulk operation, or a newer relay command


TERMINAL_STATES = frozenset(
    {
        CommandState.CONFIRMED,
        CommandState.UNCONFIRMED,
        CommandState.FAILED,
        CommandState.EXPIRED,
        CommandState.CANCELLED,
    }
)
ACTIVE_STATES = frozenset({CommandState.QUEUED, CommandState.SENT})


@dataclass(frozen=True, slots=True)
class RelayCommandInfo:
    id: int
    site_id: int
    meter_id: int
    kind: CommandKind
    state: CommandState
    request_key: str  # the caller's idempotency key
    actor: str
    reason: str
    created_at: datetime
    expires_at: datetime  # the deadline: unsent then -> expired, sent but unreported -> unconfirmed
    attempts: int
    next_attempt_at: datetime | None  # None once terminal
    first_sent_at: datetime | None
    last_sent_at: datetime | None
    finished_at: datetime | None
    bulk_id: int | None
    refused_rule: Rule | None  # when the safety policy refused it
    refused_until: datetime | None  # when that refusal ends (None: no known end)
    reported_connected: bool | None  # the relay state the meter reported, for relay commands
    detail: str  # why it ended as it did, readable
    limit_w: int | None = None  # the load limit a set_load_limit asks for, W (0: none); None for other kinds


@dataclass(frozen=True, slots=True)
class BulkOperationInfo:
    id: int
    site_id: int
    kind: CommandKind
    request_key: str
    per_minute: int  # at most this many of its commands are sent in any minute
    actor: str
    reason: str
    created_at: datetime
    cancelled_at: datetime | None
    command_ids: tuple[int, ...]
    refused: int  # how many of its disconnects the safety policy refused at request time


@dataclass(frozen=True, slots=True)
class SitePolicyInfo:
    """A site's control settings (the defaults when none are stored)."""

    site_id: int
    night_start_hour: int
    night_end_hour: int
    block_weekends: bool
    block_holidays: bool
    commands_per_minute: int  # the default rate of a bulk operation
    max_attempts: int  # sends of one command, the first included
    first_retry_s: int  # wait after the first send before a retry; doubled after each further send
    command_ttl_s: int  # a command's deadline after it is requested (bulk: after its turn)
    stored: bool  # False when these are the defaults


@dataclass(frozen=True, slots=True)
class ProtectionInfo:
    id: int
    account_id: int
    site_id: int
    kind: str  # "medical" or "vulnerable"
    reason: str
    valid_from: datetime
    valid_until: datetime | None
    created_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class EmergencyInfo:
    id: int
    site_id: int
    reason: str
    starts_at: datetime
    ends_at: datetime
    declared_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DispatchResult:
    """What one `send_due` step did: counts per outcome, and the ids of commands it touched."""

    sent: int = 0
    retried: int = 0
    unconfirmed: int = 0
    expired: int = 0
    failed: int = 0
    waiting_rate_limit: int = 0
    command_ids: tuple[int, ...] = ()


class CommandSender(Protocol):
    """Sends one command to meter `serial` and returns once it is handed to the transport. HeadEnd.send_command
    implements it; it raises NotFoundError for a serial it does not know, OpenAMIError when it cannot send."""

    def send_command(self, serial: str, command: Command) -> object: ...


class MeterDirectory(Protocol):
    """What control learns from the registry (RegistryService implements it)."""

    def meter_info(self, session: Session, meter_id: int) -> MeterInfo: ...

    def get_site(self, session: Session, site_id: int) -> SiteInfo: ...

    def get_account(self, session: Session, account_id: int) -> AccountInfo: ...
