"""Offline tokens, the platform side: provisions meters for OpenPAYGo tokens and issues them.

For meters without a live link (the meter side is `openami.device.tokens`). A token is 9 digits (an OpenPAYGo
standard token) carrying a count, a kind and a value of 0..995 *token units*. Each site chooses what its tokens
carry (`configure_site`):

- energy: one token unit is `unit_size` Wh (e.g. 100: a token adds up to 99.5 kWh, in steps of 0.1 kWh);
- money: one token unit is `unit_size` minor units of the site's currency (e.g. 100: whole units, up to 995).

A meter copies its site's choice when it is provisioned (the meter is configured with it), so changing the
site's choice later only affects meters provisioned after. Credit to issue must be a positive whole multiple of
`unit_size`, at most 995 units: nothing is rounded, so the credit a customer bought is exactly what the meter
adds. More credit than one token holds takes several tokens.

Each meter has a random 16-byte OpenPAYGo key and a random starting code. The key is stored sealed with the
meter-key cipher (`security.meter_keys.MeterKeyCipher`, AES-256-GCM under the master keys): that cipher seals
32-byte values, so a fresh random 32-byte secret is sealed and the OpenPAYGo key is its first 16 bytes. It is
sealed under the label `<serial>/openpaygo`, so neither it nor the meter's frame key opens in the other's place.

Counts: issuer and meter start at 1 (OpenPAYGo's convention); each token takes the next count of its parity
(add tokens even, set/disable odd), the meter's row keeps the last, and `(meter, count)` is unique in the
token table, so a count is never issued twice. The row is locked (SELECT ... FOR UPDATE) while a token is made.
Every token issued is recorded with the operation log in the caller's transaction. Never commits.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from openpaygo import OpenPAYGOTokenEncoder, TokenType  # type: ignore[import-untyped]
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from openami.common.clock import Clock
from openami.common.errors import ConflictError, NotFoundError, ValidationError
from openami.device.tokens import (
    MAX_STARTING_CODE,
    MAX_TOKEN_VALUE,
    SECRET_KEY_BYTES,
    STARTING_COUNT,
    CreditKind,
    TokenKind,
)
from openami.prepayment.tokens_models import (
    ACTOR_MAX_LEN,
    PAYMENT_REFERENCE_MAX_LEN,
    OfflineToken,
    OfflineTokenMeter,
    OfflineTokenSite,
)
from openami.registry.service import RegistryService
from openami.security.audit import AuditLog
from openami.security.meter_keys import METER_KEY_BYTES, MeterKeyCipher

__all__ = [
    "CreditKind",
    "IssuedToken",
    "TokenKind",
    "TokenProvisioning",
    "TokenService",
    "TokenSiteSettings",
]

_OBJECT_TYPE = "meter"
_SEAL_LABEL = "openpaygo"


@dataclass(frozen=True, slots=True)
class TokenSiteSettings:
    site_id: int
    credit_kind: CreditKind
    unit_size: int  # Wh (energy) or minor units (money) per token value unit
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TokenProvisioning:
    """What a meter is configured with for tokens (maps onto `openami.device.tokens.TokenConfig`)."""

    meter_id: int
    serial: str
    secret_key: bytes = field(repr=False)  # 16 bytes; secret: give it only to the meter
    starting_code: int = field(repr=False)
    credit_kind: CreditKind = CreditKind.ENERGY
    unit_size: int = 1
    starting_count: int = STARTING_COUNT


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token issued. `value_units` in token units, `credit_amount` in Wh or minor units (None for disable)."""

    id: int
    meter_id: int
    site_id: int
    count: int
    kind: TokenKind
    token: str  # the 9 digits to type on the meter
    value_units: int | None
    credit_kind: CreditKind
    credit_amount: int | None
    issued_at: datetime
    issued_by: str
    payment_reference: str | None


def _issued(row: OfflineToken) -> IssuedToken:
    return IssuedToken(
        id=row.id,
        meter_id=row.meter_id,
        site_id=row.site_id,
        count=row.count,
        kind=TokenKind(row.kind),
        token=row.token,
        value_units=row.value_units,
        credit_kind=CreditKind(row.credit_kind),
        credit_amount=row.credit_amount,
        issued_at=row.issued_at,
        issued_by=row.issued_by,
        payment_reference=row.payment_reference,
    )


def _positive_int(value: Any, where: str, *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if type(value) is not int or value < low:
        wanted = "a whole number, not negative" if allow_zero else "a positive whole number"
        raise ValidationError(f"must be {wanted}, got {value!r}", location=where)
    return value


class TokenService:
    """Provisions meters for offline tokens and issues tokens. Reads time only from `clock`; never commits."""

    def __init__(self, clock: Clock, registry: RegistryService, cipher: MeterKeyCipher) -> None:
        self.clock = clock
        self.registry = registry
        self.cipher = cipher
        self.audit = AuditLog(clock)

    # -- site settings ---------------------------------------------------------------------------------------

    def configure_site(
        self,
        session: Session,
        *,
        site_id: int,
        credit_kind: CreditKind | str,
        unit_size: int,
        actor: str,
        role: str,
    ) -> TokenSiteSettings:
        """Choose what the site's tokens carry: energy (`unit_size` Wh per unit) or money (minor units)."""
        try:
            kind = CreditKind(credit_kind)
        except ValueError:
            choices = ", ".join(k.value for k in CreditKind)
            raise ValidationError(f"must be one of {choices}, got {credit_kind!r}", "credit_kind") from None
        _positive_int(unit_size, "unit_size")
        self.registry.get_site(session, site_id)  # NotFoundError for an unknown site
        row = session.get(OfflineTokenSite, site_id)
        before = None if row is None else {"credit_kind": row.credit_kind, "unit_size": row.unit_size}
        now = self.clock.now()
        if row is None:
            row = OfflineTokenSite(
                site_id=site_id, credit_kind=kind.value, unit_size=unit_size, updated_at=now
            )
            session.add(row)
        else:
            row.credit_kind, row.unit_size, row.updated_at = kind.value, unit_size, now
        session.flush()
        self.audit.append(
            session,
            actor=actor,
            role=role,
            action="offline_tokens.configure_site",
            object_type="site",
            object_id=str(site_id),
            before=before,
            after={"credit_kind": kind.value, "unit_size": unit_size},
            site_id=site_id,
        )
        return TokenSiteSettings(site_id, kind, unit_size, now)

    def site_settings(self, session: Session, site_id: int) -> TokenSiteSettings:
        row = session.get(OfflineTokenSite, site_id)
        if row is None:
            raise NotFoundError(f"site {site_id} has no offline-token settings; configure_site first")
        return TokenSiteSettings(row.site_id, CreditKind(row.credit_kind), row.unit_size, row.updated_at)

    # -- meters ----------------------------------------------------------------------------------------------

    def provision_meter(self, session: Session, *, meter_id: int, actor: str, role: str) -> TokenProvisioning:
        """Give the meter a fresh key and starting code, with its site's credit unit; returns what the meter
        must be configured with. ConflictError if it already has them (its tokens would stop working)."""
        meter = self.registry.meter_info(session, meter_id)  # NotFoundError for an unknown meter
        settings = self.site_settings(session, meter.site_id)
        if session.get(OfflineTokenMeter, meter_id) is not None:
            raise ConflictError(
                f"meter {meter.serial!r} (id {meter_id}) is already provisioned for offline tokens"
            )
        secret = secrets.token_bytes(METER_KEY_BYTES)
        starting_code = secrets.randbelow(MAX_STARTING_CODE + 1)
        session.add(
            OfflineTokenMeter(
                meter_id=meter_id,
                site_id=meter.site_id,
                sealed_key=self.cipher.seal(self._label(meter.serial), secret),
                starting_code=starting_code,
                credit_kind=settings.credit_kind.value,
                unit_size=settings.unit_size,
                last_count=STARTING_COUNT,
                provisioned_at=self.clock.now(),
            )
        )
        try:
            session.flush()
        except IntegrityError:  # a concurrent provisioning of the same meter won
            raise ConflictError(f"meter {meter.serial!r} (id {meter_id}) is already provisioned") from None
        self.audit.append(
            session,
            actor=actor,
            role=role,
            action="offline_tokens.provision_meter",
            object_type=_OBJECT_TYPE,
            object_id=str(meter_id),
            after={"credit_kind": settings.credit_kind.value, "unit_size": settings.unit_size},
            site_id=meter.site_id,
        )
        return TokenProvisioning(
            meter_id,
            meter.serial,
            secret[:SECRET_KEY_BYTES],
            starting_code,
            settings.credit_kind,
            settings.unit_size,
        )

    def device_config(self, session: Session, meter_id: int) -> TokenProvisioning:
        """What a provisioned meter was configured with (to configure a replacement board or a simulator)."""
        row = self._profile(session, meter_id, lock=False)
        serial = self.registry.meter_info(session, meter_id).serial
        secret = self.cipher.open(self._label(serial), row.sealed_key)
        return TokenProvisioning(
            meter_id,
            serial,
            secret[:SECRET_KEY_BYTES],
            row.starting_code,
            CreditKind(row.credit_kind),
            row.unit_size,
        )

    # -- issuing ---------------------------------------------------------------------------------------------

    def issue_credit(
        self,
        session: Session,
        *,
        meter_id: int,
        actor: str,
        role: str,
        energy_wh: int | None = None,
        amount_minor: int | None = None,
        payment_reference: str | None = None,
    ) -> IssuedToken:
        """A token that adds credit: `energy_wh` for a meter whose tokens carry energy, `amount_minor` for one
        whose tokens carry money (exactly one of them, a positive multiple of the meter's unit size)."""
        return self._issue(
            session,
            meter_id=meter_id,
            kind=TokenKind.ADD,
            actor=actor,
            role=role,
            energy_wh=energy_wh,
            amount_minor=amount_minor,
            payment_reference=payment_reference,
        )

    def issue_set(
        self,
        session: Session,
        *,
        meter_id: int,
        actor: str,
        role: str,
        energy_wh: int | None = None,
        amount_minor: int | None = None,
    ) -> IssuedToken:
        """A token that sets the meter's credit to the amount (0 allowed) and enables prepayment again."""
        return self._issue(
            session,
            meter_id=meter_id,
            kind=TokenKind.SET,
            actor=actor,
            role=role,
            energy_wh=energy_wh,
            amount_minor=amount_minor,
            payment_reference=None,
        )

    def issue_disable(self, session: Session, *, meter_id: int, actor: str, role: str) -> IssuedToken:
        """A token that turns prepayment off on the meter (the supply no longer depends on credit)."""
        return self._issue(
            session,
            meter_id=meter_id,
            kind=TokenKind.DISABLE,
            actor=actor,
            role=role,
            energy_wh=None,
            amount_minor=None,
            payment_reference=None,
        )

    def tokens_for_meter(self, session: Session, meter_id: int) -> list[IssuedToken]:
        """Every token issued for the meter, in count order."""
        rows = session.scalars(
            select(OfflineToken).where(OfflineToken.meter_id == meter_id).order_by(OfflineToken.count)
        )
        return [_issued(row) for row in rows]

    def _issue(
        self,
        session: Session,
        *,
        meter_id: int,
        kind: TokenKind,
        actor: str,
        role: str,
        energy_wh: int | None,
        amount_minor: int | None,
        payment_reference: str | None,
    ) -> IssuedToken:
        if not isinstance(actor, str) or not actor.strip() or len(actor) > ACTOR_MAX_LEN:
            raise ValidationError(f"must be a non-empty name of at most {ACTOR_MAX_LEN} characters", "actor")
        if payment_reference is not None and (
            not isinstance(payment_reference, str)
            or not payment_reference.strip()
            or len(payment_reference) > PAYMENT_REFERENCE_MAX_LEN
        ):
            raise ValidationError(
                f"must be a non-empty reference of at most {PAYMENT_REFERENCE_MAX_LEN} characters, "
                f"got {payment_reference!r}",
                "payment_reference",
            )
        serial = self.registry.meter_info(session, meter_id).serial  # NotFoundError for an unknown meter
        row = self._profile(session, meter_id, lock=True)
        credit_kind = CreditKind(row.credit_kind)
        value_units, credit_amount = self._value(kind, credit_kind, row.unit_size, energy_wh, amount_minor)
        secret = self.cipher.open(self._label(serial), row.sealed_key)[:SECRET_KEY_BYTES]
        token_type = {
            TokenKind.ADD: TokenType.ADD_TIME,
            TokenKind.SET: TokenType.SET_TIME,
            TokenKind.DISABLE: TokenType.DISABLE_PAYG,
        }[kind]
        count, token = OpenPAYGOTokenEncoder.generate_token(
            secret_key=secret.hex(),
            count=row.last_count,
            value=value_units,
            token_type=token_type,
            starting_code=row.starting_code,
        )
        now = self.clock.now()
        issued = OfflineToken(
            meter_id=meter_id,
            site_id=row.site_id,
            count=count,
            kind=kind.value,
            token=token,
            value_units=value_units,
            credit_kind=credit_kind.value,
            credit_amount=credit_amount,
            issued_at=now,
            issued_by=actor,
            payment_reference=payment_reference,
        )
        row.last_count = count
        session.add(issued)
        try:
            session.flush()
        except IntegrityError:  # only a concurrent issue that bypassed the row lock could take the same count
            raise ConflictError(
                f"meter {serial!r}: token count {count} was issued concurrently; retry the transaction"
            ) from None
        self.audit.append(
            session,
            actor=actor,
            role=role,
            action=f"offline_tokens.issue_{kind.value}",
            object_type=_OBJECT_TYPE,
            object_id=str(meter_id),
            # The digits are left out: until typed they are worth their credit to whoever holds them.
            after={
                "token_id": issued.id,
                "count": count,
                "kind": kind.value,
                "value_units": value_units,
                "credit_kind": credit_kind.value,
                "credit_amount": credit_amount,
                "payment_reference": payment_reference,
            },
            site_id=row.site_id,
        )
        return _issued(issued)

    @staticmethod
    def _value(
        kind: TokenKind,
        credit_kind: CreditKind,
        unit_size: int,
        energy_wh: int | None,
        amount_minor: int | None,
    ) -> tuple[int | None, int | None]:
        """(token units, credit in Wh or minor units) for the amount given, checked against the meter's unit."""
        if kind is TokenKind.DISABLE:
            return None, None
        expected, other = (
            ("energy_wh", "amount_minor")
            if credit_kind is CreditKind.ENERGY
            else (
                "amount_minor",
                "energy_wh",
            )
        )
        given = {"energy_wh": energy_wh, "amount_minor": amount_minor}
        if given[other] is not None:
            raise ValidationError(
                f"this meter's tokens carry {credit_kind.value}: give {expected}, not {other}", other
            )
        amount = _positive_int(given[expected], expected, allow_zero=kind is TokenKind.SET)
        if amount % unit_size:
            raise ValidationError(
                f"must be a whole multiple of the meter's token unit ({unit_size}), got {amount}", expected
            )
        units = amount // unit_size
        if units > MAX_TOKEN_VALUE:
            raise ValidationError(
                f"one token carries at most {MAX_TOKEN_VALUE * unit_size} ({MAX_TOKEN_VALUE} units of "
                f"{unit_size}), got {amount}; issue several tokens",
                expected,
            )
        return units, amount

    @staticmethod
    def _profile(session: Session, meter_id: int, *, lock: bool) -> OfflineTokenMeter:
        stmt = select(OfflineTokenMeter).where(OfflineTokenMeter.meter_id == meter_id)
        if lock:
            stmt = stmt.with_for_update()
        row = session.scalars(stmt).one_or_none()
        if row is None:
            raise NotFoundError(
                f"meter {meter_id} is not provisioned for offline tokens; provision_meter first"
            )
        return row

    @staticmethod
    def _label(serial: str) -> str:
        return f"{serial}/{_SEAL_LABEL}"
