"""The corpus reqlog's redaction is tested against: secrets of every promised shape, strings
that must survive untouched, and the false positives that are accepted.

``SECRETS`` is a list of ``(shape, text)``: ``text`` is a realistic fake secret as it appears in
logs (``Bearer <token>``, ``password=...``, a PEM block...). :func:`sensitive` gives the part of
it that must never be written (the token after ``Bearer``, the value after ``password=``...);
:func:`leaked` checks an output for it. Other test suites (the hypothesis suite that drives the
middleware) import ``SECRETS``: keep the name and the shape of its items.

tests/test_redaction.py places every secret in every placement (query string, free-text message,
exception message and traceback, header value, JSON body, form body, a string nested in a dict
under a plain key, a ``key=value`` log line) and counts what survives: zero for every shape in
every placement where it can occur (a header value cannot hold the line breaks of a PEM block).

The fakes are assembled from pieces at import time, so that the source holds no string that
secret scanners (or a push protection) would flag; none of them grants anything.
"""

from __future__ import annotations

import base64
from urllib.parse import unquote_plus

_B62 = "aB3dE5gH7jK9mN1pQ2rS4tU6vW8xY0zA"  # a fixed, varied alphabet to cut fakes from


def _fake(length: int, alphabet: str = _B62) -> str:
    return (alphabet * (length // len(alphabet) + 1))[:length]


_JWT = (
    "eyJ" + "hbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJ" + "zdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
_PEM_BODY = "MIIEow" + "IBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi" + "\n" + _fake(64) + "\n" + _fake(40)
_PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{_PEM_BODY}\n-----END RSA PRIVATE KEY-----"
_OPENSSH = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    + "b3BlbnNzaC1rZXktdjEAAAAA"
    + _fake(40)
    + "\n-----END OPENSSH PRIVATE KEY-----"
)

# (shape, text as it appears), and the part of it that must never be written.
_CORPUS: list[tuple[str, str, str]] = [
    ("jwt", _JWT, _JWT),
    ("bearer token", "Bearer " + "mF_9.B5f-4.1JqM" + _fake(12), "mF_9.B5f-4.1JqM" + _fake(12)),
    (
        "http basic credentials",
        "Basic " + base64.b64encode(b"ada:correct-horse-7").decode(),
        base64.b64encode(b"ada:correct-horse-7").decode(),
    ),
    ("aws access key id", "AK" + "IA" + "IOSFODNN7EXAMPL3", "AK" + "IA" + "IOSFODNN7EXAMPL3"),
    ("aws temporary key id", "AS" + "IA" + "Y34FZKBOKMUTVV7A", "AS" + "IA" + "Y34FZKBOKMUTVV7A"),
    ("github token", "gh" + "p_" + _fake(36), "gh" + "p_" + _fake(36)),
    (
        "github fine-grained token",
        "github" + "_pat_" + _fake(22) + "_" + _fake(59),
        "github" + "_pat_" + _fake(22) + "_" + _fake(59),
    ),
    ("gitlab token", "gl" + "pat-" + _fake(20), "gl" + "pat-" + _fake(20)),
    (
        "slack token",
        "xo" + "xb-" + "2468013579-1357924680-" + _fake(24),
        "xo" + "xb-" + "2468013579-1357924680-" + _fake(24),
    ),
    (
        "slack webhook",
        "https://hooks.slack" + ".com/services/T0" + _fake(8) + "/B0" + _fake(8) + "/" + _fake(24),
        "T0" + _fake(8) + "/B0" + _fake(8) + "/" + _fake(24),
    ),
    ("stripe secret key", "sk" + "_live_" + _fake(24), "sk" + "_live_" + _fake(24)),
    ("stripe restricted key", "rk" + "_live_" + _fake(24), "rk" + "_live_" + _fake(24)),
    ("stripe webhook secret", "wh" + "sec_" + _fake(32), "wh" + "sec_" + _fake(32)),
    ("google api key", "AI" + "za" + "Sy" + _fake(33), "AI" + "za" + "Sy" + _fake(33)),
    ("pem private key", _PEM, _PEM_BODY.split("\n")[0]),
    ("openssh private key", _OPENSSH, "b3BlbnNzaC1rZXktdjEAAAAA" + _fake(40)),
    ("card number, grouped", "4111 1111 1111 1111", "4111 1111 1111 1111"),
    ("card number, plain", "5555555555554444", "5555555555554444"),
    ("card number, amex with hyphens", "3782-822463-10005", "3782-822463-10005"),
    (
        "password in a url",
        "postgres://app:Sup3r-S3cret@db.internal:5432/orders",
        "Sup3r-S3cret",
    ),
    ("password=value", "password=Tr0ub4dor.3x", "Tr0ub4dor.3x"),
    ("api_key=value", "api_key=k-7f3a9c2e1b0d", "k-7f3a9c2e1b0d"),
    ('"key": "value" (JSON)', '"client_secret": "s3cr3t-v4lue-9z"', "s3cr3t-v4lue-9z"),
    ("'key': 'value' (repr)", "'refresh_token': 'rt-8c1d2e3f4a5b'", "rt-8c1d2e3f4a5b"),
    ("key: value (header line)", "X-Api-Key: ak-5d4c3b2a1f0e", "ak-5d4c3b2a1f0e"),
    (
        "environment variable",
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + _fake(10),
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + _fake(10),
    ),
]

#: (shape, secret as it appears in logs), one for every shape reqlog promises to redact.
SECRETS: list[tuple[str, str]] = [(shape, text) for shape, text, _ in _CORPUS]

_SENSITIVE = {text: core for _, text, core in _CORPUS}


def sensitive(secret: str) -> str:
    """The part of ``secret`` (an item of :data:`SECRETS`) that must never be written."""
    return _SENSITIVE.get(secret, secret)


def leaked(secret: str, output: str) -> bool:
    """Whether ``output`` shows ``secret``'s sensitive part: as is, URL-decoded, or with the
    escapes of a JSON or logfmt line (``\\n`` for a line break)."""
    core = sensitive(secret)
    escaped = core.replace("\n", "\\n")
    return any(
        candidate in text
        for text in (output, unquote_plus(output))
        for candidate in {core, escaped, core.replace("\n", "\\x0a")}
    )


#: Strings that must come out exactly as they went in: as keys (with a plain value), as values
#: under plain keys, in free text and in query strings.
NON_SECRETS: list[str] = [
    "secretary",
    "secretariat",
    "cookie_consent",
    "passwordless",
    "token_count",
    "max_tokens",
    "token_type",
    "tokenizer",
    "author",
    "authority",
    "authorization_endpoint",
    "keyboard",
    "primary_key",
    "public_key",
    "session_count",
    "spin",
    "shipping",
    "pinned",
    "japan",
    "oauth_provider",
    "bearer",
    "the token expired",
    "basic plan",
    "basic auth is disabled",
    "order 4111111111111112 shipped",  # fails the Luhn check
    "at 1714567890123 ms",  # epoch milliseconds
    "9f3b1c2d-4e5f-6071-8293-a4b5c6d7e8f9",
    "call +1 415 555 0100",
    "10.0.0.17:8080",
    "2024-05-01T12:00:00.123456Z",
    "https://shop.example.com/search?q=shoes&page=2&sort=price",
    "user=ada status=200 duration_ms=12.5",
    "ghp_short",
    "AKIA",
    "eyJ",
    "a.b.c",
    "-----BEGIN CERTIFICATE-----",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ann@host",
    "password reset link sent to ann@example.com",
]

#: What is redacted although it is no secret, and accepted: the price of finding secrets by
#: their neighbours. Each is (where it occurs, text, what the redactor makes of it) and a test
#: checks that this list is exactly what happens.
FALSE_POSITIVES: list[tuple[str, str, str]] = [
    # "bearer" followed by a word is read as a bearer token
    ("free text", "payable to bearer on demand", "payable to bearer [REDACTED] demand"),
    # a secret name followed by a colon is read as "name: value"
    ("free text", "invalid token: expired", "invalid token: [REDACTED]"),
    ("free text", "session: 5 minutes left", "session: [REDACTED] minutes left"),
    # a number of 13 to 19 digits starting 2-6 that passes the Luhn check is a card number
    ("free text", "order 4242424242424242 shipped", "order [REDACTED] shipped"),
    # keys holding a secret word, which only name a property of the secret
    ("key", "password_changed_at", "[REDACTED]"),
    ("key", "secret_question_id", "[REDACTED]"),
]
