from __future__ import annotations

import base64

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
        "if [ -f /etc/a.conf ]; then printf '@@FILE %s %s\\n' /etc/a.conf \"$(stat -c '%a:%U:%G' /etc/a.conf)\"; "
        "base64 -w0 /etc/a.conf; echo; else printf '@@NOFILE %s\\n' /etc/a.conf; fi",
        "if [ -d /etc/d ]; then printf '@@DIR %s %s\\n' /etc/d \"$(stat -c '%a:%U:%G' /etc/d)\"; "
        "else printf '@@NODIR %s\\n' /etc/d; fi",
        "dpkg-query -W -f='@@PKG ${Package} ${Status}\\n' etcd-server 2>/dev/null",
        "printf '@@UNIT %s %s %s\\n' etcd \"$(systemctl is-enabled etcd 2>/dev/null || true)\" "
        "\"$(systemctl is-active etcd 2>/dev/null || true)\"",
        "echo @@END",
    ]


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


def test_parse_probe_reads_every_record():
    spec = ProbeSpec(files=("/etc/a.conf", "/etc/b.conf"), directories=("/etc/d", "/etc/e"),
                     packages=("etcd-server", "haproxy"), units=("etcd", "haproxy"))
    content = b"x = 1\n"
    facts = parse_probe(spec, _out(
        "@@FILE /etc/a.conf 640:root:etcd",
        base64.b64encode(content).decode(),
        "@@NOFILE /etc/b.conf",
        "@@DIR /etc/d 755:root:root",
        "@@NODIR /etc/e",
        "@@PKG etcd-server install ok installed",
        "@@PKG haproxy deinstall ok config-files",
        "@@UNIT etcd enabled active",
        "@@UNIT haproxy  ",
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
        parse_probe(ProbeSpec(), ["@@NOFILE /x"])


def test_garbled_output_is_an_error():
    with pytest.raises(ProbeError, match="unexpected probe output"):
        parse_probe(ProbeSpec(files=("/a",)), ["@@FILE /a", "@@END"])


def test_fingerprint_changes_with_content_mode_and_units():
    spec = ProbeSpec(files=("/a",), units=("u",))
    one = base64.b64encode(b"1").decode()
    base = parse_probe(spec, _out("@@FILE /a 644:root:root", one, "@@UNIT u enabled active"))
    same = parse_probe(spec, _out("@@FILE /a 644:root:root", one, "@@UNIT u enabled active"))
    other_content = parse_probe(spec, _out("@@FILE /a 644:root:root", base64.b64encode(b"2").decode(),
                                           "@@UNIT u enabled active"))
    other_mode = parse_probe(spec, _out("@@FILE /a 600:root:root", base64.b64encode(b"1").decode(),
                                        "@@UNIT u enabled active"))
    stopped = parse_probe(spec, _out("@@FILE /a 644:root:root", base64.b64encode(b"1").decode(),
                                     "@@UNIT u enabled inactive"))
    assert base.fingerprint() == same.fingerprint()
    assert len({base.fingerprint(), other_content.fingerprint(), other_mode.fingerprint(),
                stopped.fingerprint()}) == 4


def test_sha256_of_text_and_bytes_agree():
    assert sha256("abc") == sha256(b"abc")
