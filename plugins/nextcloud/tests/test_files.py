"""The nextcloud_files adapter against a REAL WebDAV server (WsgiDAV on cheroot, loopback)."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from connector_nextcloud.files import TEMP_SUFFIX, FilesSettings, NextcloudFilesAdapter
from connector_nextcloud.testing.ocs_fake import OcsFake
from connector_nextcloud.testing.webdav_server import WebDavServer

from connector_core.adapters import Change
from connector_core.credentials import SecretRef, StaticSecrets
from connector_core.errors import AdapterError, AdapterUnavailable, AuthenticationFailed
from connector_core.records import Expected
from connector_core.testing import sample_records

USER, PASSWORD = "alice", "app-password-1234"
SECRETS = StaticSecrets({"app_password": PASSWORD})


@pytest.fixture
def dav(tmp_path: Path) -> Iterator[WebDavServer]:
    with WebDavServer(tmp_path / "dav", user=USER, password=PASSWORD) as server:
        yield server


def make(server: WebDavServer, folder: str = "exports", **extra: Any) -> NextcloudFilesAdapter:
    settings = FilesSettings(
        webdav_url=server.url + folder + "/",
        user=USER,
        app_password=SecretRef(secret="app_password"),
        page_size=10,
        **extra,
    )
    return NextcloudFilesAdapter(settings, SECRETS, connection="export")


@pytest.fixture
def files(dav: WebDavServer) -> Iterator[NextcloudFilesAdapter]:
    (dav.root / "exports").mkdir()
    adapter = make(dav)
    yield adapter
    adapter.close()


def upsert(records: list[dict[str, Any]]) -> list[Change]:
    return [Change.upsert(r["id"], r) for r in records]


def read_all(adapter: NextcloudFilesAdapter) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for page in adapter.read() for r in page.records}


def final(dav: WebDavServer, folder: str = "exports") -> Path:
    return dav.root / folder / "contacts.csv"


def leftovers(dav: WebDavServer, folder: str = "exports") -> list[str]:
    names = (p.name for p in (dav.root / folder).iterdir())
    return sorted(n for n in names if n.startswith(".contacts.csv."))


# -- writing through a temporary file -----------------------------------------------------------


def test_upload_goes_to_a_temporary_name_then_moves(
    files: NextcloudFilesAdapter, dav: WebDavServer
) -> None:
    results = list(files.write(upsert(sample_records(5))))
    assert [r.action for r in results] == ["created"] * 5
    puts = dav.requests_made("PUT")
    assert puts, "the adapter uploaded nothing"
    assert all(p.path != "/exports/contacts.csv" for p in puts), "PUT the final name directly"
    assert all(
        p.path.startswith("/exports/.contacts.csv.") and p.path.endswith(TEMP_SUFFIX) for p in puts
    )
    [move] = dav.requests_made("MOVE")
    assert move.path == puts[0].path
    assert move.headers["Destination"].endswith("/exports/contacts.csv")
    assert move.headers["Overwrite"] == "F"  # the file did not exist yet
    assert leftovers(dav) == []
    assert set(read_all(files)) == {f"sample-{i:04d}" for i in range(5)}

    files.write(upsert([{**sample_records(1)[0], "city": "Leipzig"}]))
    second = dav.requests_made("MOVE")[-1]
    assert second.headers["Overwrite"] == "T"
    assert second.headers["If"].startswith("</exports/contacts.csv> ([")  # tagged: the target


def test_upsert_update_unchanged_and_delete(
    files: NextcloudFilesAdapter, dav: WebDavServer
) -> None:
    samples = sample_records(3)
    list(files.write(upsert(samples)))
    changed = {**samples[1], "email": "new@example.net", "phone": None}
    results = list(
        files.write(
            [
                Change.upsert(samples[0]["id"], samples[0]),
                Change.upsert(changed["id"], changed),
                Change.delete(samples[2]["id"]),
                Change.delete("never-there"),
            ]
        )
    )
    assert [r.action for r in results] == ["unchanged", "updated", "deleted", "unchanged"]
    got = read_all(files)
    assert set(got) == {samples[0]["id"], samples[1]["id"]}
    assert got[samples[1]["id"]]["email"] == "new@example.net"
    assert got[samples[1]["id"]]["phone"] is None

    puts = len(dav.requests_made("PUT"))
    results = list(files.write(upsert(samples[:2])[:1]))
    assert [r.action for r in results] == ["unchanged"]
    assert len(dav.requests_made("PUT")) == puts, "an unchanged write must not upload"


def test_rows_other_people_added_are_kept(files: NextcloudFilesAdapter, dav: WebDavServer) -> None:
    list(files.write(upsert(sample_records(2))))
    path = final(dav)
    text = path.read_text(encoding="utf-8-sig")
    header = text.splitlines()[0]
    path.write_text(text + "manual-1" + "," * header.count(",") + "\r\n", encoding="utf-8")
    list(files.write([Change.delete("sample-0000")]))
    assert set(read_all(files)) == {"sample-0001", "manual-1"}


def test_disguised_formulas_and_control_characters_do_not_reach_the_file(
    files: NextcloudFilesAdapter, dav: WebDavServer
) -> None:
    evil = {
        "id": "evil",
        "display_name": "\uff1dHYPERLINK(1)",  # FULLWIDTH EQUALS SIGN
        "first_name": "\u00a0=1+1",  # NO-BREAK SPACE
        "last_name": "\n@cmd",
        "organization": "\x00=1+1",
        "city": "Le\x1beds",
    }
    list(files.write(upsert([evil])))
    text = final(dav).read_bytes().decode("utf-8-sig")
    for cell in ("'\uff1dHYPERLINK(1)", "'\u00a0=1+1", "'\n@cmd", "'=1+1", "Leeds"):
        assert cell in text
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", text)


def test_formula_cells_are_neutralised_in_the_uploaded_bytes(
    files: NextcloudFilesAdapter, dav: WebDavServer
) -> None:
    evil = {
        "id": "evil",
        "display_name": '=HYPERLINK("http://x.example","click")',
        "first_name": "+SUM(1)",
        "last_name": "-2+3",
        "organization": "@cmd",
        "city": "\tTab",
        "region": "\rCR",
        "street_address": "'=already quoted",
        "latitude": -23.5505,
        "phone": "+1 555 0100",
    }
    list(files.write(upsert([evil])))
    text = final(dav).read_bytes().decode("utf-8-sig")
    assert "'=HYPERLINK" in text
    assert "'+SUM(1)" in text
    assert "'-2+3" in text
    assert "'@cmd" in text
    assert "'\tTab" in text
    assert "'\rCR" in text
    assert "''=already quoted" in text
    assert "'+1 555 0100" in text
    assert ",-23.5505," in text or text.rstrip().endswith("-23.5505"), "numbers stay numbers"
    back = read_all(files)["evil"]
    assert {k: back.get(k) for k in evil} == evil


def test_folder_and_parents_are_created(dav: WebDavServer) -> None:
    adapter = make(dav, folder="a/b%20c/d")
    list(adapter.write(upsert(sample_records(1))))
    assert (dav.root / "a" / "b c" / "d" / "contacts.csv").is_file()
    mkcols = [r.path for r in dav.requests_made("MKCOL")]
    assert mkcols[-3:] == ["/a/", "/a/b c/", "/a/b c/d/"]


def test_nextcloud_url_layout(dav: WebDavServer) -> None:
    """url + user + folder give /remote.php/dav/files/USER/FOLDER/, as on Nextcloud."""
    (dav.root / "remote.php" / "dav" / "files" / USER).mkdir(parents=True)
    settings = FilesSettings(
        url=dav.url.rstrip("/"),
        user=USER,
        app_password=SecretRef(secret="app_password"),
        folder="Shared/Organizers North",
        file_name="north.csv",
    )
    with NextcloudFilesAdapter(settings, SECRETS) as adapter:
        adapter.check()
        list(adapter.write(upsert(sample_records(2))))
        assert len(read_all(adapter)) == 2
    target = dav.root / "remote.php/dav/files" / USER / "Shared" / "Organizers North"
    assert (target / "north.csv").is_file()
    assert settings.share_path() == "/Shared/Organizers North"


def test_missing_file_reads_as_empty(files: NextcloudFilesAdapter) -> None:
    pages = list(files.read())
    assert [len(p.records) for p in pages] == [0]
    assert pages[0].snapshot


def test_refuses_to_overwrite_a_file_without_an_id_column(
    files: NextcloudFilesAdapter, dav: WebDavServer
) -> None:
    final(dav).write_text("name,notes\nBob,keep me\n", encoding="utf-8")
    with pytest.raises(AdapterError, match="'id' column"):
        list(files.write(upsert(sample_records(1))))
    assert final(dav).read_text(encoding="utf-8") == "name,notes\nBob,keep me\n"


# -- readers never see half a file --------------------------------------------------------------


def test_a_reader_polling_during_a_slow_upload_only_sees_complete_files(tmp_path: Path) -> None:
    with WebDavServer(tmp_path / "dav", user=USER, password=PASSWORD, slow_put=0.01) as server:
        (server.root / "exports").mkdir()
        adapter = make(server)
        records = sample_records(1000)
        list(adapter.write(upsert(records[:10])))
        first = final(server).read_bytes()
        seen: list[tuple[int, bytes]] = []
        stop = threading.Event()

        def poll() -> None:
            with requests.Session() as reader:
                reader.auth = (USER, PASSWORD)
                while not stop.is_set():
                    response = reader.get(server.url + "exports/contacts.csv", timeout=10)
                    seen.append((response.status_code, response.content))

        thread = threading.Thread(target=poll)
        thread.start()
        try:
            bigger = [{**r, "city": f"{r['city']} {'x' * 200}"} for r in records]
            list(adapter.write(upsert(bigger)))
        finally:
            stop.set()
            thread.join()
        second = final(server).read_bytes()
        adapter.close()
        put = server.requests_made("PUT")[-1]
        polls_during_put = [r for r in server.requests_made("GET") if r.started > put.started]
    assert len(second) > 200_000
    assert len(polls_during_put) > 10, "the reader did not poll while the upload ran"
    bodies = [body for status, body in seen if status == 200]
    assert bodies, "the reader never got the file"
    assert all(body in (first, second) for body in bodies), "a reader saw a partial file"
    # WsgiDAV deletes the target before renaming over it, so a reader may find no file for
    # an instant: a 404, or a 500 when the GET's open() loses the race with that delete
    # (ENOENT). Never a half-written body, and no answer but a 200 carries the file's data.
    assert {status for status, _ in seen} <= {200, 404, 500}
    header = first.split(b"\n", 1)[0]
    assert not any(header in body for status, body in seen if status != 200)


# -- conflicts and failures ---------------------------------------------------------------------


def _edit_when(
    adapter: NextcloudFilesAdapter, dav: WebDavServer, method: str, times: int
) -> list[int]:
    """After the adapter's next `times` requests of `method`, add a row to the file on disk."""
    session = adapter._http()
    original = session.request
    edits: list[int] = []

    def request(verb: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        response = original(verb, url, *args, **kwargs)
        if verb == method and len(edits) < times:
            edits.append(1)
            path = final(dav)
            text = path.read_text(encoding="utf-8-sig")
            columns = text.splitlines()[0].count(",")
            tmp = path.with_name(f"edit-{len(edits)}.tmp")
            tmp.write_text(text + f"human-{len(edits)}" + "," * columns + "\r\n", "utf-8")
            os.replace(tmp, path)  # a new inode: a new ETag
        return response

    session.request = request  # type: ignore[method-assign,assignment]
    return edits


def test_an_edit_between_download_and_move_is_kept_and_retried(
    files: NextcloudFilesAdapter, dav: WebDavServer
) -> None:
    list(files.write(upsert(sample_records(2))))
    edits = _edit_when(files, dav, "PUT", times=1)
    changed = {**sample_records(1)[0], "email": "after-conflict@example.net"}
    results = list(files.write(upsert([changed])))
    assert edits == [1]
    assert [r.action for r in results] == ["updated"]
    got = read_all(files)
    assert set(got) == {"sample-0000", "sample-0001", "human-1"}, "the other edit was lost"
    assert got["sample-0000"]["email"] == "after-conflict@example.net"
    statuses = [r.method for r in dav.requests_made()]
    assert statuses.count("MOVE") == 3  # first write, the refused MOVE, the retry
    assert leftovers(dav) == []


def test_repeated_conflicts_fail_retriably_and_clean_up(
    files: NextcloudFilesAdapter, dav: WebDavServer
) -> None:
    list(files.write(upsert(sample_records(2))))
    _edit_when(files, dav, "PUT", times=5)
    with pytest.raises(AdapterUnavailable, match="kept changing"):
        list(files.write([Change.delete("sample-0000")]))
    assert leftovers(dav) == []
    assert {"sample-0000", "human-1", "human-2"} <= set(read_all(files))


def test_a_failed_move_deletes_the_temporary_file(
    files: NextcloudFilesAdapter, dav: WebDavServer
) -> None:
    session = files._http()
    original = session.request

    def request(verb: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        if verb == "MOVE":
            raise requests.ConnectionError("connection reset")
        return original(verb, url, *args, **kwargs)

    session.request = request  # type: ignore[method-assign,assignment]
    with pytest.raises(AdapterUnavailable):
        list(files.write(upsert(sample_records(3))))
    assert [r.method for r in dav.requests_made()][-1] == "DELETE"
    assert leftovers(dav) == []
    assert not final(dav).exists()


def test_wrong_app_password_is_not_retried_and_hints(dav: WebDavServer) -> None:
    (dav.root / "exports").mkdir()
    settings = FilesSettings(
        webdav_url=dav.url + "exports/",
        user=USER,
        app_password=SecretRef(secret="app_password"),
    )
    adapter = NextcloudFilesAdapter(settings, StaticSecrets({"app_password": "wrong-one"}))
    with pytest.raises(AuthenticationFailed) as caught:
        list(adapter.write(upsert(sample_records(1))))
    assert "app password" in (caught.value.hint or "")
    assert "401" in str(caught.value)
    assert len(dav.requests_made()) == 1, "a 401 must not be retried"
    with pytest.raises(AuthenticationFailed):
        adapter.check()


def test_settings_need_one_location() -> None:
    with pytest.raises(ValueError, match="either url"):
        FilesSettings()
    with pytest.raises(ValueError, match="needs user"):
        FilesSettings(url="https://cloud.example.org")
    with pytest.raises(ValueError, match="OCS"):
        FilesSettings(webdav_url="https://dav.example.org/x/", share_with_group="north")
    with pytest.raises(ValueError, match="plain"):
        FilesSettings(webdav_url="https://dav.example.org/x/", file_name="../x.csv")
    ok = FilesSettings(url="https://cloud.example.org/", user="a b", folder="/Shared/N o/")
    assert ok.folder_url() == "https://cloud.example.org/remote.php/dav/files/a%20b/Shared/N%20o/"


def test_timing_is_reasonable(files: NextcloudFilesAdapter, dav: WebDavServer) -> None:
    """A write of 500 records is a handful of requests, not one per record."""
    started = time.monotonic()
    list(files.write(upsert(sample_records(500))))
    assert len(dav.requests_made()) <= 4  # GET, MKCOL, PUT, MOVE
    assert time.monotonic() - started < 10


@pytest.fixture
def ocs(dav: WebDavServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[OcsFake]:
    """The OCS fake (group ``north`` exists; the folder below is known to it), with the files
    adapter's OCS client pointed at it."""
    import connector_nextcloud.files as files_module
    from connector_nextcloud.ocs import OcsClient

    (dav.root / "remote.php" / "dav" / "files" / USER).mkdir(parents=True)
    with OcsFake({USER: PASSWORD}, groups={"north"}, paths={USER: [SHARED]}) as fake:

        def to_fake(base_url: str, *args: Any, **kwargs: Any) -> OcsClient:
            return OcsClient(fake.url, *args, **kwargs)

        monkeypatch.setattr(files_module, "OcsClient", to_fake)
        yield fake


SHARED = "/Shared/Organizers North"


def _shared_settings(dav: WebDavServer, group: str) -> FilesSettings:
    return FilesSettings(
        url=dav.url,
        user=USER,
        app_password=SecretRef(secret="app_password"),
        folder=SHARED,
        share_with_group=group,
    )


def test_a_share_that_fails_comes_before_any_upload(dav: WebDavServer, ocs: OcsFake) -> None:
    """The folder is shared (and the share confirmed) before the file is written: a share
    that fails leaves no file, so no data sits at the target without a ledger row."""
    adapter = NextcloudFilesAdapter(_shared_settings(dav, "nobody"), SECRETS)
    with adapter, pytest.raises(AdapterError, match="valid group"):
        list(adapter.write(upsert(sample_records(2))))
    folder = dav.root / "remote.php" / "dav" / "files" / USER / "Shared" / "Organizers North"
    assert not (folder / "contacts.csv").exists()
    assert ocs.shares == []
    assert [r.method for r in dav.requests_made()] == ["GET", "MKCOL", "MKCOL", "MKCOL"]


def test_the_folder_is_shared_with_the_group_once(dav: WebDavServer, ocs: OcsFake) -> None:
    """Before the first upload the folder is shared through OCS (served here by the fake)."""
    settings = _shared_settings(dav, "north")
    with NextcloudFilesAdapter(settings, SECRETS) as adapter:
        list(adapter.write(upsert(sample_records(2))))
        list(adapter.write([Change.delete("sample-0000")]))
    with NextcloudFilesAdapter(settings, SECRETS) as adapter:
        list(adapter.write([Change.delete("sample-0001")]))
    assert [(s["path"], s["share_with"], s["permissions"]) for s in ocs.shares] == [
        (SHARED, "north", 1)
    ]
    assert len(ocs.requests_to("POST")) == 1
    assert len(ocs.requests_to("GET")) == 2  # one listing per adapter instance


def test_a_malformed_cell_is_a_problem_naming_its_column_not_its_value(
    files: NextcloudFilesAdapter, dav: WebDavServer
) -> None:
    final(dav).write_text(
        "id,first_name,do_not_phone,birth_date\n"
        "1,Ada,no,1990-01-01\n2,Bob,Zq-hidden,1990-01-01\n3,Cy,no,Zq-other\n1,Dup,no,\n",
        encoding="utf-8",
    )
    pages = list(files.read())
    assert [r["id"] for p in pages for r in p.records] == ["1"]
    problems = [q for p in pages for q in p.problems]
    assert [(q.key, q.field, q.expected) for q in problems] == [
        ("2", "do_not_phone", Expected.YES_NO),
        ("3", "birth_date", Expected.DATE),
        ("1", "id", Expected.UNIQUE_KEY),
    ]
    assert not any("Zq-" in str(q) or "Dup" in str(q) for q in problems)


# -- a run's writes: one download, one upload -------------------------------------------------


def test_a_run_downloads_once_and_uploads_once(
    files: NextcloudFilesAdapter, dav: WebDavServer
) -> None:
    samples = sample_records(9)
    list(files.write(upsert(samples[:2])))  # the file exists, with rows to update and delete
    before = len(dav.requests_made())
    batches = [
        upsert(samples[2:5]),
        [Change.upsert(samples[0]["id"], {**samples[0], "email": "new@example.net"})],
        [Change.delete(samples[1]["id"]), Change.delete("never-there"), *upsert(samples[5:9])],
    ]
    with files.open_writes() as session:
        answered = [[r.action for r in session.write(batch)] for batch in batches]
        assert len(dav.requests_made()) == before + 1  # the GET; nothing uploaded yet
        assert set(read_all(files)) == {samples[0]["id"], samples[1]["id"]}
        mark = len(dav.requests_made())  # the test's own read above is not the run's
        session.commit()
    assert answered == [
        ["created"] * 3,
        ["updated"],
        ["deleted", "unchanged", *["created"] * 4],
    ]
    made = [r.method for r in dav.requests_made()[before : before + 1] + dav.requests_made()[mark:]]
    assert (made.count("GET"), made.count("PUT"), made.count("MOVE")) == (1, 1, 1)
    got = read_all(files)
    assert set(got) == {r["id"] for r in samples} - {samples[1]["id"]}
    assert got[samples[0]["id"]]["email"] == "new@example.net"
    assert leftovers(dav) == []


def test_a_run_writes_the_bytes_a_write_per_batch_wrote(dav: WebDavServer) -> None:
    samples = sample_records(6)
    batches = [upsert(samples[:2]), [Change.delete("x")], upsert(samples[2:])]
    per_batch, session_side = make(dav, "a"), make(dav, "b")
    for batch in batches:
        list(per_batch.write(batch))
    with session_side.open_writes() as session:
        for batch in batches:
            list(session.write(batch))
        session.commit()
    assert final(dav, "b").read_bytes() == final(dav, "a").read_bytes()


def test_an_edit_during_a_run_fails_its_commit_and_is_kept(
    files: NextcloudFilesAdapter, dav: WebDavServer
) -> None:
    list(files.write(upsert(sample_records(2))))
    _edit_when(files, dav, "PUT", times=1)
    with files.open_writes() as session:
        list(session.write([Change.delete("sample-0000")]))
        with pytest.raises(AdapterUnavailable, match="changed while this run wrote it"):
            session.commit()
    assert {"sample-0000", "human-1"} <= set(read_all(files))
    assert leftovers(dav) == []
