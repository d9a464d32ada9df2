"""The mail store node: LMTP in, IMAP and POP3 out, over Maildir++ and a SQLite index.

server.py        asyncio listeners; pumps bytes into the sans-IO sessions
lmtp.py          aiosmtpd LMTP handler: trace headers, durable copy, RFC 2033 replies
maildir.py       Maildir++ files (LF on disk, CRLF served): tmp -> fsync -> new
index.py         SQLite rows: UIDVALIDITY/UIDNEXT, UIDs, flags, sizes, expunged UIDs
mailstore.py     a user's mail = maildir + index + change feed to open sessions
pop3.py          POP3 state machine (sans-IO)
imap_parser.py   IMAP command reader (literals) and tokenizer (sans-IO)
imap_session.py  IMAP state machine (sans-IO)
imap_fetch.py    FETCH items; imap_mime.py MIME tree, ENVELOPE, BODYSTRUCTURE
imap_search.py   SEARCH criteria, ESEARCH; imap_wire.py IMAP output syntax
imap_sort.py     SORT keys; imap_thread.py THREAD; imap_list.py LIST/LSUB options
imap_catenate.py CATENATE URLs; imap_compress.py COMPRESS=DEFLATE
auth.py          logins and SASL PLAIN; security.py TLS state of a connection
"""
