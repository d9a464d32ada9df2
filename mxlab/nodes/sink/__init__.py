"""The SMTP sink node: accepts any recipient and keeps every message for checks."""
