"""vCard mapping: round trips in 3.0 and 4.0, escaping, folding, reading foreign cards."""

from __future__ import annotations

import logging

import pytest
from connector_nextcloud import NextcloudAdapter, NextcloudSettings
from connector_nextcloud.vcard import (
    MAPPED_FIELDS,
    CardFormat,
    CardInvalid,
    comparable,
    parse_card,
    render_card,
    same_content,
)

from connector_core.testing import sample_records

AWKWARD = {
    "id": "k1",
    "first_name": "Zoë, the 2nd",
    "last_name": "Mü;ller\\",
    "display_name": 'Zoë "Z" Mü;ller, jr.',
    "email": "zoe@example.org",
    "phone": "+49 30 1234",
    "street_address": "12 Rue de la Paix\nBâtiment B, 3e; porte 4",
    "city": "上海",
    "postal_code": "200000",
    "region": "Shanghai",
    "country": "CN",
    "latitude": 31.2304,
    "longitude": 121.4737,
    "organization": "Friends of the Earth, local group; Berlin",
    "birth_date": "1970-01-31",
    "groups": ["Berlin, chapter", "Climate & Energy"],
    "consent": {"local_organizing": {"granted": True}, "contact_me": {"granted": False}},
}


@pytest.mark.parametrize("version", ["3.0", "4.0"])
def test_awkward_record_round_trips(version: str) -> None:
    fmt = CardFormat(version=version)
    text = render_card(AWKWARD, fmt, uid="k1", fields=MAPPED_FIELDS)
    parsed = parse_card(text, fmt, card_id="k1")
    assert parsed.uid == "k1"
    assert parsed.ours
    assert comparable(parsed.record, MAPPED_FIELDS) == comparable(AWKWARD, MAPPED_FIELDS)
    assert f"VERSION:{version}" in text


@pytest.mark.parametrize("version", ["3.0", "4.0"])
def test_sample_records_round_trip(version: str) -> None:
    fmt = CardFormat(version=version)
    for record in sample_records(24):
        text = render_card(record, fmt, uid=record["id"], fields=MAPPED_FIELDS)
        back = parse_card(text, fmt, card_id=record["id"]).record
        assert same_content(record, back, MAPPED_FIELDS), record["id"]


def test_long_lines_are_folded_without_splitting_characters() -> None:
    record = {**AWKWARD, "organization": "Ünïcödé " * 40}
    text = render_card(record, CardFormat(), uid="k1", fields=MAPPED_FIELDS)
    lines = text.split("\r\n")
    assert all(len(line.encode()) <= 75 for line in lines)
    assert any(line.startswith(" ") for line in lines)
    back = parse_card(text, CardFormat(), card_id="k1").record
    assert back["organization"] == record["organization"].strip()


def test_text_is_escaped() -> None:
    text = render_card(AWKWARD, CardFormat(), uid="k1", fields=MAPPED_FIELDS)
    assert "ORG:Friends of the Earth\\, local group\\; Berlin" in text
    assert "Bâtiment B\\, 3e\\; porte 4" in text
    assert "\\n" in text


FOREIGN_40 = (
    "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:urn:uuid:1\r\nKIND:individual\r\n"
    "FN:Ana Lima\r\nN:Lima;Ana;;;\r\nEMAIL;TYPE=work:work@example.org\r\n"
    "EMAIL;PREF=1:ana@example.org\r\nBDAY:19800229\r\nGEO:geo:-23.55,-46.63\r\n"
    "CATEGORIES:ok-local,Volunteers\r\nEND:VCARD\r\n"
)
FOREIGN_30 = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nPRODID:-//Sabre//Sabre VObject 4.5//EN\r\nUID:2\r\n"
    "FN:Ana Lima\r\nN:Lima;Ana;;;\r\nEMAIL;TYPE=INTERNET,PREF:ana@example.org\r\n"
    "TEL;TYPE=CELL:+55 11 5555\r\nADR;TYPE=HOME:;;Rua A\\, 1;São Paulo;SP;01310;BR\r\n"
    "GEO:-23.55;-46.63\r\nORG:Greenpeace;Local\r\nEND:VCARD\r\n"
)


def test_reads_a_foreign_40_card() -> None:
    fmt = CardFormat(consent_categories={"local_organizing": "ok-local"})
    parsed = parse_card(FOREIGN_40, fmt, card_id="x")
    assert not parsed.ours
    rec = parsed.record
    assert rec["email"] == "ana@example.org"
    assert rec["birth_date"] == "1980-02-29"
    assert (rec["latitude"], rec["longitude"]) == (-23.55, -46.63)
    assert rec["groups"] == ["Volunteers"]
    assert rec["consent"]["local_organizing"]["granted"] is True


def test_reads_a_nextcloud_style_30_card() -> None:
    rec = parse_card(FOREIGN_30, CardFormat(), card_id="x").record
    assert rec["street_address"] == "Rua A, 1"
    assert rec["city"] == "São Paulo"
    assert rec["organization"] == "Greenpeace"
    assert rec["phone"] == "+55 11 5555"
    assert (rec["latitude"], rec["longitude"]) == (-23.55, -46.63)


def test_consent_categories_are_written_as_categories() -> None:
    fmt = CardFormat(consent_categories={"local_organizing": "ok-local"})
    text = render_card(AWKWARD, fmt, uid="k1", fields=MAPPED_FIELDS)
    assert "ok-local" in text
    assert "X-COMMONS-CONSENT:contact_me=no" in text
    back = parse_card(text, fmt, card_id="k1").record
    assert back["groups"] == AWKWARD["groups"]
    assert back["consent"]["local_organizing"]["granted"] is True


def test_available_fields_report_the_mapping_unverified() -> None:
    """vCard properties are optional per card: the schema check gets the mapping only."""
    book = "http://127.0.0.1:1/remote.php/dav/addressbooks/users/u/b/"
    found = NextcloudAdapter(NextcloudSettings(address_book_url=book)).available_fields()
    assert not found.verified
    assert {"id", "phone", "city", "consent"} <= found.provided
    settings = NextcloudSettings(
        address_book_url=book, consent_property=None, consent_categories={"local": "ok-local"}
    )
    found = NextcloudAdapter(settings, mapping={"phone": None}).available_fields()
    assert "consent" not in found.provided
    assert "phone" not in found.provided
    assert "consent.local" in found.provided


@pytest.mark.parametrize(
    "text",
    [
        "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Zq-hidden\r\n",
        "BEGIN:VCALENDAR\r\nX-ZQ-HIDDEN:Zq-hidden\r\nEND:VCALENDAR\r\n",
    ],
    ids=["unterminated", "not-a-vcard"],
)
def test_an_unreadable_card_is_reported_without_its_content(text: str) -> None:
    with pytest.raises(CardInvalid) as info:
        parse_card(text, CardFormat(), card_id="k1")
    assert "not a" in str(info.value)
    assert "hidden" not in str(info.value).lower()


def test_a_skipped_line_is_not_logged_verbatim(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    text = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Ada\r\nNOTE;Zq-hidden\r\nEND:VCARD\r\n"
    assert parse_card(text, CardFormat(), card_id="k1").record["display_name"] == "Ada"
    assert "Zq-hidden" not in caplog.text
