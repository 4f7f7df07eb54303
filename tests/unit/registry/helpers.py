"""Factories for registry tests: one small tree, and CSV files built from rows."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from openami.registry.interfaces import MeterInfo
from openami.registry.service import RegistryService

KEY_HEX = "0f" * 32
KEY = bytes.fromhex(KEY_HEX)


@dataclass
class Tree:
    site_id: int
    customer_id: int
    account_id: int
    transformer_id: int
    service_point_id: int
    meter: MeterInfo
    check_meter: MeterInfo


def make_tree(registry: RegistryService, session: Session, code: str = "KSM") -> Tree:
    """A site with one customer, account, transformer (with check meter), service point and meter."""
    site = registry.create_site(
        session, code=code, name="Kisumu", timezone="Africa/Nairobi", currency="KES", holiday_country="KE"
    )
    customer = registry.create_customer(session, site_id=site.id, reference=f"{code}-C1", name="Achieng")
    account = registry.create_account(
        session, site_id=site.id, customer_id=customer.id, number=f"{code}-A1", kind="prepaid"
    )
    check = registry.create_meter(
        session,
        site_id=site.id,
        serial=f"{code}-CHK",
        model="OA-3P",
        rated_current_a=200,
        auth_key=KEY,
        phases=3,
        role="check",
    )
    transformer = registry.create_transformer(
        session, site_id=site.id, code=f"{code}-TX1", rating_kva=100, check_meter_id=check.id
    )
    point = registry.create_service_point(
        session,
        site_id=site.id,
        code=f"{code}-SP1",
        rated_current_a=40,
        account_id=account.id,
        transformer_id=transformer.id,
    )
    meter = registry.create_meter(
        session,
        site_id=site.id,
        serial=f"{code}-0001",
        model="OA-1P",
        rated_current_a=60,
        auth_key=KEY_HEX,
        service_point_id=point.id,
    )
    return Tree(site.id, customer.id, account.id, transformer.id, point.id, meter, check)


def csv_text(rows: list[dict[str, str]]) -> str:
    """A registry CSV whose header is every column the rows use, `record` first."""
    columns = list(dict.fromkeys(["record", *(c for r in rows for c in r)]))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text(csv_text(rows), encoding="utf-8")
    return path


def site_row(code: str = "KSM", **overrides: str) -> dict[str, str]:
    row = {
        "record": "site",
        "code": code,
        "name": f"Site {code}",
        "timezone": "Africa/Nairobi",
        "currency": "KES",
        "holiday_country": "KE",
    }
    return row | overrides


def customer_row(reference: str = "C-1", site: str = "KSM", **overrides: str) -> dict[str, str]:
    return {"record": "customer", "site": site, "reference": reference, "name": "Achieng"} | overrides


def account_row(
    number: str = "A-1", customer: str = "C-1", site: str = "KSM", **overrides: str
) -> dict[str, str]:
    return {
        "record": "account",
        "site": site,
        "number": number,
        "customer": customer,
        "kind": "prepaid",
    } | overrides


def transformer_row(code: str = "TX-1", site: str = "KSM", **overrides: str) -> dict[str, str]:
    return {"record": "transformer", "site": site, "code": code, "rating_kva": "100"} | overrides


def service_point_row(code: str = "SP-1", site: str = "KSM", **overrides: str) -> dict[str, str]:
    return {"record": "service_point", "site": site, "code": code, "rated_current_a": "40"} | overrides


def meter_row(serial: str = "M-1", site: str = "KSM", **overrides: str) -> dict[str, str]:
    row = {
        "record": "meter",
        "site": site,
        "serial": serial,
        "model": "OA-1P",
        "rated_current_a": "60",
        "auth_key": KEY_HEX,
    }
    return row | overrides
