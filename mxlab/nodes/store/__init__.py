"""The mail store node: LMTP in, IMAP and POP3 out, over Maildir++ and a SQLite index.

server.py        asyncio listeners; pumps bytes into the sans-IO sessions
lmtp.py          aiosmtpd LMTP handler: trace headers, durable copy, RFC 2033 replies
maildir.py       Maildir++ files: tmp -> fsync -> new, folders as .Name
index.py         SQLite rows: UIDVALIDITY/UIDNEXT, UIDs, flags, sizes
mailstore.py     a user's mail = maildir + index + change feed to open sessions
pop3.py          POP3 state machine (sans-IO)
imap_parser.py   IMAP command reader (literals) and tokenizer (sans-IO)
imap_session.py  IMAP state machine (sans-IO)
imap_fetch.py    FETCH items; imap_mime.py MIME tree, ENVELOPE, BODYSTRUCTURE
imap_search.py   SEARCH criteria; imap_wire.py IMAP output syntax
auth.py          logins and SASL PLAIN; security.py TLS state of a connection
"""
