"""Real mail clients against the store: fetchmail and getmail6 over POP3, mutt reading
over IMAP, mbsync syncing both ways; imapclient and mbsync over IMAPS, getmail6 over
POP3S (RFC 8314). Each is skipped when its binary is missing."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxlab.lab.pki import ensure_ca, issue
from mxlab.nodes.config import TlsFiles
from tests.test_store_support import (
    PASSWORDS,
    StoreProcess,
    deliver,
    free_port,
    message,
    running_store,
    unique,
)

pytestmark = pytest.mark.interop
USER = "bob@alpha.test"


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} not installed")
    return path


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreProcess]:
    yield from running_store(tmp_path_factory.mktemp("interop"), "127.20.0.3")


def run(args: list[str], home: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "TERM": "xterm"}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def inbox_subjects(node: StoreProcess) -> list[bytes]:
    imap = node.imap(USER)
    imap.select("INBOX", readonly=True)
    _, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (Subject)])")
    imap.logout()
    return [part[1].strip() for part in data if isinstance(part, tuple)]


def test_fetchmail_retrieves_and_deletes(node: StoreProcess, tmp_path: Path) -> None:
    fetchmail = need("fetchmail")
    subjects = [unique("fetchmail") for _ in range(3)]
    for s in subjects:
        deliver(node, message(s, b".leading dot\r\nbody\r\n"), [USER])
    out = tmp_path / "out"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"set no syslog\npoll {node.address} protocol POP3 port {node.config.pop3_port}"
        f' auth password user "{USER}" password "{PASSWORDS[USER]}"'
        f" nokeep mda \"/bin/sh -c 'cat >> {out}'\"\n"
    )
    rc.chmod(0o600)
    run([fetchmail, "-f", str(rc), "--nosslcertck"], tmp_path)
    got = out.read_bytes()
    for s in subjects:
        assert f"Subject: {s}".encode() in got
    assert b"\n.leading dot\n" in got  # byte-stuffing undone by the client
    assert not any(s.encode() in b" ".join(inbox_subjects(node)) for s in subjects)


def getmail(
    retriever: str, port: int, node: StoreProcess, tmp_path: Path, extra: str = ""
) -> list[bytes]:
    """Run getmail6 once with ``retriever`` against ``port``: the messages it delivered."""
    binary = need("getmail")
    drop = tmp_path / "drop"
    drop.mkdir()
    rc = tmp_path / "getmailrc"
    rc.write_text(
        f"[retriever]\ntype = {retriever}\n"
        f"server = {node.address}\nport = {port}\n"
        f"username = {USER}\npassword = {PASSWORDS[USER]}\n{extra}\n"
        "[destination]\ntype = MDA_external\npath = /bin/sh\n"
        f'arguments = ("-c", "cat > {drop}/msg.$$")\nallow_root_commands = true\n\n'
        "[options]\nread_all = true\ndelete = true\n"
    )
    run([binary, "--getmaildir", str(tmp_path), "--rcfile", str(rc)], tmp_path)
    return [p.read_bytes() for p in drop.iterdir()]


def test_getmail_retrieves_over_pop3(node: StoreProcess, tmp_path: Path) -> None:
    need("getmail")
    subject = unique("getmail")
    sent = message(subject)
    deliver(node, sent, [USER])
    fetched = getmail("SimplePOP3Retriever", node.config.pop3_port, node, tmp_path)
    mine = [f for f in fetched if subject.encode() in f]
    assert len(mine) == 1
    # getmail adds its own Delivered-To/Return-Path on top of ours: strip and compare
    body = mine[0].replace(b"\r\n", b"\n")
    assert body.endswith(sent.replace(b"\r\n", b"\n"))


def test_mutt_reads_over_imap(node: StoreProcess, tmp_path: Path) -> None:
    mutt, script = need("mutt"), need("script")
    subject = unique("mutt")
    deliver(node, message(subject, b"hello from the lab\r\n"), [USER])
    out = tmp_path / "piped"
    rc = tmp_path / "muttrc"
    url = f"imap://{node.address}:{node.config.imap_port}/"
    rc.write_text(
        f'set imap_user="{USER}"\nset imap_pass="{PASSWORDS[USER]}"\n'
        f'set folder="{url}"\nset spoolfile="+INBOX"\nset ssl_starttls=no\n'
        "set ssl_force_tls=no\nset quit=yes\nset wait_key=no\nset sort=date-received\n"
    )
    keys = f"<last-entry><pipe-message>cat > {out}<enter><quit>"
    command = f"{mutt} -n -F {rc} -f {url}INBOX -e 'push \"{keys}\"'"
    run([script, "-qec", command, "/dev/null"], tmp_path)
    got = out.read_bytes()
    assert f"Subject: {subject}".encode() in got and b"hello from the lab" in got


def test_mbsync_syncs_both_ways(node: StoreProcess, tmp_path: Path) -> None:
    mbsync = need("mbsync")
    subject = unique("mbsync")
    deliver(node, message(subject), [USER])
    local = tmp_path / "mail"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        f"IMAPAccount lab\nHost {node.address}\nPort {node.config.imap_port}\n"
        f"User {USER}\nPass {PASSWORDS[USER]}\nSSLType None\nAuthMechs PLAIN\n\n"
        "IMAPStore remote\nAccount lab\n\n"
        f"MaildirStore local\nPath {local}/\nInbox {local}/INBOX\nSubFolders Verbatim\n\n"
        "Channel sync\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\n"
        "Expunge Both\nSyncState *\nSync All\n"
    )
    run([mbsync, "-c", str(rc), "-a"], tmp_path)
    pulled = [p.read_bytes() for p in (local / "INBOX" / "new").iterdir()]
    mine = [p for p in pulled if subject.encode() in p]
    assert len(mine) == 1
    # mbsync stores LF line ends and adds X-TUID; the body and our trace are intact
    assert mine[0].startswith(b"Return-Path: <carol@beta.test>\nDelivered-To: bob@alpha.test\n")
    assert mine[0].endswith(b"\n\nline one\nline two\n")
    for box in ("Sent", "Drafts", "Trash", "Junk"):
        assert (local / box / "cur").is_dir()
    # near -> far: a new folder and a message written locally reach the store
    pushed = unique("pushed")
    archive = local / "Archive"
    for sub in ("cur", "new", "tmp"):
        (archive / sub).mkdir(parents=True)
    (archive / "cur" / "1.1.lab:2,S").write_bytes(message(pushed))
    run([mbsync, "-c", str(rc), "-a"], tmp_path)
    imap = node.imap(USER)
    typ, _ = imap.select("Archive")
    assert typ == "OK"
    _, data = imap.search(None, "SUBJECT", pushed, "SEEN")
    assert len(data[0].split()) == 1
    imap.logout()


# -- implicit TLS (RFC 8314): IMAPS and POP3S from the lab CA ------------------------------


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreProcess]:
    tmp = tmp_path_factory.mktemp("interop-tls")
    address = "127.20.0.5"
    ca = ensure_ca(tmp / "ca", "store-tests")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    issue(ca, "store.alpha.test", address, cert, key)
    tls = TlsFiles(cert=str(cert), key=str(key), ca=str(tmp / "ca" / "ca.pem"))
    yield from running_store(
        tmp, address, tls=tls, imaps_port=free_port(address), pop3s_port=free_port(address)
    )


def test_imapclient_over_imaps(tls_node: StoreProcess) -> None:
    imapclient = pytest.importorskip("imapclient")
    subject = unique("imaps")
    deliver(tls_node, message(subject), [USER])
    assert tls_node.config.tls is not None and tls_node.config.imaps_port
    context = ssl.create_default_context(cafile=tls_node.config.tls.ca)  # verifies the IP SAN
    client = imapclient.IMAPClient(
        tls_node.address, tls_node.config.imaps_port, ssl=True, ssl_context=context, timeout=10
    )
    assert b"STARTTLS" not in client.capabilities()  # already encrypted
    client.login(USER, PASSWORDS[USER])
    client.select_folder("INBOX")
    (uid,) = client.search(["SUBJECT", subject])
    fetched = client.fetch([uid], ["RFC822.SIZE", "BODY.PEEK[]"])[uid]
    assert fetched[b"RFC822.SIZE"] == len(fetched[b"BODY[]"])
    assert fetched[b"BODY[]"].endswith(message(subject).split(b"\r\n\r\n", 1)[1])
    client.add_flags([uid], [b"\\Seen"])
    assert b"\\Seen" in client.get_flags([uid])[uid]
    client.logout()


def test_mbsync_over_imaps(tls_node: StoreProcess, tmp_path: Path) -> None:
    mbsync = need("mbsync")
    subject = unique("mbsync-imaps")
    deliver(tls_node, message(subject), [USER])
    local = tmp_path / "mail"
    local.mkdir()
    assert tls_node.config.tls is not None
    rc = tmp_path / "mbsyncrc"
    # mbsync checks host names only: trusting the node's own certificate (as well as
    # the CA) lets it connect by address
    rc.write_text(
        f"IMAPAccount lab\nHost {tls_node.address}\nPort {tls_node.config.imaps_port}\n"
        f"User {USER}\nPass {PASSWORDS[USER]}\nSSLType IMAPS\nAuthMechs PLAIN\n"
        f"CertificateFile {tls_node.config.tls.cert}\n\n"
        "IMAPStore remote\nAccount lab\n\n"
        f"MaildirStore local\nPath {local}/\nInbox {local}/INBOX\n\n"
        "Channel sync\nFar :remote:INBOX\nNear :local:INBOX\nCreate Both\nSyncState *\n"
        "Sync Pull\n"
    )
    run([mbsync, "-c", str(rc), "-a"], tmp_path)
    pulled = [p.read_bytes() for p in (local / "INBOX" / "new").iterdir()]
    assert len([p for p in pulled if subject.encode() in p]) == 1


def test_getmail_retrieves_over_pop3s(tls_node: StoreProcess, tmp_path: Path) -> None:
    need("getmail")
    subject = unique("getmail-pop3s")
    sent = message(subject)
    deliver(tls_node, sent, [USER])
    assert tls_node.config.tls is not None and tls_node.config.pop3s_port
    fetched = getmail(
        "SimplePOP3SSLRetriever",
        tls_node.config.pop3s_port,
        tls_node,
        tmp_path,
        f"ca_certs = {tls_node.config.tls.ca}\n",
    )
    mine = [f for f in fetched if subject.encode() in f]
    assert len(mine) == 1
    assert mine[0].replace(b"\r\n", b"\n").endswith(sent.replace(b"\r\n", b"\n"))
