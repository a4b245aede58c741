"""`lungsound data download` against a local HTTP server: transfer, resume, checksums, safe extraction, side files."""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import stat
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lungsound.data import download
from lungsound.data.archive import ExtractLimits, safe_extract
from lungsound.data.database import open_database
from lungsound.data.download import DownloadConfig, RemoteFile, download_file, fetch_icbhi
from lungsound.errors import LungsoundError

pytestmark = pytest.mark.timeout(60)

FAST = DownloadConfig(timeout=5.0, retries=2, backoff=0.0, progress=False)
# The archive names 101_1b1_Al_sc "_AKGC417L" where the split file says "_Meditron", as the challenge download does.
RECORDINGS = {
    "101_1b1_Al_sc_AKGC417L": "0.1\t1.2\t0\t0\n1.2\t2.0\t1\t0\n",
    "103_2b2_Ar_mc_LittC2SE": "0.2\t1.5\t0\t1\n",
    "104_1b1_Ll_sc_Litt3200": "0.05\t1.0\t1\t1\n",
}
SIDE = {
    "ICBHI_challenge_train_test.txt": b"101_1b1_Al_sc_Meditron\ttrain\r\n103_2b2_Ar_mc_LittC2SE\ttest\r\n"
                                      b"104_1b1_Ll_sc_Litt3200\ttest\r\n105_1b1_Tc_sc_Meditron\ttrain\r\n",
    "patient_list_foldwise.txt": b"101 0\n103 1\n104 2\n105 3\n",
    "ICBHI_Challenge_diagnosis.txt": b"101\tURTI\n103\tAsthma\n104\tCOPD\n105\tHealthy\n",
    "ICBHI_Challenge_demographic_information.txt": b"101\t3\tF\tNA\t19\t99\n103\t70\tF\t33\tNA\tNA\n",
    "metadata.txt": b"101\t3.0\tF\tNA\t19.0\t99.0\tPr\n103\t70.0\tF\t33.0\tNA\tNA\tAr\n",
    "official_split.txt": b"101_1b1_Al_sc_Meditron\ttrain\n103_2b2_Ar_mc_LittC2SE\ttest\n104_1b1_Ll_sc_Litt3200\ttest",
}
SERVED_SUBSET = ("ICBHI_challenge_train_test.txt", "patient_list_foldwise.txt", "ICBHI_Challenge_diagnosis.txt")


@dataclass
class Server:
    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    ignore_range: bool = False
    drop_once: set[str] = field(default_factory=set)  # paths whose next answer stops halfway


def _handler(state: Server):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            rng = self.headers.get("Range")
            state.requests.append((self.path, rng))
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            start = 0
            if rng and not state.ignore_range:
                start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            payload = body[start:]
            if self.path in state.drop_once:
                state.drop_once.discard(self.path)
                payload = payload[: len(payload) // 2]
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture(autouse=True)
def no_proxy_for_loopback(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def server():
    state = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture(autouse=True)
def no_packaged_meta(tmp_path_factory, monkeypatch):
    """Tests see an empty vendored-side-file folder, whatever a maintainer later puts in the real one."""
    monkeypatch.setattr(download, "PACKAGED_META", tmp_path_factory.mktemp("no_packaged_meta"))


def _source_files(tmp_path: Path) -> dict[str, bytes]:
    """The recordings' files (tiny 4 kHz wavs and their annotations), by file name."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    out = {}
    for i, (stem, cycles) in enumerate(RECORDINGS.items()):
        noise = 0.1 * np.random.default_rng(i).standard_normal(2400)
        sf.write(src / f"{stem}.wav", noise.astype(np.float32), 4000, subtype="PCM_16")
        out[f"{stem}.wav"] = (src / f"{stem}.wav").read_bytes()
        out[f"{stem}.txt"] = cycles.encode()
    return out


def _zip_bytes(files: dict[str, bytes], top: str = "ICBHI_final_database/") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo(top), b"")  # the folder entry, as zip tools write it
        for name, data in files.items():
            zf.writestr(top + name, data)
    return buf.getvalue()


def _serve_database(server: Server, tmp_path: Path, side: tuple[str, ...] = SERVED_SUBSET) -> tuple[dict, bytes]:
    files = _source_files(tmp_path)
    archive = _zip_bytes(files)
    server.files["/ICBHI_final_database.zip"] = archive
    for name in side:
        server.files[f"/meta/{name}"] = SIDE[name]
    return files, archive


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    download.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_full_download_extracts_and_places_side_files(server, tmp_path, capsys):
    files, archive = _serve_database(server, tmp_path)
    dest = tmp_path / "data"
    args = _cli("--dest", str(dest), "--url", f"{server.base}/ICBHI_final_database.zip", "--meta-url",
                f"{server.base}/meta", "--timeout", "5", "--retries", "1")
    assert download.run(args) == 0
    out, err = capsys.readouterr()
    folder = dest / "ICBHI_final_database"
    for name, data in files.items():  # byte-identical and not renamed
        assert (folder / name).read_bytes() == data
    for name in SERVED_SUBSET:
        assert (folder / name).read_bytes() == SIDE[name]
    missing = sorted(set(SIDE) - set(SERVED_SUBSET))
    for name in missing:
        assert not (folder / name).exists()
        official = next(r.url for r in download.SIDE_FILES if r.name == name)
        assert f"missing {name}" in out and official in out and "404" in out
    assert f"{folder}: 3 recordings, 3 annotation files, side files 3/6 present (missing: " in out
    assert f"lungsound data stats --root {folder}" in out
    digest = hashlib.sha256(archive).hexdigest()
    assert (dest / "ICBHI_final_database.zip").read_bytes() == archive
    assert (dest / "ICBHI_final_database.zip.sha256").read_text() == f"{digest}  ICBHI_final_database.zip\n"
    assert digest in err
    assert sorted(p.name for p in dest.iterdir()) == ["ICBHI_final_database", "ICBHI_final_database.zip",
                                                      "ICBHI_final_database.zip.sha256"]
    naming = (folder / "NAMING.txt").read_text()
    assert ("### named differently (1): file name<TAB>split-file name\n"
            "101_1b1_Al_sc_AKGC417L\t101_1b1_Al_sc_Meditron\n") in naming
    assert "### split entries without a recording (1)\n105_1b1_Tc_sc_Meditron\n" in naming
    assert "1 recordings are named differently" in out
    db = open_database(folder)  # the loader reads the result as placed
    rec = db.find("101_1b1_Al_sc_Meditron")
    assert (rec.split, rec.device, rec.audio) == ("train", "Meditron", folder / "101_1b1_Al_sc_AKGC417L.wav")
    assert sorted(r.split for r in db.recordings) == ["test", "test", "train"]
    assert db.diagnoses[103] == "Asthma"


def test_checksum_mismatch_is_refused_and_nothing_kept(server, tmp_path):
    _, archive = _serve_database(server, tmp_path)
    dest = tmp_path / "data"
    url = f"{server.base}/ICBHI_final_database.zip"
    with pytest.raises(LungsoundError, match="SHA-256 mismatch: expected 0{64}, got") as exc:
        fetch_icbhi(dest, url=url, sha256="0" * 64, meta_url=f"{server.base}/meta", config=FAST)
    assert url in str(exc.value)
    assert not (dest / "ICBHI_final_database.zip").exists()
    assert not (dest / "ICBHI_final_database").exists()
    assert not list(dest.rglob("*.part"))
    # the right checksum passes, so the refusal above came from the comparison
    result = fetch_icbhi(dest, url=url, sha256=hashlib.sha256(archive).hexdigest().upper(),
                         meta_url=f"{server.base}/meta", config=FAST)
    assert result.recordings == 3 and result.archive_sha256 == hashlib.sha256(archive).hexdigest()


def test_size_mismatch_is_refused_before_transfer(server, tmp_path):
    server.files["/f.bin"] = bytes(range(256)) * 4
    with pytest.raises(LungsoundError, match="the server offers 1024 bytes, expected 1000"):
        download_file(f"{server.base}/f.bin", tmp_path / "f.bin", size=1000, config=FAST)
    assert not (tmp_path / "f.bin").exists()


@pytest.mark.parametrize("ignore_range", [False, True], ids=["server-resumes", "server-restarts"])
def test_interrupted_transfer_resumes(server, tmp_path, ignore_range):
    body = np.random.default_rng(0).bytes(300_000)
    server.files["/big.zip"] = body
    server.ignore_range = ignore_range
    partial = tmp_path / ".partial" / "big.zip.part"
    partial.parent.mkdir()
    partial.write_bytes(body[:123_457])
    digest = download_file(f"{server.base}/big.zip", tmp_path / "big.zip", config=FAST)
    assert server.requests == [("/big.zip", "bytes=123457-")]
    assert (tmp_path / "big.zip").read_bytes() == body
    assert digest == hashlib.sha256(body).hexdigest()
    assert not partial.exists()


def test_dropped_connection_is_retried_from_where_it_stopped(server, tmp_path):
    body = np.random.default_rng(1).bytes(200_000)
    server.files["/big.zip"] = body
    server.drop_once.add("/big.zip")
    download_file(f"{server.base}/big.zip", tmp_path / "big.zip", config=FAST)
    assert server.requests == [("/big.zip", None), ("/big.zip", "bytes=100000-")]
    assert (tmp_path / "big.zip").read_bytes() == body


@pytest.mark.parametrize("extra, expected_requests", [(0, 1), (7, 2)], ids=["part-complete", "part-too-long"])
def test_unsatisfiable_range_keeps_a_complete_part_and_restarts_a_stale_one(server, tmp_path, extra,
                                                                           expected_requests):
    body = b"0123456789" * 1000
    server.files["/f.bin"] = body
    partial = tmp_path / ".partial" / "f.bin.part"
    partial.parent.mkdir()
    partial.write_bytes(body + b"x" * extra)
    download_file(f"{server.base}/f.bin", tmp_path / "f.bin", config=FAST)
    assert len(server.requests) == expected_requests and server.requests[0][1] == f"bytes={len(body) + extra}-"
    assert (tmp_path / "f.bin").read_bytes() == body


def test_http_404_names_the_url_and_is_not_retried(server, tmp_path):
    url = f"{server.base}/nowhere/ICBHI_final_database.zip"
    with pytest.raises(LungsoundError, match="HTTP 404") as exc:
        fetch_icbhi(tmp_path / "data", url=url, config=FAST)
    assert str(exc.value).startswith(url)
    assert server.requests == [("/nowhere/ICBHI_final_database.zip", None)]
    assert not (tmp_path / "data" / "ICBHI_final_database").exists()


def _zip_with(member: zipfile.ZipInfo | str, data: bytes = b"evil") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ICBHI_final_database/101_1b1_Al_sc_Meditron.txt", b"0.1\t1.0\t0\t0\n")
        zf.writestr(member, data)
    return buf.getvalue()


def _tar_with(info: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        ok = tarfile.TarInfo("ICBHI_final_database/101_1b1_Al_sc_Meditron.txt")
        ok.size = 13
        tf.addfile(ok, io.BytesIO(b"0.1\t1.0\t0\t0\n\n"))
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _symlink_zip_member() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("ICBHI_final_database/link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _tar_info(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


MALICIOUS = {
    "zip-dotdot": ("evil.zip", lambda root: _zip_with("ICBHI_final_database/../../evil.txt"),
                   "'ICBHI_final_database/../../evil.txt'"),
    "zip-absolute": ("evil.zip", lambda root: _zip_with(str(root / "abs_evil.txt")), repr(str("{root}/abs_evil.txt"))),
    "zip-symlink": ("evil.zip", lambda root: _zip_with(_symlink_zip_member(), b"/etc/passwd"),
                    "'ICBHI_final_database/link' is a symbolic link"),
    "tar-dotdot": ("evil.tar.gz", lambda root: _tar_with(tarfile.TarInfo("../evil.txt"), b"evil"), "'../evil.txt'"),
    "tar-symlink": ("evil.tar.gz", lambda root: _tar_with(_tar_info("x/link", tarfile.SYMTYPE, "/etc/passwd")),
                    "'x/link' is a symbolic link"),
    "tar-hardlink": ("evil.tar.gz", lambda root: _tar_with(_tar_info("x/hard", tarfile.LNKTYPE, "/etc/passwd")),
                     "'x/hard' is a hard link"),
    "tar-device": ("evil.tar.gz", lambda root: _tar_with(_tar_info("x/dev", tarfile.CHRTYPE)),
                   "'x/dev' is a device or special file"),
}


@pytest.mark.parametrize("case", list(MALICIOUS))
def test_malicious_archive_is_refused_and_nothing_is_written(tmp_path, case):
    name, build, named = MALICIOUS[case]
    root = tmp_path / "outer"
    dest = root / "inner" / "data"
    archive = tmp_path / name
    archive.write_bytes(build(root))
    with pytest.raises(LungsoundError) as exc:
        fetch_icbhi(dest, archive=archive, config=FAST)
    message = str(exc.value)
    assert message.startswith(f"{archive}: member ") and named.format(root=root) in message and "refusing" in message
    written = sorted(p for p in tmp_path.rglob("*") if p != archive)
    assert written == [root, root / "inner", dest]  # only the (empty) destination folder itself


def test_zip_bomb_and_total_size_limits(tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ICBHI_final_database/zeros.wav", bytes(4 << 20))
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(LungsoundError, match=r"member 'ICBHI_final_database/zeros.wav' expands \d+-fold \(limit 100\)"):
        safe_extract(bomb, into)
    assert not any(into.iterdir())
    small = tmp_path / "small.zip"
    small.write_bytes(_zip_bytes({"a.txt": b"x" * 600, "b.txt": b"y" * 600}))
    with pytest.raises(LungsoundError, match=r"unpacks to 1200 bytes \(limit 1000\)"):
        safe_extract(small, into, ExtractLimits(max_total_bytes=1000))
    assert not any(into.iterdir())
    safe_extract(small, into, ExtractLimits(max_total_bytes=1200))  # at the limit: allowed
    assert (into / "ICBHI_final_database" / "b.txt").read_bytes() == b"y" * 600


def test_flat_tar_gz_mirror_is_extracted_into_the_database_folder(tmp_path):
    files = _source_files(tmp_path)
    archive = tmp_path / "mirror.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    result = fetch_icbhi(tmp_path / "data", archive=archive, meta_url="http://127.0.0.1:9/none",
                         config=DownloadConfig(timeout=1.0, retries=0, backoff=0.0, progress=False))
    assert (result.recordings, result.annotations, result.side_present) == (3, 3, [])
    for name, data in files.items():
        assert (result.folder / name).read_bytes() == data
    assert "No readable split file" in (result.folder / "NAMING.txt").read_text()


def test_second_run_does_nothing(server, tmp_path, capsys):
    _serve_database(server, tmp_path, side=tuple(SIDE))
    dest = tmp_path / "data"
    argv = ("--dest", str(dest), "--url", f"{server.base}/ICBHI_final_database.zip",
            "--meta-url", f"{server.base}/meta")
    assert download.run(_cli(*argv)) == 0
    first = capsys.readouterr().out
    assert "nothing to do" not in first and "side files 6/6 present\n" in first
    seen = len(server.requests)
    stamps = {p: p.stat().st_mtime_ns for p in dest.rglob("*")}
    assert download.run(_cli(*argv)) == 0
    second = capsys.readouterr().out
    assert second.startswith("nothing to do: the database and its side files are already in place\n")
    assert "3 recordings, 3 annotation files, side files 6/6 present" in second
    assert len(server.requests) == seen
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*")} == stamps


def test_missing_side_file_falls_back_to_a_packaged_copy_with_the_right_checksum(server, tmp_path, monkeypatch):
    _serve_database(server, tmp_path, side=())
    good, bad = b"101 0\n103 1\n", b"tampered\n"
    packaged = tmp_path / "packaged"
    packaged.mkdir()
    (packaged / "patient_list_foldwise.txt").write_bytes(good)
    (packaged / "metadata.txt").write_bytes(bad)
    monkeypatch.setattr(download, "PACKAGED_META", packaged)
    monkeypatch.setattr(download, "SIDE_FILES", (
        RemoteFile("patient_list_foldwise.txt", f"{server.base}/gone/folds", None, hashlib.sha256(good).hexdigest(),
                   "t"),
        RemoteFile("metadata.txt", f"{server.base}/gone/meta", None, hashlib.sha256(b"101\t3\n").hexdigest(), "t"),
    ))
    result = fetch_icbhi(tmp_path / "data", url=f"{server.base}/ICBHI_final_database.zip", config=FAST)
    assert result.side_present == ["patient_list_foldwise.txt"]
    assert (result.folder / "patient_list_foldwise.txt").read_bytes() == good
    assert list(result.side_missing) == ["metadata.txt"] and "HTTP 404" in result.side_missing["metadata.txt"]
    assert not (result.folder / "metadata.txt").exists()


def test_run_rejects_a_malformed_sha256(tmp_path):
    with pytest.raises(LungsoundError, match="--sha256 must be 64 hexadecimal digits, got 'abc'"):
        download.run(_cli("--dest", str(tmp_path), "--sha256", "abc"))
    assert not any(tmp_path.iterdir())
