"""Mail authentication at the relay: DKIM signing (RFC 6376) of its users' mail, SPF
(RFC 7208), DKIM, ARC (RFC 8617) and DMARC (RFC 7489) checks of incoming mail with an
Authentication-Results header (RFC 8601), forwarding with SRS and ARC sealing.

``inbound`` is the one entry point the relay calls; it imports the libraries doing the
work (dkimpy, pyspf, authres, srslib) only when a message needs them, so a relay with
nothing to sign or check pays nothing for them.
"""
