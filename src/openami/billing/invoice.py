"""Invoices: a bill as an HTML page (Jinja2, autoescaped) and as a PDF (ReportLab), from the same figures.

Amounts are the bill's, in the currency's minor unit; nothing is recomputed here. Estimated intervals are said on
the invoice, as on the bill's lines. PDF text uses Helvetica, or the STSong-Light CID font (shipped with PDF
viewers) when a name needs Chinese characters.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from io import BytesIO

from jinja2 import Environment, select_autoescape
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from openami.billing.interfaces import BillInfo
from openami.registry.interfaces import AccountInfo, CustomerInfo, SiteInfo
from openami.tariffs.model import minor_digits


@dataclass(frozen=True)
class InvoiceData:
    bill: BillInfo
    site: SiteInfo
    account: AccountInfo
    customer: CustomerInfo

    def money(self, minor: int) -> str:
        digits = minor_digits(self.bill.currency)
        return f"{Decimal(minor).scaleb(-digits):,.{digits}f}"

    @property
    def title(self) -> str:
        return f"Invoice {self.site.code}-{self.bill.id:06d}"


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ inv.title }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 1rem auto; padding: 0 1rem; color: #222; }
table { width: 100%; border-collapse: collapse; } td, th { padding: .3rem .4rem; border-bottom: 1px solid #ddd; }
td.n, th.n { text-align: right; } tfoot td { font-weight: bold; border-top: 2px solid #222; }
.note { color: #8a5a00; } .reversed { color: #a00; font-weight: bold; }
</style></head><body>
<h1>{{ inv.title }}</h1>
<p>{{ inv.site.name }} &middot; {{ inv.customer.name }} &middot; account {{ inv.account.number }}</p>
<p>Period {{ inv.bill.period_start.isoformat() }} to {{ last_day.isoformat() }} &middot;
 {{ import_kwh }} kWh used{% if export_kwh != "0" %}, {{ export_kwh }} kWh exported{% endif %}</p>
{% if inv.bill.status.value == "reversed" %}<p class="reversed">This bill was reversed and replaced.</p>{% endif %}
{% if inv.bill.intervals_estimated %}<p class="note">{{ inv.bill.intervals_estimated }} of the intervals billed
were estimated (the meter's reading did not arrive); a later actual reading corrects the bill.</p>{% endif %}
<table><thead><tr><th>Charge</th><th class="n">Quantity</th><th class="n">Price</th>
<th class="n">Amount ({{ inv.bill.currency }})</th></tr></thead><tbody>
{% for line in inv.bill.lines %}<tr><td>{{ line.description }}</td><td class="n">{{ line.quantity }} {{ line.unit }}</td>
<td class="n">{{ line.unit_price }}</td><td class="n">{{ inv.money(line.amount_minor) }}</td></tr>
{% endfor %}</tbody><tfoot><tr><td colspan="3">Total</td><td class="n">{{ inv.money(inv.bill.total_minor) }}</td>
</tr></tfoot></table></body></html>
"""
_ENV = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
_HTML = _ENV.from_string(_TEMPLATE)


def invoice_html(data: InvoiceData) -> str:
    bill = data.bill
    return _HTML.render(
        inv=data,
        last_day=bill.period_end.fromordinal(bill.period_end.toordinal() - 1),
        import_kwh=f"{Decimal(bill.import_wh) / 1000:f}",
        export_kwh=f"{Decimal(bill.export_wh) / 1000:f}",
    )


_CJK_FONT = "STSong-Light"


def _font_for(*texts: str) -> str:
    if any(ord(ch) > 0x2E80 for text in texts for ch in text):
        if _CJK_FONT not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(UnicodeCIDFont(_CJK_FONT))
        return _CJK_FONT
    return "Helvetica"


def invoice_pdf(data: InvoiceData, *, compress: bool = True) -> bytes:
    """The invoice as an A4 PDF. `compress=False` leaves the page text readable in the file (for tests)."""
    bill = data.bill
    texts = [data.site.name, data.customer.name, *(line.description for line in bill.lines)]
    font = _font_for(*texts)
    styles = getSampleStyleSheet()
    for style in styles.byName.values():
        if hasattr(style, "fontName"):
            style.fontName = font
    out = BytesIO()
    doc = SimpleDocTemplate(
        out,
        pagesize=A4,
        title=data.title,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        pageCompression=int(compress),
    )
    last_day = bill.period_end.fromordinal(bill.period_end.toordinal() - 1)
    story = [
        Paragraph(data.title, styles["Title"]),
        Paragraph(
            f"{_esc(data.site.name)} - {_esc(data.customer.name)} - account {_esc(data.account.number)}",
            styles["Normal"],
        ),
        Paragraph(
            f"Period {bill.period_start.isoformat()} to {last_day.isoformat()}; "
            f"{Decimal(bill.import_wh) / 1000:f} kWh used",
            styles["Normal"],
        ),
    ]
    if bill.status.value == "reversed":
        story.append(Paragraph("This bill was reversed and replaced.", styles["Normal"]))
    if bill.intervals_estimated:
        story.append(
            Paragraph(f"{bill.intervals_estimated} of the intervals billed were estimated.", styles["Normal"])
        )
    story.append(Spacer(1, 6 * mm))
    rows = [["Charge", "Quantity", "Price", f"Amount ({bill.currency})"]]
    rows += [
        [Paragraph(_esc(line.description), styles["Normal"]), f"{line.quantity} {line.unit}", f"{line.unit_price}",
         data.money(line.amount_minor)]
        for line in bill.lines
    ]  # fmt: skip
    rows.append(["Total", "", "", data.money(bill.total_minor)])
    table = Table(rows, colWidths=[85 * mm, 30 * mm, 25 * mm, 34 * mm], repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 0), (-1, -1), font),
                ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.8, colors.black),
                ("LINEABOVE", (0, -1), (-1, -1), 0.8, colors.black),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    story.append(table)
    doc.build(story)
    return out.getvalue()


def _esc(text: str) -> str:
    """Text for a ReportLab paragraph, which reads a little markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
