"""Who issues the statements: the provider's legal identity, from its own config file.

An accounts-payable team books a statement only if it names the legal entity that issued
it, its address and tax id, and carries a number of that issuer's sequence. The file is
JSON, validated whole like the contracts file (``billing/issuer.example.json``; fields in
``billing/README.md``), and every statement issued embeds what it said, so the digest
covers it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from billing.contracts import load_json_file
from billing.errors import ContractError

_PREFIX = re.compile(r"^[A-Z][A-Z0-9-]{0,15}$")
MAX_ADDRESS_LINES = 6
NUMBER_DIGITS = 6


@dataclass(frozen=True)
class Issuer:
    legal_name: str
    address: tuple[str, ...]
    tax_id: str
    number_prefix: str  # statement numbers are this and a sequence: SC-000042
    contact: str = ""

    def number(self, sequence: int) -> str:
        return f"{self.number_prefix}{sequence:0{NUMBER_DIGITS}d}"

    def to_doc(self) -> dict[str, Any]:
        return {
            "legal_name": self.legal_name,
            "address": list(self.address),
            "tax_id": self.tax_id,
            "contact": self.contact,
        }


def _text(value: Any, where: str, longest: int = 200) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > longest:
        raise ContractError(f"{where}: must be 1–{longest} characters")
    if not value.isprintable():
        raise ContractError(f"{where}: {value!r} holds a control character")
    return value.strip()


def parse_issuer(document: Any) -> Issuer:
    required = {"legal_name", "address", "tax_id", "statement_number_prefix"}
    if not isinstance(document, dict):
        raise ContractError("issuer file: expected an object")
    missing = sorted(required - document.keys())
    if missing:
        raise ContractError(f"issuer file: missing {', '.join(missing)}")
    unknown = sorted(document.keys() - required - {"contact"})
    if unknown:
        raise ContractError(f"issuer file: unknown field(s) {', '.join(unknown)}")
    address = document["address"]
    if not isinstance(address, list) or not 1 <= len(address) <= MAX_ADDRESS_LINES:
        raise ContractError(f"issuer address: a list of 1–{MAX_ADDRESS_LINES} lines")
    prefix = document["statement_number_prefix"]
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise ContractError(
            f"issuer statement_number_prefix: {prefix!r} must be 1–16 capital letters, digits "
            'or dashes, starting with a letter (e.g. "SC-")'
        )
    contact = document.get("contact", "")
    return Issuer(
        _text(document["legal_name"], "issuer legal_name"),
        tuple(_text(line, f"issuer address[{i}]") for i, line in enumerate(address)),
        _text(document["tax_id"], "issuer tax_id", 64),
        prefix,
        _text(contact, "issuer contact") if contact else "",
    )


def load_issuer_file(path: Path) -> Issuer:
    return load_json_file(path, "issuer file", parse_issuer)
