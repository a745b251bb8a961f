"""`connector doctor` on CiviCRM: the permissions a job needs, and the contacts the key sees.

Seen on a real CiviCRM 6.17.2: losing `view all contacts` made doctor green and the next
reconcile delete all 178 shared records; without `delete contacts` trashing is a 403; without
`access all custom data` custom-field consent is silently absent. `Permission.get` lists the
permissions that exist, not the caller's, so doctor asks `Contact.checkAccess` and counts.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import Result
from connector_civicrm.testing import ALL_PERMISSIONS, FakeCiviCRM

from tests.integration.test_cli import run

NETWORK = """\
version: 1
network: {name: CiviCRM doctor}
consent:
  purposes:
    partners: {description: Partners may contact me}
connections:
  crm:
    adapter: civicrm
    settings:
      url: %(url)s
      api_key: {env: DOCTOR_CIVI_KEY}
      consent:
        partners: {field: GDPR.share_with_partners, granted_when: true}
  sheet:
    adapter: csv
    settings: {path: sheet.csv}
    mapping: {consent.partners: partners}
jobs:
  to_sheet: {source: crm, target: sheet, policy: partners.yaml}
  to_crm: {source: sheet, target: crm, policy: partners.yaml}
"""
POLICY = """\
policy: partners
require_consent: [partners]
rules:
  - allow: everyone
fields:
  first_name: show
"""


def doctor(tmp_path: Path, fake: FakeCiviCRM, key: str) -> Result:
    (tmp_path / "connector.yaml").write_text(NETWORK % {"url": fake.base_url})
    (tmp_path / "partners.yaml").write_text(POLICY)
    (tmp_path / "sheet.csv").write_text("id,first_name,partners\nS1,Ana,yes\n")
    from click.testing import CliRunner

    return run(CliRunner(), "doctor", cwd=tmp_path, env={"DOCTOR_CIVI_KEY": key})


def site(**people: bool) -> FakeCiviCRM:
    fake = FakeCiviCRM(
        api_key="admin-key-of-the-test", custom_fields={"GDPR.share_with_partners": "Boolean"}
    )
    fake.start()
    for name, shares in people.items():
        fake.add_contact(
            contact_type="Individual", first_name=name, **{"GDPR.share_with_partners": shares}
        )
    return fake


def test_doctor_with_every_permission_shows_the_visible_contacts(tmp_path: Path) -> None:
    with site(Ana=True, Bo=False) as fake:
        fake.add_api_key("full-permissions-key", permissions=ALL_PERMISSIONS)
        result = doctor(tmp_path, fake, "full-permissions-key")
    assert result.exit_code == 0, result.output
    assert "connection crm: civicrm: reachable; 2 contact(s) visible" in result.stdout
    assert "job to_crm" in result.stdout


def test_doctor_names_view_all_contacts(tmp_path: Path) -> None:
    with site(Ana=True) as fake:
        fake.add_api_key("blind-reader-api-key", permissions=ALL_PERMISSIONS - {"view all contacts",
                                                                 "edit all contacts"})  # fmt: skip
        result = doctor(tmp_path, fake, "blind-reader-api-key")
    assert result.exit_code != 0
    assert "sees no contacts" in result.output
    assert "'view all contacts'" in result.output


def test_doctor_names_delete_contacts_for_a_target_that_trashes(tmp_path: Path) -> None:
    with site(Ana=True) as fake:
        fake.add_api_key("no-delete-api-key", permissions=ALL_PERMISSIONS - {"delete contacts"})
        result = doctor(tmp_path, fake, "no-delete-api-key")
    assert result.exit_code != 0
    [line] = [line for line in result.output.splitlines() if "'delete contacts'" in line]
    assert "job to_crm" in line
    assert "job to_sheet" not in result.output.split("'delete contacts'")[0].splitlines()[-1]


def test_doctor_names_access_all_custom_data_for_custom_field_consent(tmp_path: Path) -> None:
    with site(Ana=True) as fake:
        fake.add_api_key(
            "no-custom-data-api-key", permissions=ALL_PERMISSIONS - {"access all custom data"}
        )
        result = doctor(tmp_path, fake, "no-custom-data-api-key")
    assert result.exit_code != 0
    assert "'access all custom data'" in result.output
    assert "connection crm" in result.output


def test_verbose_shows_the_adapter_s_log_lines(tmp_path: Path) -> None:
    """`-v` showed none of the CiviCRM adapter's log lines."""
    with site(Ana=True) as fake:
        (tmp_path / "connector.yaml").write_text(NETWORK % {"url": fake.base_url})
        (tmp_path / "partners.yaml").write_text(POLICY)
        (tmp_path / "sheet.csv").write_text("id,first_name,partners\nS1,Ana,yes\n")
        from click.testing import CliRunner

        result = run(
            CliRunner(),
            "-v",
            "doctor",
            cwd=tmp_path,
            env={"DOCTOR_CIVI_KEY": "admin-key-of-the-test"},
        )
    assert "multi-call -> HTTP 200" in result.stderr
