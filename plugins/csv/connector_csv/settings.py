"""The settings of a CSV connection, validated when connector.yaml is loaded."""

from __future__ import annotations

import codecs
import csv
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from connector_core.adapters import AdapterSettings, ConfigPath

Quoting = Literal["minimal", "all", "nonnumeric", "none"]
PhoneNumbers = Literal["prefixed", "plain"]

#: With ``quoting: none`` special characters are escaped with this character instead.
ESCAPECHAR = "\\"

_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t"}
_UTF8_NAMES = frozenset({"utf-8", "utf-8-sig"})


class CsvSettings(AdapterSettings):
    """A CSV file used as a keyed table of contacts, one row per person."""

    written_paths: ClassVar[frozenset[str]] = frozenset({"path"})

    path: ConfigPath = Field(
        description="The CSV file; a relative path starts at connector.yaml's folder. "
        "It is created by the first write if its folder exists."
    )
    encoding: str = Field(
        "utf-8",
        description="Text encoding of the file, e.g. utf-8, latin-1 or cp1252. "
        "A UTF-8 byte order mark is accepted and removed when reading.",
    )
    write_bom: bool = Field(
        False,
        description="Start a written UTF-8 file with a byte order mark, which some "
        "spreadsheet programs need to recognize UTF-8. An existing mark is always kept.",
    )
    delimiter: str = Field(
        ",",
        description='The character between cells: one character such as "," or ";", or "tab".',
    )
    quotechar: str = Field(
        '"',
        description="The character around cells that contain the delimiter, a quote or a "
        "line break.",
    )
    quoting: Quoting = Field(
        "minimal",
        description="Which written cells are quoted: minimal (only where needed), all, "
        "nonnumeric (all but numbers) or none (special characters are escaped with a "
        "backslash instead).",
    )
    key_column: str = Field(
        "id",
        min_length=1,
        description="The column holding each row's unique key; it is read as the record's id.",
    )
    strict: bool = Field(
        False,
        description="Stop at the first malformed row instead of reporting and skipping it.",
    )
    neutralize_formulas: bool = Field(
        True,
        description="Protect spreadsheet users: a written cell a spreadsheet could run as a "
        "formula (starting with = + - @, also in full-width forms or after spaces, tabs or "
        "line breaks) gets a leading ' so that it shows as text; reading removes it again. "
        "Control characters other than tab and line breaks are never written, whatever this "
        "says.",
    )
    phone_numbers: PhoneNumbers = Field(
        "prefixed",
        description="How cells that are only a phone number (+ then digits, spaces and "
        "( ) . / -) are written: prefixed with ' like any cell starting with + (safe in every "
        "spreadsheet program), or plain (no function or reference can hide in them; "
        "LibreOffice shows them as text, a program that evaluates cells starting with + "
        "may show +1-555-0100 as -654).",
    )

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            "".encode(value)  # also rejects codecs that are not text encodings, e.g. base64
        except LookupError:
            raise ValueError(
                f"unknown text encoding {value!r}; use a name such as utf-8, latin-1 or cp1252"
            ) from None
        return value

    @field_validator("delimiter", mode="before")
    @classmethod
    def _named_delimiter(cls, value: object) -> object:
        return _DELIMITER_NAMES.get(value, value) if isinstance(value, str) else value

    @field_validator("delimiter", "quotechar")
    @classmethod
    def _one_character(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError(f"must be exactly one character, not {value!r}")
        if value in "\r\n":
            raise ValueError("cannot be a line break")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CsvSettings:
        if self.delimiter == self.quotechar:
            raise ValueError("delimiter and quotechar must be different characters")
        if self.quoting == "none" and ESCAPECHAR in (self.delimiter, self.quotechar):
            raise ValueError(
                "with quoting: none, cells are escaped with a backslash, so it cannot also be "
                "the delimiter or quotechar"
            )
        if self.write_bom and not self.is_utf8:
            raise ValueError("write_bom only applies to the utf-8 encoding")
        return self

    @property
    def is_utf8(self) -> bool:
        """True for utf-8 and utf-8-sig, which read and write the same way here."""
        return codecs.lookup(self.encoding).name in _UTF8_NAMES

    @property
    def read_encoding(self) -> str:
        """The codec to read with: UTF-8 files may start with a byte order mark."""
        return "utf-8-sig" if self.is_utf8 else self.encoding

    @property
    def write_encoding(self) -> str:
        """The codec to write with: a byte order mark is written explicitly, if at all."""
        return "utf-8" if self.is_utf8 else self.encoding

    @property
    def csv_quoting(self) -> int:
        """The :mod:`csv` constant for :attr:`quoting`, used when writing."""
        return {
            "minimal": csv.QUOTE_MINIMAL,
            "all": csv.QUOTE_ALL,
            "nonnumeric": csv.QUOTE_NONNUMERIC,
            "none": csv.QUOTE_NONE,
        }[self.quoting]
