"""What happens to prepaid customers without anyone pressing a button: wallets charged as readings arrive, a
warning when credit runs low or a cut-off is coming, a disconnect when it runs out (outside friendly hours, and only
when the site's safety policy allows), a reconnect as soon as a payment brings it back, and a message for each.

`CreditAutomation.evaluate` is one round for a site (the worker runs it on a schedule; the demo after each push);
`settle` then takes the relay commands the meters have since confirmed and records the supply's new state on the
wallet, with a message to the customer. Both are safe to run again: charges are incremental, relay commands are
idempotent per request key, notifications are deduplicated per rule, account and episode, and recording a supply
state twice changes nothing.

A disconnect the safety policy refuses (night, a weekend, a public holiday, a protected account, a weather
emergency) is recorded by relay control as refused, with until when; the next round after that time asks again under
a new request key (`<episode>:disconnect:<n>`), so a refusal delays a cut-off but never cancels it for good.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from openami.control.interfaces import CommandKind, CommandState, RelayCommandInfo
from openami.control.service import MAX_KEY_CHARS, ControlService
from openami.notifications.interfaces import Disconnected, DisconnectWarning, LowBalance, Reconnected
from openami.notifications.service import NotificationService
from openami.prepayment.credit import CreditAction
from openami.prepayment.interfaces import DueAction
from openami.prepayment.wallet import WalletService
from openami.registry.service import RegistryService

ACTOR, ROLE = "system:prepayment", "system"
RETRY_UNKNOWN_REFUSAL = timedelta(hours=24)  # a refusal with no known end (a protection) is asked again daily
MAX_ASKS = 1000  # refusals of one episode followed through at most (far more than a year of daily refusals)


@dataclass
class RoundReport:
    """What one `evaluate` round did for a site."""

    charged_minor: int = 0
    low_balance_warnings: int = 0  # messages enqueued (one per subscription; repeats are deduplicated)
    disconnect_warnings: int = 0
    disconnects_requested: list[int] = field(default_factory=list)  # relay command ids, new this round
    reconnects_requested: list[int] = field(default_factory=list)
    disconnects_refused: dict[str, int] = field(default_factory=dict)  # by rule, new refusals this round


@dataclass
class SettleReport:
    disconnected: list[int] = field(default_factory=list)  # account ids whose cut-off the meter confirmed
    reconnected: list[int] = field(default_factory=list)
    not_confirmed: list[int] = field(default_factory=list)  # relay command ids that ended unconfirmed/expired


class CreditAutomation:
    """Wallets, relay control and notifications, acting together on each prepaid account's credit."""

    def __init__(
        self,
        registry: RegistryService,
        wallets: WalletService,
        control: ControlService,
        notifications: NotificationService,
    ) -> None:
        self.registry = registry
        self.wallets = wallets
        self.control = control
        self.notifications = notifications

    def evaluate(self, session: Session, site_id: int, at: datetime) -> RoundReport:
        """Charge the site's wallets to `at`, then act on what each account's credit calls for. In the caller's
        transaction; sending the relay commands is `ControlService.send_due`'s, in a transaction of its own."""
        report = RoundReport(charged_minor=self.wallets.charge_site(session, site_id, at).amount_minor)
        meters = self._meters(session, site_id)
        currency = self.registry.get_site(session, site_id).currency
        for due in self.wallets.due_actions(session, site_id, at):
            if due.action is CreditAction.WARN_LOW:
                self._warn(session, due, currency, at, report)
            elif due.action in (CreditAction.DISCONNECT_DUE, CreditAction.RECONNECT_DUE):
                meter_id = meters.get(due.account_id)
                if meter_id is not None:
                    self._switch(session, due, meter_id, at, report)
        return report

    def settle(self, session: Session, site_id: int, since: datetime) -> SettleReport:
        """The relay commands this automation asked for that ended since `since`: a confirmed one sets the
        wallet's supply state and tells the customer; one never confirmed is reported (the round after next
        asks again, since the account's credit still calls for it)."""
        report = SettleReport()
        accounts = {meter: account for account, meter in self._meters(session, site_id).items()}
        currency = self.registry.get_site(session, site_id).currency
        for command in self.control.finished_since(session, site_id, since, actor=ACTOR):
            account_id = accounts.get(command.meter_id)
            if account_id is None or command.kind not in (CommandKind.DISCONNECT, CommandKind.RECONNECT):
                continue
            if command.state is CommandState.CONFIRMED:
                self._confirmed(session, command, account_id, currency, report)
            elif command.state in (CommandState.UNCONFIRMED, CommandState.EXPIRED):
                report.not_confirmed.append(command.id)
        return report

    # -- steps ----------------------------------------------------------------------------------------------

    def _warn(
        self, session: Session, due: DueAction, currency: str, at: datetime, report: RoundReport
    ) -> None:
        if due.friendly_until is not None:
            # Credit is gone, but friendly hours hold the cut-off back: say when it will come.
            event: LowBalance | DisconnectWarning = DisconnectWarning(
                due.account_id, due.balance_minor, currency, due.friendly_until, due.request_key, at
            )
            report.disconnect_warnings += len(self.notifications.enqueue(session, event).messages)
        else:
            event = LowBalance(
                due.account_id, due.balance_minor, currency, due.days_left, due.request_key, at
            )
            report.low_balance_warnings += len(self.notifications.enqueue(session, event).messages)

    def _switch(
        self, session: Session, due: DueAction, meter_id: int, at: datetime, report: RoundReport
    ) -> None:
        kind = CommandKind.DISCONNECT if due.action is CreditAction.DISCONNECT_DUE else CommandKind.RECONNECT
        for n in range(MAX_ASKS):
            suffix = f":{kind.value}:{n}"
            key = due.request_key[: MAX_KEY_CHARS - len(suffix)] + suffix  # the suffix is never cut off
            earlier = self.control.find(session, key)
            fresh = earlier is None
            command = earlier or self.control.request(
                session,
                meter_id=meter_id,
                kind=kind,
                request_key=key,
                actor=ACTOR,
                role=ROLE,
                reason=due.reason,
            )
            if command.state is CommandState.FAILED and command.refused_rule is not None:
                if fresh:
                    rule = command.refused_rule.value
                    report.disconnects_refused[rule] = report.disconnects_refused.get(rule, 0) + 1
                until = command.refused_until or command.created_at + RETRY_UNKNOWN_REFUSAL
                if at >= until and not fresh:
                    continue  # that refusal is over: ask again under the next key
                return
            if not fresh and command.state in (
                CommandState.UNCONFIRMED,
                CommandState.EXPIRED,
                CommandState.CANCELLED,
            ):
                continue  # the meter never confirmed, or a newer intent won: ask again
            if fresh:
                asked = (
                    report.disconnects_requested
                    if kind is CommandKind.DISCONNECT
                    else report.reconnects_requested
                )
                asked.append(command.id)
            return

    def _confirmed(
        self,
        session: Session,
        command: RelayCommandInfo,
        account_id: int,
        currency: str,
        report: SettleReport,
    ) -> None:
        at = command.finished_at or command.created_at
        connected = command.kind is CommandKind.RECONNECT
        self.wallets.record_supply(session, account_id, connected=connected, at=at)
        balance = self.wallets.balance_minor(session, account_id)
        if connected:
            report.reconnected.append(account_id)
            event: Reconnected | Disconnected = Reconnected(
                account_id, balance, currency, command.request_key, at
            )
        else:
            report.disconnected.append(account_id)
            event = Disconnected(account_id, balance, currency, command.request_key, at)
        self.notifications.enqueue(session, event)

    def _meters(self, session: Session, site_id: int) -> dict[int, int]:
        """Each account's meter (the first, for an account with several: the relay that supplies it)."""
        out: dict[int, int] = {}
        for meter in self.registry.meter_infos(session, site_id):
            if meter.account_id is not None:
                out.setdefault(meter.account_id, meter.id)
        return out
