from __future__ import annotations

import base64
import grp
import io
import os
import pwd
import shutil
import subprocess
import tarfile

import pytest

from deploykit.execute.probe import (
    FileFact,
    ProbeError,
    ProbeSpec,
    parse_probe,
    probe_command,
    sha256,
)


def test_probe_command_is_exact_for_one_of_each():
    spec = ProbeSpec(files=("/etc/a.conf",), directories=("/etc/d",), packages=("etcd-server",), units=("etcd",))
    cmd = probe_command(spec)
    assert cmd.splitlines() == [
        "export LC_ALL=C",
        "if command -v tar >/dev/null 2>&1; then printf '@@TAR '; tar -c -z -P -h --hard-dereference "
        "--no-recursion -f - -- /etc/a.conf /etc/d 2>/dev/null | base64 -w0; echo; else echo '@@NOTAR'; fi",
        "dpkg-query -W -f='@@PKG ${Package} ${Status}\\n' etcd-server 2>/dev/null",
        "echo @@UNITS; systemctl show -p Id,UnitFileState,ActiveState etcd 2>/dev/null; echo; echo @@UNITS-END",
        "echo @@END",
    ]


def test_probe_starts_the_same_processes_for_one_item_or_fifty():
    """The no-op plan's cost at 51 hosts was per-item processes on the servers: no command may repeat per item."""
    few = probe_command(ProbeSpec(files=("/etc/f0",), directories=("/d0",), units=("u0",)))
    many = probe_command(ProbeSpec(files=tuple(f"/etc/f{i}" for i in range(50)),
                                   directories=tuple(f"/d{i}" for i in range(50)),
                                   units=tuple(f"u{i}" for i in range(50))))
    assert len(many.splitlines()) == len(few.splitlines())
    for command in ("tar -c", "systemctl ", "base64 ", "stat "):
        assert many.count(command) == few.count(command) <= 1


def test_unsafe_inputs_are_refused():
    with pytest.raises(ValueError):
        ProbeSpec(files=("/etc/a b.conf",))
    with pytest.raises(ValueError):
        ProbeSpec(files=("relative.conf",))
    with pytest.raises(ValueError):
        ProbeSpec(units=("etcd; rm -rf /",))
    with pytest.raises(ValueError):
        ProbeSpec(packages=("Bad_Pkg",))


def _out(*lines: str) -> list[str]:
    return [*lines, "@@END"]


def _units_block(*units: tuple[str, str, str]) -> list[str]:
    """systemctl show's output for (Id, UnitFileState, ActiveState), as the probe frames it."""
    lines = ["@@UNITS"]
    for unit_id, enabled, active in units:
        lines += [f"Id={unit_id}", f"UnitFileState={enabled}", f"ActiveState={active}", ""]
    return [*lines, "@@UNITS-END"]


def test_parse_probe_reads_every_record():
    spec = ProbeSpec(files=("/etc/a.conf", "/etc/b.conf"), directories=("/etc/d", "/etc/e"),
                     packages=("etcd-server", "haproxy"), units=("etcd", "haproxy"))
    content = b"x = 1\n"
    facts = parse_probe(spec, _out(
        "@@TAR " + _tar_b64([("/etc/a.conf", content, 0o640, "root", "etcd"), ("/etc/d", None, 0o755, "root", "root")]),
        "@@PKG etcd-server install ok installed",
        "@@PKG haproxy deinstall ok config-files",
        *_units_block(("etcd.service", "enabled", "active"), ("haproxy.service", "", "inactive")),
    ))
    assert facts.files["/etc/a.conf"] == FileFact(0o640, "root", "etcd", content)
    assert facts.files["/etc/b.conf"] is None
    assert facts.directories == {"/etc/d": (0o755, "root", "root"), "/etc/e": None}
    assert facts.packages == {"etcd-server": True, "haproxy": False}
    assert facts.units == {"etcd": ("enabled", "active"), "haproxy": ("absent", "inactive")}


def test_parse_probe_defaults_for_unreported_items():
    spec = ProbeSpec(packages=("redis-server",), units=("redis-server",))
    facts = parse_probe(spec, _out())
    assert facts.packages == {"redis-server": False}
    assert facts.units == {"redis-server": ("absent", "inactive")}


def test_cut_output_is_an_error():
    with pytest.raises(ProbeError, match="cut short"):
        parse_probe(ProbeSpec(), ["@@TAR "])


def test_garbled_output_is_an_error():
    with pytest.raises(ProbeError, match="unexpected probe output"):
        parse_probe(ProbeSpec(files=("/a",)), ["@@FACT", "@@END"])


def test_fingerprint_changes_with_content_mode_and_units():
    spec = ProbeSpec(files=("/a",), units=("u",))

    def read(content: bytes, mode: int, active: str):
        return parse_probe(spec, _out("@@TAR " + _tar_b64([("/a", content, mode, "root", "root")]),
                                      *_units_block(("u.service", "enabled", active))))

    base = read(b"1", 0o644, "active")
    same = read(b"1", 0o644, "active")
    other_content = read(b"2", 0o644, "active")
    other_mode = read(b"1", 0o600, "active")
    stopped = read(b"1", 0o644, "inactive")
    assert base.fingerprint() == same.fingerprint()
    assert len({base.fingerprint(), other_content.fingerprint(), other_mode.fingerprint(),
                stopped.fingerprint()}) == 4


def test_sha256_of_text_and_bytes_agree():
    assert sha256("abc") == sha256(b"abc")


def _tar_b64(entries: list[tuple[str, bytes | None, int, str, str]]) -> str:
    """A gzipped tar as the probe prints it: (name, content or None for a directory, mode, owner, group)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content, mode, owner, group in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.uname, info.gname = mode, owner, group
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return base64.b64encode(buf.getvalue()).decode()


def test_parse_probe_reads_files_and_directories_from_the_tar():
    spec = ProbeSpec(files=("/etc/a.conf", "/etc/b.conf", "/etc/d"), directories=("/etc/d", "/etc/e", "/etc/a.conf"))
    archive = _tar_b64([("/etc/a.conf", b"x = 1\n", 0o2640, "root", "etcd"), ("/etc/d/", None, 0o750, "root", "adm")])
    facts = parse_probe(spec, _out(f"@@TAR {archive}"))
    assert facts.files == {"/etc/a.conf": FileFact(0o2640, "root", "etcd", b"x = 1\n"), "/etc/b.conf": None,
                           "/etc/d": None}  # a directory is not the file asked for
    assert facts.directories == {"/etc/d": (0o750, "root", "adm"), "/etc/e": None, "/etc/a.conf": None}


def test_an_empty_or_unreadable_tar():
    spec = ProbeSpec(files=("/a",))
    assert parse_probe(spec, _out("@@TAR ")).files == {"/a": None}  # tar printed nothing: every path missing
    with pytest.raises(ProbeError, match="archive of the managed files is unreadable"):
        parse_probe(spec, _out("@@TAR " + base64.b64encode(b"not a tar").decode()))
    with pytest.raises(ProbeError, match="tar is not installed"):
        parse_probe(spec, _out("@@NOTAR"))


def test_units_from_systemctl_show_blocks_in_order():
    spec = ProbeSpec(units=("ssh", "wg-quick@mesh0", "nosuch", "backup.timer"))
    facts = parse_probe(spec, _out(
        "@@UNITS",
        "Id=ssh.service", "ActiveState=active", "UnitFileState=enabled", "",
        "Id=wg-quick@mesh0.service", "ActiveState=activating", "UnitFileState=enabled", "",
        "Id=nosuch.service", "ActiveState=inactive", "UnitFileState=", "",
        "Id=backup.timer", "UnitFileState=masked", "ActiveState=inactive", "",
        "@@UNITS-END",
    ))
    assert facts.units == {"ssh": ("enabled", "active"), "wg-quick@mesh0": ("enabled", "activating"),
                           "nosuch": ("absent", "inactive"), "backup.timer": ("masked", "inactive")}


def test_units_matched_by_name_when_systemctl_skipped_one():
    spec = ProbeSpec(units=("ssh", "etcd", "patroni"))
    facts = parse_probe(spec, _out("@@UNITS", "Id=ssh.service", "ActiveState=active", "UnitFileState=enabled", "",
                                   "Id=patroni.service", "ActiveState=failed", "UnitFileState=enabled", "",
                                   "@@UNITS-END"))
    assert facts.units == {"ssh": ("enabled", "active"), "etcd": ("absent", "inactive"),
                           "patroni": ("enabled", "failed")}


def test_units_block_cut_short_or_garbled():
    spec = ProbeSpec(units=("ssh",))
    with pytest.raises(ProbeError, match="cut short"):
        parse_probe(spec, ["@@UNITS", "Id=ssh.service"])
    with pytest.raises(ProbeError, match="systemctl show"):
        parse_probe(spec, _out("@@UNITS", "Failed to connect to bus", "@@UNITS-END"))


@pytest.mark.skipif(not all(shutil.which(c) for c in ("sh", "tar", "gzip", "base64")), reason="needs sh, tar, gzip")
def test_the_probe_script_run_by_sh_reads_real_files(tmp_path):
    """The script itself, run by this machine's sh, tar, gzip and base64 (as on a Debian server)."""
    (tmp_path / "a.conf").write_bytes(b"\x00binary\nand text\n")
    (tmp_path / "a.conf").chmod(0o640)
    (tmp_path / "link.conf").symlink_to(tmp_path / "a.conf")
    (tmp_path / "hard.conf").hardlink_to(tmp_path / "a.conf")
    (tmp_path / "d").mkdir(mode=0o750)
    (tmp_path / "d").chmod(0o750)
    (tmp_path / "d" / "inside").write_text("not asked for")
    files = tuple(str(tmp_path / n) for n in ("a.conf", "link.conf", "hard.conf", "missing.conf", "d"))
    dirs = (str(tmp_path / "d"), str(tmp_path / "nodir"))
    spec = ProbeSpec(files=files, directories=dirs)
    out = subprocess.run(["sh", "-c", probe_command(spec)], capture_output=True, text=True, check=True).stdout
    facts = parse_probe(spec, out.splitlines())
    me, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    want = FileFact(0o640, me, group, b"\x00binary\nand text\n")
    assert facts.files == {files[0]: want, files[1]: want, files[2]: want, files[3]: None, files[4]: None}
    assert facts.directories == {dirs[0]: (0o750, me, group), dirs[1]: None}
