"""IMAP4rev1 (RFC 3501) server state machine, sans-IO: bytes in, bytes out.

Extensions: IDLE 2177, UIDPLUS 4315, MOVE 6851, LITERAL+ 7888, NAMESPACE 2342,
ENABLE 5161, UNSELECT 3691, ID 2971, SPECIAL-USE and CREATE-SPECIAL-USE 6154,
SASL-IR 4959, CHILDREN 3348, CONDSTORE and QRESYNC 7162, ESEARCH 4731, SEARCHRES
5182, WITHIN 5032, SORT and THREAD 5256 (imap_sort, imap_thread), LIST-EXTENDED 5258
and LIST-STATUS 5819 (imap_list), MULTIAPPEND 3502, BINARY 3516, CATENATE 4469
(imap_catenate), COMPRESS=DEFLATE 4978 (imap_compress). Not IMAP4rev2 (RFC 9051):
its required changes (no \\Recent, STATUS SIZE, LIST-only, ...) are not made.
Changes other sessions make reach this one through ``mailbox_changed``: flag changes
and new mail are applied before each command, expunges reported after it (§7.4.1).
"""

from __future__ import annotations

import base64
import binascii
import functools
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Callable

from mxlab.nodes.events import emit
from mxlab.nodes.store.auth import Authenticator
from mxlab.nodes.store.imap_catenate import BadUrl, MessageUrl, catenate
from mxlab.nodes.store.imap_compress import Deflate
from mxlab.nodes.store.imap_fetch import CACHED, FetchItem, parse_items, render
from mxlab.nodes.store.imap_list import list_entries, parse_list
from mxlab.nodes.store.imap_mime import Part, UnknownCte, parse, section, split_message
from mxlab.nodes.store.imap_parser import (
    Command,
    CommandReader,
    Continue,
    Literal,
    ParseError,
    Refused,
    Token,
    as_text,
    format_uid_set,
    parse_sequence_set,
    tag_of,
    tokenize,
)
from mxlab.nodes.store.imap_search import (
    CHARSETS,
    BadCharset,
    Candidate,
    SearchParser,
    esearch,
    parse_return,
    to_save,
)
from mxlab.nodes.store.imap_sort import base_subject, parse_criteria, sent_date, sort_key
from mxlab.nodes.store.imap_thread import ALGORITHMS as THREAD_ALGORITHMS
from mxlab.nodes.store.imap_thread import (
    Facts,
    message_ids,
    ordered_subject,
    references,
    thread_list,
)
from mxlab.nodes.store.imap_wire import flag_list, parse_date_time, string
from mxlab.nodes.store.index import MessageInfo
from mxlab.nodes.store.maildir import INBOX, SEPARATOR, BadFolderName
from mxlab.nodes.store.mailstore import Change, MailStore, UserMail, canonical_mailbox
from mxlab.nodes.store.security import Security

PRE_AUTH_CAPS = "IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE AUTH=PLAIN"
POST_AUTH_CAPS = (
    "IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE UNSELECT CHILDREN NAMESPACE UIDPLUS MOVE"
    " SPECIAL-USE CONDSTORE ESEARCH SEARCHRES WITHIN SORT THREAD=ORDEREDSUBJECT"
    " THREAD=REFERENCES LIST-EXTENDED LIST-STATUS CREATE-SPECIAL-USE MULTIAPPEND BINARY"
    " COMPRESS=DEFLATE QRESYNC CATENATE"
)
# RFC 6154 §2: the uses a real folder can have (\\All and \\Flagged are virtual views)
CREATABLE_USES = ("\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash")
SYSTEM_FLAGS = {f.lower(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")}
PRE_AUTH_LITERAL = 8 * 1024  # before login nothing needs a big literal
STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ")

NOT_AUTH, AUTH, SELECTED, LOGOUT = "not-authenticated", "authenticated", "selected", "logout"


class ImapSession:
    """One IMAP connection. ``receive`` returns what to send; ``updates`` returns
    what an IDLE client should be told now; ``notify`` is called when it changes."""

    def __init__(
        self,
        store: MailStore,
        auth: Authenticator,
        hostname: str,
        *,
        security: Security | None = None,
        max_literal: int = 64 * 1024 * 1024,
        max_line: int = 64 * 1024,
        node: str = "store",
    ) -> None:
        self.store = store
        self.auth = auth
        self.hostname = hostname
        self.security = security or Security()
        self.max_literal = max_literal
        self.max_line = max_line
        self.node = node
        self.reader = CommandReader(max_line, PRE_AUTH_LITERAL)
        self.state = NOT_AUTH
        self.out: list[bytes] = []
        self.notify: Callable[[], None] | None = None
        self.pending_auth: str | None = None  # tag of an AUTHENTICATE awaiting its response
        self.idle_tag: str | None = None
        self.address: str | None = None
        self.mail: UserMail | None = None
        self.selected: str | None = None
        self.readonly = False
        self.view: list[MessageInfo] = []
        self.uids: list[int] = []  # the view's UIDs, ascending: seq = index + 1
        self.recent: set[int] = set()
        self.saved: set[int] = set()  # SEARCHRES "$" (RFC 5182), as UIDs
        self.keywords: set[str] = set()  # the selected mailbox's keywords (§7.2.6)
        self.changes: list[Change] = []
        self.condstore = False  # RFC 7162 §3.1: MODSEQ in every flag update once enabled
        self.qresync = False  # RFC 7162 §3.2.3: VANISHED instead of EXPUNGE once enabled
        self.counted = False  # this session holds one of its user's session slots
        self.compress: Deflate | None = None  # RFC 4978, once active
        self.compress_next = False

    @property
    def closed(self) -> bool:
        return self.state == LOGOUT

    @property
    def authenticated(self) -> bool:
        """Past login: the long autologout timer applies (§5.4)."""
        return self.state in (AUTH, SELECTED)

    def greeting(self) -> bytes:
        return (
            f"* OK [CAPABILITY {self._caps()}] {self.hostname} mxlab IMAP4rev1 ready\r\n".encode()
        )

    # -- I/O boundary ------------------------------------------------------------------

    def receive(self, data: bytes) -> bytes:
        if self.compress is None:
            self._feed(data)
            return self._take()
        try:  # RFC 4978
            for piece in self.compress.inflate(data):
                self._feed(piece)
        except zlib.error:
            self.close()
            self.out.append(b"* BYE corrupt DEFLATE stream\r\n")
        return self._take()

    def _feed(self, data: bytes) -> None:
        for event in self.reader.feed(data):
            if self.closed or self.security.starttls_pending:
                break
            if isinstance(event, Continue):
                self.out.append(b"+ Ready for literal data\r\n")
            elif isinstance(event, Refused):
                self._send(f"{event.tag} BAD {event.reason}")
                if event.fatal:
                    self.out.append(b"* BYE cannot resynchronise after refusing a literal\r\n")
                    self.close()
            else:
                self._command(event)

    def updates(self) -> bytes:
        """During IDLE, the untagged responses for what changed meanwhile (RFC 2177)."""
        if self.idle_tag is not None:
            self._flush(allow_expunge=True)
        return self._take()

    def mailbox_changed(self, change: Change) -> None:
        self.changes.append(change)
        if self.notify is not None:
            self.notify()

    def close(self) -> None:
        self._deselect()
        self.state = LOGOUT
        if self.counted and self.address is not None:
            self.counted = False
            self.store.close_session(self.address)

    def timeout_bye(self) -> bytes:
        self.close()
        self.out.append(b"* BYE autologout: idle too long\r\n")
        return self._take()

    def _take(self) -> bytes:
        data = b"".join(self.out)
        self.out.clear()
        if self.compress is not None:
            data = self.compress.deflate(data)
        if self.compress_next:  # RFC 4978 §3: after the OK, which went out plain
            self.compress, self.compress_next = Deflate(), False
        return data

    def _send(self, line: str) -> None:
        """One response line; names echoed from the client may hold any bytes."""
        self.out.append(line.encode("utf-8", "surrogateescape") + b"\r\n")

    def _untagged(self, text: str | bytes) -> None:
        data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
        self.out.append(b"* " + data + b"\r\n")

    # -- dispatch ----------------------------------------------------------------------

    def _command(self, event: Command) -> None:
        line = event.data
        if self.pending_auth is not None:
            tag, self.pending_auth = self.pending_auth, None
            if line.strip() == b"*":  # RFC 3501 §6.2.2: the client cancels
                self._send(f"{tag} BAD AUTHENTICATE cancelled")
                return
            self.out.append(self._finish_plain(tag, line.strip()))
            return
        if self.idle_tag is not None:
            tag, self.idle_tag = self.idle_tag, None
            if line.strip().upper() == b"DONE":
                self._flush(allow_expunge=True)
                self._send(f"{tag} OK IDLE terminated")
            else:
                self._send(f"{tag} BAD expected DONE")
            return
        tag = tag_of(line)
        try:
            tokens = tokenize(line)
        except ParseError as exc:
            self._send(f"{tag} BAD {exc}")
            return
        if len(tokens) < 2 or not isinstance(tokens[0], str) or not isinstance(tokens[1], str):
            self._send(f"{tag} BAD missing command")
            return
        name, args = tokens[1].upper(), tokens[2:]
        uid = name == "UID"
        if uid:
            if not args or not isinstance(args[0], str):
                self._send(f"{tag} BAD UID needs a command")
                return
            name, args = args[0].upper(), args[1:]
            if name not in _UID_COMMANDS:
                self._send(f"{tag} BAD UID {name[:20]} is not a UID command")
                return
        spec = _COMMANDS.get(name)
        if spec is None:
            self._send(f"{tag} BAD unknown command {name[:20]}")
            return
        handler, states = spec
        if self.state not in states:
            self._send(f"{tag} BAD {name} not allowed now")
            return
        # flag changes and new mail from other sessions first, so this command works
        # on (and shows) the flags as they are now; expunges wait until after it, as
        # the client's sequence numbers must not shift under its command (§7.4.1)
        self._flush(allow_expunge=False)
        try:
            reply = handler(self, tag, args, uid)
        except BadCharset:
            reply = f"{tag} NO [BADCHARSET (US-ASCII UTF-8)] charset not supported"
        except UnknownCte as exc:
            reply = f"{tag} NO [UNKNOWN-CTE] {exc}"  # RFC 3516 §4.3
        except ParseError as exc:
            reply = f"{tag} BAD {exc}"
        except (IndexError, ValueError):
            reply = f"{tag} BAD invalid arguments to {name}"
        except Exception as exc:  # a bug or a disk error: this session goes on
            emit(self.node, "error", error=f"IMAP {name}: {exc!r}")
            reply = f"{tag} NO [SERVERBUG] internal error"
        if reply is None:
            return  # the command continues (IDLE, AUTHENTICATE)
        # RFC 3501 §7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH
        self._flush(allow_expunge=uid or name not in ("FETCH", "STORE", "SEARCH"))
        self._send(reply)

    # -- mailbox view --------------------------------------------------------------------

    def _flush(self, allow_expunge: bool) -> None:
        """Report what other sessions changed (§5.2, §7.3.1, §7.4.1)."""
        if self.selected is None or self.mail is None:
            self.changes.clear()
            return
        kept: list[Change] = []
        exists = False
        for change in self.changes:
            if change.kind == "exists":
                exists = True
            elif change.origin is self:
                continue
            elif change.kind == "expunge":
                if not allow_expunge:
                    kept.append(change)
                    continue
                indexes = (self._index_of(uid) for uid in change.uids)
                self._forget(sorted(i for i in indexes if i is not None), report=True)
            elif change.kind == "flags":
                for uid, flags in change.flags.items():
                    i = self._index_of(uid)
                    if i is not None:
                        m = self.view[i]
                        m.flags, m.modseq = flags, change.modseq
                        self._keywords_in(flags)
                        self.out.append(self._flag_update(i, m, with_uid=True))
        self.changes = kept
        if exists:
            new = self.mail.messages(self.selected, self.uids[-1] if self.uids else 0)
            if new:
                self._keywords_in(frozenset().union(*(m.flags for m in new)))
                self.view += new
                self.uids += [m.uid for m in new]
                if not self.readonly:  # §2.3.2: \Recent for whichever session claims first
                    before = self.mail.claim_recent(self.selected, new[-1].uid)
                    self.recent.update(m.uid for m in new if m.uid > before)
                self._untagged(f"{len(self.view)} EXISTS")
                self._untagged(f"{len(self.recent)} RECENT")

    def _drop(self, i: int) -> None:
        """Forget the message at view index ``i``; \\Recent goes with it, so RECENT
        never counts more than EXISTS."""
        self.recent.discard(self.uids[i])
        self.saved.discard(self.uids[i])
        del self.view[i], self.uids[i]

    def _keywords_in(self, flags: frozenset[str]) -> None:
        """§7.2.6: FLAGS lists the mailbox's keywords too; a new one means a new
        FLAGS response, before any FETCH that shows it."""
        new = {f for f in flags if not f.startswith("\\")} - self.keywords
        if new:
            self.keywords |= new
            self._untagged(self._flags_response())

    def _flags_response(self) -> str:
        return f"FLAGS ({' '.join([*SYSTEM_FLAGS.values(), *sorted(self.keywords)])})"

    def _flags(self, uid: int, flags: frozenset[str]) -> bytes:
        return flag_list(flags | {"\\Recent"} if uid in self.recent else flags)

    def _flag_update(self, i: int, m: MessageInfo, with_uid: bool, flags: bool = True) -> bytes:
        """``* n FETCH (UID u FLAGS (...) MODSEQ (m))``: MODSEQ once CONDSTORE is on
        (RFC 7162 §3.2)."""
        parts = [b"UID %d" % m.uid] if with_uid else []
        if flags:
            parts.append(b"FLAGS " + self._flags(m.uid, m.flags))
        if self.condstore:
            parts.append(b"MODSEQ (%d)" % m.modseq)
        return b"* %d FETCH (" % (i + 1) + b" ".join(parts) + b")\r\n"

    def _index_of(self, uid: int) -> int | None:
        i = bisect_left(self.uids, uid)
        return i if i < len(self.uids) and self.uids[i] == uid else None

    def _resolve(self, text: Token, uid: bool) -> list[int]:
        """A sequence or UID set as view indexes, ascending (§6.4.8); "$" is the
        saved search result (RFC 5182 §2.1), the same with or without UID."""
        if text == "$":
            return [i for i, u in enumerate(self.uids) if u in self.saved]
        if uid:
            ranges = parse_sequence_set(as_text(text), self.uids[-1] if self.uids else 0)
            found: set[int] = set()
            for lo, hi in ranges:
                found.update(range(bisect_left(self.uids, lo), bisect_right(self.uids, hi)))
            return sorted(found)
        n = len(self.view)
        ranges = parse_sequence_set(as_text(text), n)
        found = set()
        for lo, hi in ranges:
            found.update(range(max(lo, 1) - 1, min(hi, n)))
        return sorted(found)

    def _deselect(self) -> None:
        if self.selected is not None and self.mail is not None:
            self.mail.unwatch(self.selected, self)
        self.selected = None
        self.view, self.uids, self.changes = [], [], []
        self.recent = set()
        self.keywords = set()
        self.saved = set()  # RFC 5182 §2.1: "$" is empty in a newly selected mailbox
        if self.state == SELECTED:
            self.state = AUTH

    def _read(self, m: MessageInfo) -> bytes:
        assert self.mail is not None and self.selected is not None
        return self.mail.read(self.selected, m.path)

    def _user(self) -> UserMail:
        assert self.mail is not None
        return self.mail

    # -- any state (§6.1) ----------------------------------------------------------------

    def _capability(self, tag: str, args: list[Token], uid: bool) -> str:
        self._untagged(f"CAPABILITY {self._caps()}")
        return f"{tag} OK CAPABILITY completed"

    def _caps(self) -> str:
        if self.state != NOT_AUTH:
            return POST_AUTH_CAPS
        caps = PRE_AUTH_CAPS
        if self.security.can_starttls:
            caps += " STARTTLS"
        if not self.security.plaintext_ok:
            caps += " LOGINDISABLED"  # RFC 3501 §6.2.3
        return caps

    def _starttls(self, tag: str, args: list[Token], uid: bool) -> str:
        """RFC 3501 §6.2.1; anything the client pipelined after it is discarded."""
        if not self.security.can_starttls:
            return f"{tag} BAD STARTTLS not available"
        self.security.request_tls()
        self.reader = CommandReader(self.max_line, PRE_AUTH_LITERAL)
        return f"{tag} OK Begin TLS negotiation now"

    def _noop(self, tag: str, args: list[Token], uid: bool) -> str:
        return f"{tag} OK NOOP completed"

    def _logout(self, tag: str, args: list[Token], uid: bool) -> str:
        self._untagged(f"BYE {self.hostname} mxlab IMAP4rev1 logging out")
        self._send(f"{tag} OK LOGOUT completed")
        self.close()
        return None  # type: ignore[return-value]

    def _id(self, tag: str, args: list[Token], uid: bool) -> str:
        self._untagged('ID ("name" "mxlab" "vendor" "mxlab")')  # RFC 2971 §3.1
        return f"{tag} OK ID completed"

    # -- not authenticated (§6.2) --------------------------------------------------------

    def _login(self, tag: str, args: list[Token], uid: bool) -> str:
        if not self.security.plaintext_ok:
            return f"{tag} NO [PRIVACYREQUIRED] plaintext login is disabled"
        user, password = as_text(args[0]), as_text(args[1])
        return self._logged_in(tag, self.auth.login(user, password), "LOGIN")

    def _authenticate(self, tag: str, args: list[Token], uid: bool) -> str | None:
        mech = as_text(args[0]).upper()
        if mech != "PLAIN":
            return f"{tag} NO unsupported authentication mechanism"
        if not self.security.plaintext_ok:
            return f"{tag} NO [PRIVACYREQUIRED] plaintext authentication is disabled"
        if len(args) > 1:  # RFC 4959: initial response, "=" for an empty one
            initial = as_text(args[1]).encode()
            return self._finish_plain(tag, b"" if initial == b"=" else initial).decode().rstrip()
        self.pending_auth = tag
        self.out.append(b"+ \r\n")
        return None

    def _finish_plain(self, tag: str, response: bytes) -> bytes:
        try:
            base64.b64decode(response, validate=True)
        except binascii.Error:
            return f"{tag} BAD invalid base64\r\n".encode()
        return self._logged_in(tag, self.auth.plain(response), "AUTHENTICATE").encode() + b"\r\n"

    def _logged_in(self, tag: str, address: str | None, how: str) -> str:
        emit(self.node, "imap_login", user=address, ok=address is not None)
        if address is None:
            refused = f"{tag} NO [AUTHENTICATIONFAILED] invalid credentials"
            if self.auth.failed(self.security):  # answered after its delay, then closed
                self.close()
                return f"{refused}\r\n* BYE too many failed logins"
            return refused
        if not self.store.open_session(address):  # RFC 5530 LIMIT
            return f"{tag} NO [LIMIT] too many sessions for this user"
        self.counted = True
        self.address = address
        self.mail = self.store.user(address)
        self.state = AUTH
        self.reader.max_literal = self.max_literal
        return f"{tag} OK [CAPABILITY {POST_AUTH_CAPS}] {how} completed"

    # -- authenticated (§6.3) ------------------------------------------------------------

    def _select(self, tag: str, args: list[Token], uid: bool, readonly: bool = False) -> str:
        name = canonical_mailbox(as_text(args[0]))
        resync: list[Token] | None = None
        if len(args) > 1:  # RFC 4466 §2.1 select parameters
            params = args[1]
            if len(args) > 2 or not isinstance(params, list):
                raise ParseError("bad SELECT parameters")
            resync = self._select_params(list(params))
        mail = self._user()
        if self.selected is not None:  # RFC 7162 §3.2.11
            self._untagged("OK [CLOSED] previous mailbox closed")
        self._deselect()
        info = mail.mailbox(name)
        if info is None:
            return f"{tag} NO [NONEXISTENT] no such mailbox"
        self.selected, self.readonly, self.state = name, readonly, SELECTED
        self.view = mail.messages(name)
        self.uids = [m.uid for m in self.view]
        before = info.recent_uid  # §6.3.2: EXAMINE leaves \Recent to the next SELECT
        if not readonly and self.view:
            before = mail.claim_recent(name, self.view[-1].uid)
        self.recent = {m.uid for m in self.view if m.uid > before}
        mail.watch(name, self)
        distinct = {m.flags for m in self.view}
        self.keywords = {f for flags in distinct for f in flags if not f.startswith("\\")}
        self._untagged(self._flags_response())
        self._untagged(f"{len(self.view)} EXISTS")
        self._untagged(f"{len(self.recent)} RECENT")
        unseen = next((i for i, m in enumerate(self.view, 1) if "\\Seen" not in m.flags), None)
        if unseen is not None:
            self._untagged(f"OK [UNSEEN {unseen}] first unseen")
        self._untagged(f"OK [UIDVALIDITY {info.uidvalidity}] UIDs valid")
        self._untagged(f"OK [UIDNEXT {info.uidnext}] predicted next UID")
        self._untagged(f"OK [HIGHESTMODSEQ {info.highestmodseq}] modseqs persist")  # §3.1.2.1
        permanent = "" if readonly else "\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*"
        self._untagged(f"OK [PERMANENTFLAGS ({permanent})] flags permitted")
        if resync is not None:
            self._resync(info.uidvalidity, resync)
        mode = "READ-ONLY" if readonly else "READ-WRITE"
        return f"{tag} OK [{mode}] {'EXAMINE' if readonly else 'SELECT'} completed"

    def _select_params(self, params: list[Token]) -> list[Token] | None:
        """CONDSTORE (RFC 7162 §3.1.8) and QRESYNC (uidvalidity modseq [known-uids
        [seq-match]]) (§3.2.5), which needs ENABLE QRESYNC first."""
        resync = None
        while params:
            word = as_text(params.pop(0)).upper()
            if word == "CONDSTORE":
                self.condstore = True
            elif word == "QRESYNC" and params and isinstance(params[0], list):
                if not self.qresync:
                    raise ParseError("QRESYNC parameter before ENABLE QRESYNC")
                resync = params.pop(0)
                if not 2 <= len(resync) <= 4 or not all(as_text(t).isdigit() for t in resync[:2]):  # type: ignore[arg-type]
                    raise ParseError("bad QRESYNC parameter")
            else:
                raise ParseError("unknown SELECT parameter")
        return resync  # type: ignore[return-value]

    def _resync(self, uidvalidity: int, resync: list[Token]) -> None:
        """RFC 7162 §3.2.5.2: what the client missed since its mod-sequence — the
        UIDs expunged (VANISHED (EARLIER)) and the messages changed (FETCH) — when
        its UIDVALIDITY is still right; the seq-match hint is not needed here."""
        if int(as_text(resync[0])) != uidvalidity:
            return
        since = int(as_text(resync[1]))
        last = max(self.uids[-1] if self.uids else 0, 1)
        known = parse_sequence_set(as_text(resync[2]), last) if len(resync) > 2 else None

        def wanted(uid: int) -> bool:
            return known is None or any(lo <= uid <= hi for lo, hi in known)

        assert self.selected is not None
        gone = [u for u in self._user().index.vanished_since(self.selected, since) if wanted(u)]
        if gone:
            self._untagged(f"VANISHED (EARLIER) {format_uid_set(gone)}")
        for i, m in enumerate(self.view):
            if m.modseq > since and wanted(m.uid):
                self.out.append(self._flag_update(i, m, with_uid=True))

    def _examine(self, tag: str, args: list[Token], uid: bool) -> str:
        return self._select(tag, args, uid, readonly=True)

    def _create(self, tag: str, args: list[Token], uid: bool) -> str:
        name = canonical_mailbox(as_text(args[0]).rstrip(SEPARATOR))
        use = None
        if len(args) > 1:  # RFC 6154 §3 CREATE-SPECIAL-USE: (USE (\\Drafts))
            params = args[1]
            if (
                len(args) > 2
                or not isinstance(params, list)
                or len(params) != 2
                or as_text(params[0]).upper() != "USE"
                or not isinstance(params[1], list)
            ):
                raise ParseError("bad CREATE parameters")
            known = {u.lower(): u for u in CREATABLE_USES}
            uses = [known.get(as_text(u).lower()) for u in params[1]]
            if len(uses) != 1 or uses[0] is None:
                return f"{tag} NO [USEATTR] only one of {' '.join(CREATABLE_USES)}"
            use = uses[0]
        mail = self._user()
        if mail.mailbox(name) is not None:
            return f"{tag} NO [ALREADYEXISTS] mailbox exists"
        try:
            mail.create(name, use)
        except BadFolderName:
            return f"{tag} NO [CANNOT] invalid mailbox name"
        return f"{tag} OK CREATE completed"

    def _delete(self, tag: str, args: list[Token], uid: bool) -> str:
        name = canonical_mailbox(as_text(args[0]))
        mail = self._user()
        if name == INBOX:
            return f"{tag} NO [CANNOT] INBOX cannot be deleted"
        if mail.mailbox(name) is None:
            return f"{tag} NO [NONEXISTENT] no such mailbox"
        if self.selected == name:
            self._deselect()
        mail.delete(name)
        return f"{tag} OK DELETE completed"

    def _rename(self, tag: str, args: list[Token], uid: bool) -> str:
        """§6.3.5: inferior names are renamed too."""
        old = canonical_mailbox(as_text(args[0]))
        new = canonical_mailbox(as_text(args[1]).rstrip(SEPARATOR))
        mail = self._user()
        if old == INBOX:
            return f"{tag} NO [CANNOT] renaming INBOX is not supported"
        if mail.mailbox(old) is None:
            return f"{tag} NO [NONEXISTENT] no such mailbox"
        if new == INBOX or mail.mailbox(new) is not None:
            return f"{tag} NO [ALREADYEXISTS] target exists"
        moves = [
            (m.name, new + m.name[len(old) :])
            for m in mail.mailboxes()
            if m.name == old or m.name.startswith(old + SEPARATOR)
        ]
        try:
            for src, dst in moves:
                mail.rename(src, dst)
        except BadFolderName:
            return f"{tag} NO [CANNOT] invalid mailbox name"
        if self.selected in dict(moves):
            self._deselect()
        return f"{tag} OK RENAME completed"

    def _subscribe(self, tag: str, args: list[Token], uid: bool, on: bool = True) -> str:
        self._user().index.subscribe(canonical_mailbox(as_text(args[0])), on)
        return f"{tag} OK {'SUBSCRIBE' if on else 'UNSUBSCRIBE'} completed"

    def _unsubscribe(self, tag: str, args: list[Token], uid: bool) -> str:
        return self._subscribe(tag, args, uid, on=False)

    def _list(self, tag: str, args: list[Token], uid: bool, lsub: bool = False) -> str:
        """§6.3.8-9, with RFC 5258 options, RFC 6154 SPECIAL-USE and RFC 5819 STATUS."""
        verb = "LSUB" if lsub else "LIST"
        if lsub and len(args) != 2:
            raise ParseError("LSUB needs a reference and a pattern")
        request = parse_list(args)
        if not lsub and request.patterns == [""] and not request.extended:
            self._untagged(f'LIST (\\Noselect) "{SEPARATOR}" ""')  # the delimiter (§6.3.8)
            return f"{tag} OK LIST completed"
        mail = self._user()
        boxes = {m.name: m for m in mail.mailboxes()}
        _status_items(request.status)  # a bad item is BAD before any LIST line
        for entry in list_entries(request, boxes, mail.index.subscriptions(), lsub):
            line = f'{verb} ({" ".join(entry.attributes)}) "{SEPARATOR}" '.encode()
            line += string(entry.name)
            if entry.child_info:
                line += b' ("CHILDINFO" ("SUBSCRIBED"))'  # RFC 5258 §3.5
            self._untagged(line)
            if request.status and entry.name in boxes:  # RFC 5819 §2: selectable ones
                self._untagged(self._status_line(entry.name, request.status))
        return f"{tag} OK {verb} completed"

    def _lsub(self, tag: str, args: list[Token], uid: bool) -> str:
        return self._list(tag, args, uid, lsub=True)

    def _status(self, tag: str, args: list[Token], uid: bool) -> str:
        name = canonical_mailbox(as_text(args[0]))
        wanted = args[1]
        if not isinstance(wanted, list) or not wanted:
            raise ParseError("STATUS needs a list of items")
        if self._user().mailbox(name) is None:
            return f"{tag} NO [NONEXISTENT] no such mailbox"
        self._untagged(self._status_line(name, wanted))
        return f"{tag} OK STATUS completed"

    def _status_line(self, name: str, wanted: list[Token]) -> bytes:
        """``STATUS name (ITEM n ...)`` (§7.2.4) of an existing mailbox; a bad item
        is a ParseError."""
        mail = self._user()
        info = mail.mailbox(name)
        assert info is not None
        total, unseen, recent = mail.index.counts(name, info.recent_uid)
        values = {
            "HIGHESTMODSEQ": info.highestmodseq,  # RFC 7162 §3.1.3
            "MESSAGES": total,
            "RECENT": recent,
            "UIDNEXT": info.uidnext,
            "UIDVALIDITY": info.uidvalidity,
            "UNSEEN": unseen,
        }
        keys = _status_items(wanted)
        self.condstore |= "HIGHESTMODSEQ" in keys
        items = " ".join(f"{key} {values[key]}" for key in keys)
        return b"STATUS " + string(name) + f" ({items})".encode()

    def _append(self, tag: str, args: list[Token], uid: bool) -> str:
        """§6.3.11 APPEND; MULTIAPPEND (RFC 3502): several messages, each with its own
        optional flags and date, stored all or none; BINARY's literal8 (RFC 3516);
        CATENATE (RFC 4469) builds a message from text and URLs."""
        name = canonical_mailbox(as_text(args[0]))
        messages: list[tuple[bytes, frozenset[str], float | None]] = []
        flags: frozenset[str] = frozenset()
        date: float | None = None
        extras = 0
        tokens = iter(args[1:])
        for token in tokens:
            if isinstance(token, str) and token.upper() == "CATENATE":
                try:
                    token = Literal(catenate(next(tokens, None), self._url_data))  # type: ignore[arg-type]
                except BadUrl as exc:
                    return f"{tag} NO [BADURL {exc.url}] cannot use this URL"
            if isinstance(token, Literal):
                messages.append((token, flags, date))
                flags, date, extras = frozenset(), None, 0
                continue
            extras += 1
            if extras > 2:
                raise ParseError("APPEND takes flags and a date before each message")
            if isinstance(token, list):
                flags = self._parse_flags(token)
            else:
                try:
                    date = parse_date_time(as_text(token))
                except ValueError:
                    raise ParseError("bad date-time") from None
        if not messages or extras:
            raise ParseError("APPEND needs a message literal")
        mail = self._user()
        info = mail.mailbox(name)
        if info is None:
            return f"{tag} NO [TRYCREATE] no such mailbox"
        uids = mail.append_many(name, messages)
        return f"{tag} OK [APPENDUID {info.uidvalidity} {format_uid_set(uids)}] APPEND completed"

    def _compress(self, tag: str, args: list[Token], uid: bool) -> str:
        """RFC 4978 §3: DEFLATE from the byte after this OK on, both ways."""
        if len(args) != 1 or as_text(args[0]).upper() != "DEFLATE":
            raise ParseError("COMPRESS supports DEFLATE only")
        if self.compress is not None or self.compress_next:
            return f"{tag} NO [COMPRESSIONACTIVE] DEFLATE is already active"
        self.compress_next = True
        return f"{tag} OK DEFLATE active"

    def _url_data(self, url: MessageUrl) -> bytes:
        """The octets an IMAP URL names, from this user's own mail (RFC 4469 §5)."""
        mail = self._user()
        name = canonical_mailbox(url.mailbox) if url.mailbox is not None else self.selected
        info = mail.mailbox(name) if name is not None else None
        if info is None or url.uidvalidity not in (None, info.uidvalidity):
            raise BadUrl("")  # catenate() names the URL
        found = [m for m in mail.messages(info.name, url.uid - 1)[:1] if m.uid == url.uid]
        try:
            raw = mail.read(info.name, found[0].path)
        except (IndexError, FileNotFoundError):
            raise BadUrl("") from None  # catenate() names the URL
        if not url.section:
            return raw
        try:
            (item,) = parse_items(f"BODY[{url.section}]")
        except ParseError:
            raise BadUrl("") from None  # catenate() names the URL
        return section(parse(raw), list(item.path), item.spec, list(item.fields))

    def _namespace(self, tag: str, args: list[Token], uid: bool) -> str:
        self._untagged(f'NAMESPACE (("" "{SEPARATOR}")) NIL NIL')  # RFC 2342 §5
        return f"{tag} OK NAMESPACE completed"

    def _enable(self, tag: str, args: list[Token], uid: bool) -> str:
        """RFC 5161 §3.1: list what got enabled; unknown names are ignored."""
        if not args:
            raise ParseError("ENABLE needs a capability")
        asked = {as_text(a).upper() for a in args}
        enabled = [name for name in ("CONDSTORE", "QRESYNC") if name in asked]
        self.condstore |= bool(enabled)  # RFC 7162 §3.2.3: QRESYNC implies CONDSTORE
        self.qresync |= "QRESYNC" in enabled
        self._untagged(" ".join(["ENABLED", *enabled]))
        return f"{tag} OK ENABLE completed"

    def _idle(self, tag: str, args: list[Token], uid: bool) -> None:
        """RFC 2177: untagged updates as they happen until the client says DONE."""
        self.idle_tag = tag
        self.out.append(b"+ idling\r\n")
        self._flush(allow_expunge=True)
        return None

    # -- selected (§6.4) -----------------------------------------------------------------

    def _check(self, tag: str, args: list[Token], uid: bool) -> str:
        return f"{tag} OK CHECK completed"

    def _close(self, tag: str, args: list[Token], uid: bool) -> str:
        if not self.readonly:
            self._expunge_deleted(None, report=False)
        self._deselect()
        return f"{tag} OK CLOSE completed"

    def _unselect(self, tag: str, args: list[Token], uid: bool) -> str:
        self._deselect()
        return f"{tag} OK UNSELECT completed"

    def _expunge(self, tag: str, args: list[Token], uid: bool) -> str:
        if self.readonly:
            return f"{tag} NO [READ-ONLY] mailbox is read-only"
        if uid:  # RFC 4315 §2.1: only the given UIDs
            self._expunge_deleted([self.uids[i] for i in self._resolve(args[0], True)], True)
        else:
            self._expunge_deleted(None, report=True)
        return f"{tag} OK EXPUNGE completed"

    def _expunge_deleted(self, uids: list[int] | None, report: bool) -> None:
        """§6.4.3: what is \\Deleted in the index now goes — a flag another session
        set or cleared a moment ago counts, this session's copy does not. Only
        messages this session knows of: one it was never told of is left for later."""
        assert self.selected is not None
        known = self.uids if uids is None else uids
        gone = self._user().expunge_deleted(self.selected, known, origin=self)
        self._forget([i for m in gone if (i := self._index_of(m.uid)) is not None], report)

    def _forget(self, indexes: list[int], report: bool) -> None:
        """Drop view entries (ascending indexes), with §7.4.1 EXPUNGE responses, or
        one VANISHED once QRESYNC is enabled (RFC 7162 §3.2.10)."""
        gone = []
        for i in reversed(indexes):
            gone.append(self.uids[i])
            self._drop(i)
            if report and not self.qresync:
                self._untagged(f"{i + 1} EXPUNGE")
        if report and self.qresync and gone:
            self._untagged(f"VANISHED {format_uid_set(sorted(gone))}")

    def _remove(self, indexes: list[int], report: bool) -> None:
        removed = [self.view[i] for i in indexes]
        self._forget(indexes, report)
        assert self.selected is not None
        self._user().expunge(self.selected, removed, origin=self)

    def _matching(self, criteria: list[Token]) -> tuple[SearchParser, list[int]]:
        """The view indexes (ascending) of the messages the criteria select; shared
        by SEARCH, SORT and THREAD."""
        last_uid = self.uids[-1] if self.uids else 0
        parser = SearchParser(criteria, len(self.view), last_uid, frozenset(self.saved))
        matches = parser.parse()
        found = []
        for i, m in enumerate(self.view):
            try:
                if matches(Candidate(i + 1, m, m.uid in self.recent, self._read)):
                    found.append(i)
            except FileNotFoundError:
                continue  # expunged by another session, not yet reported here
        if parser.modseq:  # RFC 7162 §3.1.5: SEARCH MODSEQ enables CONDSTORE
            self.condstore = True
        return parser, found

    def _search(self, tag: str, args: list[Token], uid: bool) -> str:
        options, criteria = parse_return(args)
        try:
            parser, indexes = self._matching(criteria)
        except ParseError:
            if options and "SAVE" in options:
                self.saved = set()  # RFC 5182 §2.1: a failed SAVE empties "$"
            raise
        found = [self.uids[i] if uid else i + 1 for i in indexes]
        highest = max((self.view[i].modseq for i in indexes), default=0) if parser.modseq else 0
        if options is None:
            result = " ".join(["SEARCH", *map(str, found)])
            if highest:
                result += f" (MODSEQ {highest})"
            self._untagged(result)
            return f"{tag} OK SEARCH completed"
        if "SAVE" in options:  # RFC 5182: kept as UIDs, so expunges cannot shift it
            self.saved = set(to_save(options, [self.uids[i] for i in indexes]))
        response = esearch(tag, uid, options, found, highest)
        if response is not None:
            self._untagged(response)
        return f"{tag} OK SEARCH completed"

    def _headers(self, indexes: list[int]) -> dict[int, Part]:
        """The parsed header of each message, for SORT and THREAD keys; a message
        another session expunged meanwhile is left out."""
        parts = {}
        for i in indexes:
            try:
                parts[i] = parse(split_message(self._read(self.view[i]))[0])
            except FileNotFoundError:
                continue
        return parts

    def _sort(self, tag: str, args: list[Token], uid: bool) -> str:
        """RFC 5256 §3: SORT (criteria) charset search-criteria."""
        criteria = parse_criteria(args[0])
        if as_text(args[1]).upper() not in CHARSETS:
            raise BadCharset(as_text(args[1]))
        _, indexes = self._matching(args[2:])
        parts = self._headers(indexes)
        ordered = sorted(
            parts,
            key=lambda i: sort_key(criteria, i + 1, self.view[i], lambda: parts[i]),
        )
        self._untagged(" ".join(["SORT", *(str(self.uids[i] if uid else i + 1) for i in ordered)]))
        return f"{tag} OK {'UID ' if uid else ''}SORT completed"

    def _thread(self, tag: str, args: list[Token], uid: bool) -> str:
        """RFC 5256 §4: THREAD algorithm charset search-criteria."""
        algorithm = as_text(args[0]).upper()
        if algorithm not in THREAD_ALGORITHMS:
            raise ParseError(f"unknown threading algorithm {algorithm[:20]}")
        if as_text(args[1]).upper() not in CHARSETS:
            raise BadCharset(as_text(args[1]))
        _, indexes = self._matching(args[2:])
        facts = []
        for i, part in self._headers(indexes).items():
            subject, is_reply = base_subject(part.headers.get("Subject"))
            refs = message_ids(part.headers.get("References"))
            ids = message_ids(part.headers.get("Message-ID"))
            facts.append(
                Facts(
                    number=self.uids[i] if uid else i + 1,
                    seq=i + 1,
                    date=sent_date(part, self.view[i].internaldate),
                    subject=subject,
                    is_reply=is_reply,
                    message_id=ids[0] if ids else None,
                    references=refs or message_ids(part.headers.get("In-Reply-To"))[:1],
                )
            )
        threads = ordered_subject(facts) if algorithm == "ORDEREDSUBJECT" else references(facts)
        self._untagged(f"THREAD {thread_list(threads)}".rstrip())
        return f"{tag} OK {'UID ' if uid else ''}THREAD completed"

    def _fetch_modifiers(self, token: Token, uid: bool) -> tuple[int, bool]:
        """``(CHANGEDSINCE n [VANISHED])``: VANISHED only for UID FETCH once QRESYNC
        is enabled (RFC 7162 §3.2.6)."""
        if not isinstance(token, list):
            raise ParseError("expected FETCH modifiers")
        rest = [t for t in token if not (isinstance(t, str) and t.upper() == "VANISHED")]
        vanished = len(rest) < len(token)
        if vanished and not (uid and self.qresync):
            raise ParseError("VANISHED needs UID FETCH and ENABLE QRESYNC")
        return self._modifier(rest, "CHANGEDSINCE"), vanished

    def _modifier(self, token: Token, name: str) -> int:
        """``(CHANGEDSINCE n)`` / ``(UNCHANGEDSINCE n)`` (RFC 7162 §3.1.3, §3.1.4);
        using either enables CONDSTORE."""
        if not isinstance(token, list) or len(token) != 2 or as_text(token[0]).upper() != name:
            raise ParseError(f"expected ({name} mod-sequence)")
        value = as_text(token[1])
        if not value.isdigit():
            raise ParseError("bad mod-sequence")
        self.condstore = True
        return int(value)

    def _fetch(self, tag: str, args: list[Token], uid: bool) -> str:
        if len(args) not in (2, 3):
            raise ParseError("FETCH needs a set and items")
        items = parse_items(args[1])
        since, vanished = self._fetch_modifiers(args[2], uid) if len(args) == 3 else (None, False)
        names = {i.name for i in items}
        if uid and "UID" not in names:
            items.insert(0, FetchItem("UID", label="UID"))  # §6.4.8
        if "MODSEQ" in names:
            self.condstore = True  # RFC 7162 §3.1: a CONDSTORE enabling command
        elif since is not None:
            items.append(FetchItem("MODSEQ", label="MODSEQ"))  # RFC 7162 §3.1.4.1
        indexes = self._resolve(args[0], uid)
        assert self.selected is not None
        mail = self._user()
        if since is not None:
            indexes = [i for i in indexes if self.view[i].modseq > since]
        if vanished and since is not None:  # RFC 7162 §3.2.6
            asked = parse_sequence_set(as_text(args[0]), self.uids[-1] if self.uids else 0)
            gone = [
                u
                for u in mail.index.vanished_since(self.selected, since)
                if any(lo <= u <= hi for lo, hi in asked)
            ]
            if gone:
                self._untagged(f"VANISHED (EARLIER) {format_uid_set(gone)}")
        # §6.4.5: reading the text sets \Seen; stored first, so the reply can show it
        seen: dict[int, frozenset[str]] = {}
        if not self.readonly and any(i.sets_seen for i in items):
            for i in indexes:
                m = self.view[i]
                if "\\Seen" not in m.flags:
                    seen[m.uid] = m.flags | {"\\Seen"}
            modseq = mail.set_flags(self.selected, seen, origin=self)
            for i in indexes:
                m = self.view[i]
                if m.uid in seen:
                    m.flags, m.modseq = seen[m.uid], modseq
        with_flags = items
        if "FLAGS" not in names:  # §6.4.5: report the flag change it caused
            with_flags = [*items, FetchItem("FLAGS", label="FLAGS")]
        if self.condstore and "MODSEQ" not in names and since is None:
            with_flags.append(FetchItem("MODSEQ", label="MODSEQ"))
        cached = [i.name for i in items if i.name in CACHED]
        cache: dict[tuple[int, str], bytes] = {}
        if cached and indexes:
            lo, hi = self.view[indexes[0]].uid, self.view[indexes[-1]].uid
            cache = mail.index.cached(self.selected, lo, hi)
        fresh: dict[tuple[int, str], bytes] = {}
        for i in indexes:
            m = self.view[i]
            known = {n: cache[m.uid, n] for n in cached if (m.uid, n) in cache}
            have = len(known)
            shown = m if m.uid not in self.recent else _with_recent(m)
            these = with_flags if m.uid in seen else items
            try:
                self.out.append(
                    render(i + 1, shown, these, functools.partial(self._read, m), known)
                )
            except FileNotFoundError:
                continue
            if len(known) > have:
                fresh.update({(m.uid, n): v for n, v in known.items() if (m.uid, n) not in cache})
        if fresh:
            mail.index.put_cached(self.selected, fresh)
        return f"{tag} OK {'UID ' if uid else ''}FETCH completed"

    def _parse_flags(self, tokens: list[Token]) -> frozenset[str]:
        flags = set()
        for t in tokens:
            text = as_text(t)
            if text.startswith("\\"):
                if text.lower() == "\\recent":
                    continue  # §2.3.2: only the server sets \Recent
                if text.lower() not in SYSTEM_FLAGS:
                    raise ParseError(f"unknown system flag {text[:20]}")
                text = SYSTEM_FLAGS[text.lower()]
            elif not text or any(c in text for c in '(){%*"]\\ '):
                raise ParseError("bad keyword")
            flags.add(text)
        return frozenset(flags)

    def _store(self, tag: str, args: list[Token], uid: bool) -> str:
        if self.readonly:
            return f"{tag} NO [READ-ONLY] mailbox is read-only"
        args = list(args)
        since = None
        if len(args) > 1 and isinstance(args[1], list):  # RFC 7162 §3.1.3
            since = self._modifier(args.pop(1), "UNCHANGEDSINCE")
        item = as_text(args[1]).upper()
        mode, _, silent = item.partition(".")
        if mode not in ("FLAGS", "+FLAGS", "-FLAGS") or silent not in ("", "SILENT"):
            raise ParseError(f"bad STORE item {item[:20]}")
        flag_tokens = args[2] if len(args) == 3 and isinstance(args[2], list) else args[2:]
        flags = self._parse_flags(flag_tokens)
        indexes = self._resolve(args[0], uid)
        assert self.selected is not None
        # RFC 3501 §6.4.6 on the flags as the index holds them now (one transaction),
        # so two sessions' STOREs on the same message both take effect
        result = self._user().update_flags(
            self.selected,
            [self.uids[i] for i in indexes],
            _FLAG_MODES[mode](flags),
            since,
            origin=self,
        )
        self._keywords_in(frozenset().union(*result.changed.values()))
        failed = []
        for i in indexes:
            m = self.view[i]
            if m.uid not in result.current:
                continue  # expunged by another session meanwhile, not yet reported
            m.flags, m.modseq = result.current[m.uid]
            if m.uid in result.failed:
                failed.append(m.uid if uid else i + 1)  # changed meanwhile: not stored
                continue
            changed = m.uid in result.changed
            # RFC 7162 §3.2: with CONDSTORE the new MODSEQ is sent even for .SILENT
            if not silent or (self.condstore and changed):
                self.out.append(self._flag_update(i, m, with_uid=uid, flags=not silent))
        if failed:
            return f"{tag} OK [MODIFIED {format_uid_set(failed)}] conditional STORE failed"
        return f"{tag} OK {'UID ' if uid else ''}STORE completed"

    def _copy(self, tag: str, args: list[Token], uid: bool, move: bool = False) -> str:
        verb = "MOVE" if move else "COPY"
        if move and self.readonly:
            return f"{tag} NO [READ-ONLY] mailbox is read-only"
        target = canonical_mailbox(as_text(args[1]))
        mail = self._user()
        info = mail.mailbox(target)
        if info is None:
            return f"{tag} NO [TRYCREATE] no such mailbox"
        indexes = self._resolve(args[0], uid)
        assert self.selected is not None
        try:  # §6.4.7: all or nothing, so read every message before writing one
            messages = [
                (self.view[i], mail.read(self.selected, self.view[i].path)) for i in indexes
            ]
        except FileNotFoundError:
            return f"{tag} NO [EXPUNGEISSUED] some of the messages were expunged"  # RFC 5530
        src = [m.uid for m, _ in messages]
        dst = mail.append_many(target, [(data, m.flags, m.internaldate) for m, data in messages])
        code = (
            f"[COPYUID {info.uidvalidity} {format_uid_set(src)} {format_uid_set(dst)}] "
            if src
            else ""
        )
        if move:  # RFC 6851 §4.3: COPYUID untagged, then the EXPUNGEs
            if code:
                self._untagged(f"OK {code}moved")
            self._remove(indexes, report=True)
            return f"{tag} OK {verb} completed"
        return f"{tag} OK {code}{verb} completed"

    def _move(self, tag: str, args: list[Token], uid: bool) -> str:
        return self._copy(tag, args, uid, move=True)


def _status_items(wanted: list[Token]) -> list[str]:
    """The STATUS item names (§6.3.10), upper-cased; an unknown one is a ParseError."""
    keys = [as_text(item).upper() for item in wanted]
    for key in keys:
        if key not in STATUS_ITEMS:
            raise ParseError(f"unknown STATUS item {key[:20]}")
    return keys


_FLAG_MODES: dict[str, Callable[[frozenset[str]], Callable[[frozenset[str]], frozenset[str]]]] = {
    "FLAGS": lambda given: lambda now: given,
    "+FLAGS": lambda given: lambda now: now | given,
    "-FLAGS": lambda given: lambda now: now - given,
}


def _with_recent(m: MessageInfo) -> MessageInfo:
    return MessageInfo(m.uid, m.path, m.size, m.internaldate, m.flags | {"\\Recent"}, m.modseq)


_ANY = (NOT_AUTH, AUTH, SELECTED)
_AUTHED = (AUTH, SELECTED)
_COMMANDS: dict[str, tuple[Callable[..., str | None], tuple[str, ...]]] = {
    "CAPABILITY": (ImapSession._capability, _ANY),
    "NOOP": (ImapSession._noop, _ANY),
    "LOGOUT": (ImapSession._logout, _ANY),
    "ID": (ImapSession._id, _ANY),
    "LOGIN": (ImapSession._login, (NOT_AUTH,)),
    "STARTTLS": (ImapSession._starttls, (NOT_AUTH,)),
    "AUTHENTICATE": (ImapSession._authenticate, (NOT_AUTH,)),
    "SELECT": (ImapSession._select, _AUTHED),
    "EXAMINE": (ImapSession._examine, _AUTHED),
    "CREATE": (ImapSession._create, _AUTHED),
    "DELETE": (ImapSession._delete, _AUTHED),
    "RENAME": (ImapSession._rename, _AUTHED),
    "SUBSCRIBE": (ImapSession._subscribe, _AUTHED),
    "UNSUBSCRIBE": (ImapSession._unsubscribe, _AUTHED),
    "LIST": (ImapSession._list, _AUTHED),
    "LSUB": (ImapSession._lsub, _AUTHED),
    "STATUS": (ImapSession._status, _AUTHED),
    "APPEND": (ImapSession._append, _AUTHED),
    "NAMESPACE": (ImapSession._namespace, _AUTHED),
    "COMPRESS": (ImapSession._compress, _AUTHED),
    "ENABLE": (ImapSession._enable, _AUTHED),
    "IDLE": (ImapSession._idle, _AUTHED),
    "CHECK": (ImapSession._check, (SELECTED,)),
    "CLOSE": (ImapSession._close, (SELECTED,)),
    "UNSELECT": (ImapSession._unselect, (SELECTED,)),
    "EXPUNGE": (ImapSession._expunge, (SELECTED,)),
    "SEARCH": (ImapSession._search, (SELECTED,)),
    "FETCH": (ImapSession._fetch, (SELECTED,)),
    "STORE": (ImapSession._store, (SELECTED,)),
    "COPY": (ImapSession._copy, (SELECTED,)),
    "MOVE": (ImapSession._move, (SELECTED,)),
    "SORT": (ImapSession._sort, (SELECTED,)),
    "THREAD": (ImapSession._thread, (SELECTED,)),
}
_UID_COMMANDS = {"FETCH", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE", "SORT", "THREAD"}
