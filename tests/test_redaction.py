"""reqlog.Redactor: keys at any depth, query strings, headers, value patterns, copy on write."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import io
import logging
import re
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from starlette.datastructures import Headers
from structlog.typing import EventDict

import reqlog
from reqlog.processors import (
    BEARER_TOKEN,
    CARD_NUMBER,
    DEFAULT_KEYS,
    Redactor,
    luhn_valid,
    normalize_key,
)
from tests.conftest import LogOutput

R = "[REDACTED]"
JWT_TOKEN = (
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)


def redact(event: dict[str, Any], redactor: Redactor | None = None) -> dict[str, Any]:
    result = dict((redactor or Redactor())(None, "info", dict(event)))
    return result


def get(app: FastAPI, url: str, **kwargs: Any) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(
            app=app, client=("10.0.0.1", 123), raise_app_exceptions=False
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get(url, **kwargs)

    return asyncio.run(call())


# --- keys ---------------------------------------------------------------------------------------

SECRET_KEYS = [
    # passwords
    "password", "Password", "PASSWORD", "user_password", "userPassword", "new-password",
    "db.password", "password_confirmation", "passwd", "pwd", "passphrase",
    # secrets
    "secret", "client_secret", "clientSecret", "webhook-secret", "AWS_SECRET_ACCESS_KEY",
    # tokens: access, refresh, id, session, CSRF
    "token", "access_token", "accessToken", "refresh_token", "refreshToken", "id_token",
    "idToken", "session_token", "auth_token", "X-CSRF-Token", "csrf", "xsrf", "jwt",
    # API keys: one key however it is written
    "api_key", "apiKey", "API-Key", "X-Api-Key", "x_api_key", "apikey", "api key", "API.KEY",
    # authorization
    "authorization", "Authorization", "Proxy-Authorization", "auth",
    # cookies
    "cookie", "Cookie", "cookies", "set-cookie", "Set-Cookie", "set_cookie",
    # session ids
    "session", "session_id", "sessionId", "JSESSIONID", "PHPSESSID", "sid",
    # private keys and other key material, credentials
    "private_key", "privateKey", "ssh-private-key", "signing_key", "encryption_key",
    "aws_access_key", "credentials", "credential",
    # payment cards
    "card_number", "cardNumber", "credit_card", "creditCardNumber", "cc_number", "cvv", "CVV2",
    "cvc", "card_cvv", "security_code", "pan", "pin",
    # national IDs, bank accounts, one-time passwords
    "ssn", "SSN", "social_security_number", "customer_ssn", "iban", "account_number", "otp",
]  # fmt: skip

NOT_SECRET_KEYS = [
    "author", "authority", "token_count", "max_tokens", "token_type", "tokenizer", "keyboard",
    "cache_key", "primary_key", "monkey", "session_count", "spin", "shipping", "panel", "japan",
    "pinned", "description", "oauth_provider", "user_id", "email", "path", "status_code",
]  # fmt: skip


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_every_default_key_variant_is_redacted(key: str) -> None:
    assert redact({"event": "e", key: "s3cr3t"}) == {"event": "e", key: R}


@pytest.mark.parametrize("key", NOT_SECRET_KEYS)
def test_ordinary_keys_are_left_alone(key: str) -> None:
    assert redact({"event": "e", key: "value"}) == {"event": "e", key: "value"}


def test_key_normalisation() -> None:
    assert normalize_key("X-Api-Key") == "xapikey"
    assert {normalize_key(k) for k in ("API-Key", "api_key", "apiKey", "api.key", "api key")} == {
        "apikey"
    }
    assert normalize_key("user[password]") == "userpassword"


def test_default_keys_spell_their_matching_rule() -> None:
    # *word* contains, *word suffix, word exact: the documented notation.
    assert "*password*" in DEFAULT_KEYS
    assert "*token" in DEFAULT_KEYS
    assert "pin" in DEFAULT_KEYS


def test_a_secret_equal_to_a_known_clean_message_is_still_redacted() -> None:
    redactor = Redactor()
    assert redact({"event": "loading_item", "query": "a=1"}, redactor)["event"] == "loading_item"
    # Both strings are now cached as free of patterns; as secret values they still go.
    event = {"event": "e", "password": "loading_item", "token": "a=1"}
    assert redact(event, redactor) == {"event": "e", "password": R, "token": R}


def test_none_and_booleans_are_kept_under_secret_keys() -> None:
    event = {"event": "e", "password": None, "has_password": True, "api_key": False}
    assert redact(event) == event


def test_secret_key_hides_a_whole_structure() -> None:
    event = {"event": "e", "credentials": {"user": "ada", "pass": "x"}, "cookie": "a=1; b=2"}
    assert redact(event) == {"event": "e", "credentials": R, "cookie": R}


def test_repeated_values_under_a_secret_key_keep_their_count() -> None:
    event = {"event": "e", "set-cookie": ["a=1", "b=2"], "token": ("t", None, {"x": 1})}
    assert redact(event) == {"event": "e", "set-cookie": [R, R], "token": (R, None, R)}


def test_bytes_values_get_a_bytes_censor() -> None:
    assert redact({"event": "e", "token": b"abc"}) == {"event": "e", "token": R.encode()}


# --- depth, lists, tuples, copy on write --------------------------------------------------------


def test_nested_dicts_lists_and_tuples() -> None:
    event = {
        "event": "e",
        "payload": {
            "user": {"name": "ada", "password": "x"},
            "items": [{"sku": 1}, {"sku": 2, "apiKey": "k"}],
            "pairs": ({"refresh_token": "r"}, "plain"),
        },
    }
    assert redact(event) == {
        "event": "e",
        "payload": {
            "user": {"name": "ada", "password": R},
            "items": [{"sku": 1}, {"sku": 2, "apiKey": R}],
            "pairs": ({"refresh_token": R}, "plain"),
        },
    }


def test_never_mutates_the_callers_objects() -> None:
    payload = {
        "user": {"name": "ada", "password": "x"},
        "items": [{"sku": 1, "token": "t"}],
        "headers": [(b"authorization", b"Bearer abc")],
        "untouched": {"a": [1, 2]},
    }
    before = copy.deepcopy(payload)
    result = redact({"event": "e", "payload": payload})
    assert payload == before
    assert result["payload"] is not payload
    assert result["payload"]["untouched"] is payload["untouched"]  # only the path is copied
    assert result["payload"]["user"] == {"name": "ada", "password": R}


def test_an_event_without_secrets_is_not_copied() -> None:
    payload = {"user": {"name": "ada"}, "items": [{"sku": 1}], "pair": ("a", 1)}
    event = {"event": "loading_item", "payload": payload, "n": 1}
    result = redact(event)
    assert result == event
    assert result["payload"] is payload


def test_user_dict_passed_to_log_is_unchanged(log_output: LogOutput) -> None:
    log_output.configure()
    body = {"username": "ada", "password": "hunter2", "nested": [{"api_key": "k"}]}
    before = copy.deepcopy(body)
    reqlog.get_logger("app").info("signup", body=body)
    assert body == before
    [event] = log_output.events()
    assert event["body"] == {"username": "ada", "password": R, "nested": [{"api_key": R}]}


def test_depth_is_bounded() -> None:
    deep: Any = {"leaf": "x"}
    for _ in range(40):
        deep = {"down": deep}
    result = redact({"event": "e", "deep": deep}, Redactor(max_depth=10))
    node = result["deep"]
    for _ in range(9):
        node = node["down"]
    assert node == {"down": R}


def test_dataclasses_are_redacted_like_dicts() -> None:
    @dataclasses.dataclass
    class Login:
        user: str
        password: str

    login = Login("ada", "hunter2")
    assert redact({"event": "e", "login": login})["login"] == {"user": "ada", "password": R}
    assert login.password == "hunter2"


# --- query strings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("q=shoes&token=abc", f"q=shoes&token={R}"),
        ("token=a&q=1&token=b", f"token={R}&q=1&token={R}"),  # repeated
        ("api%5Fkey=abc&%74oken=x", f"api%5Fkey={R}&%74oken={R}"),  # percent-encoded names
        ("api+key=abc&x=1", f"api+key={R}&x=1"),  # + is a space in a name
        ("API-Key=abc", f"API-Key={R}"),
        ("user[password]=p&user[name]=ada", f"user[password]={R}&user[name]=ada"),
        ("token_count=3&max_tokens=5", "token_count=3&max_tokens=5"),
        ("token&token=", "token&token="),  # nothing to hide
        ("", ""),
        (f"t={JWT_TOKEN}&page=2", f"t={R}&page=2"),  # value patterns too
    ],
)
def test_query_strings(query: str, expected: str) -> None:
    assert redact({"event": "e", "query": query})["query"] == expected


def test_query_in_the_access_event(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware)

    @app.get("/search")
    async def search() -> dict[str, str]:
        return {}

    get(app, "/search?q=shoes&token=abc&api%5Fkey=k")
    [event] = log_output.access()
    assert event["query"] == f"q=shoes&token={R}&api%5Fkey={R}"


# --- headers ------------------------------------------------------------------------------------


def test_header_mapping() -> None:
    headers = {"Authorization": "Bearer abc", "Cookie": "sid=1", "Accept": "application/json"}
    assert redact({"event": "e", "request_headers": headers})["request_headers"] == {
        "Authorization": R,
        "Cookie": R,
        "Accept": "application/json",
    }


def test_starlette_headers() -> None:
    headers = Headers({"authorization": "Bearer abc", "x-api-key": "k", "accept": "*/*"})
    result = redact({"event": "e", "headers": headers})["headers"]
    assert result == {"authorization": R, "x-api-key": R, "accept": "*/*"}


def test_asgi_header_lists() -> None:
    raw = [(b"authorization", b"Bearer abc"), (b"cookie", b"a=b"), (b"accept", b"*/*")]
    result = redact({"event": "e", "headers": raw})["headers"]
    assert result == [(b"authorization", R.encode()), (b"cookie", R.encode()), (b"accept", b"*/*")]
    assert raw[0] == (b"authorization", b"Bearer abc")
    text_pairs = [("Set-Cookie", "sid=1"), ("Content-Type", "text/plain")]
    assert redact({"event": "e", "headers": text_pairs})["headers"] == [
        ("Set-Cookie", R),
        ("Content-Type", "text/plain"),
    ]


def test_a_plain_list_of_two_words_is_not_a_pair() -> None:
    assert redact({"event": "e", "tags": ["token", "count"]})["tags"] == ["token", "count"]


# --- value patterns -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("auth with Bearer abc.DEF-123_~+/= failed", f"auth with Bearer {R} failed"),
        ("header bearer xyz", f"header bearer {R}"),
        (f"token {JWT_TOKEN} expired", f"token {R} expired"),
        ("card 4111 1111 1111 1111 declined", f"card {R} declined"),
        ("card 4111-1111-1111-1111", f"card {R}"),
        ("pan=5555555555554444;", f"pan={R};"),
        ("card 4111111111111112 declined", "card 4111111111111112 declined"),  # not Luhn-valid
        ("at 1714567890123 ms", "at 1714567890123 ms"),  # epoch milliseconds
        ("order 12345 shipped", "order 12345 shipped"),
        ("connect postgres://app:hunter2@db:5432/x", f"connect postgres://app:{R}@db:5432/x"),
        ("GET https://a/x?q=1&api_key=k&page=2", f"GET https://a/x?q=1&api_key={R}&page=2"),
        ("nothing to see", "nothing to see"),
    ],
)  # fmt: skip
def test_value_patterns_in_free_text(text: str, expected: str) -> None:
    assert redact({"event": text})["event"] == expected
    assert redact({"event": "e", "error_message": text})["error_message"] == expected


def test_patterns_do_not_touch_other_fields() -> None:
    # Only free text is searched: IDs and paths are never rewritten by a pattern.
    event = {"event": "e", "order_id": "4111111111111111"}
    assert redact(event) == event


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")


def test_stdlib_messages_are_redacted(log_output: LogOutput) -> None:
    log_output.configure()
    logging.getLogger("thirdparty").warning("calling with %s", "Bearer s3cr3t-token")
    [event] = log_output.events()
    assert event["event"] == f"calling with Bearer {R}"


def test_exception_text_is_redacted_in_json(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware)

    @app.get("/pay")
    async def pay() -> None:
        msg = "card 4111 1111 1111 1111 rejected for Bearer abc123"
        raise ValueError(msg)

    assert get(app, "/pay").status_code == 500
    [event] = log_output.access()
    expected = f"card {R} rejected for Bearer {R}"
    assert event["error_message"] == expected
    assert event["exception"][0]["exc_value"] == expected
    assert "4111" not in orjson.dumps(event).decode()


@pytest.mark.parametrize("fmt", ["console", "logfmt"])
def test_exception_text_is_redacted_in_text_formats(fmt: Any) -> None:
    stream = io.StringIO()
    reqlog.configure(output=stream, format=fmt)
    log = reqlog.get_logger("app")
    try:
        msg = f"token {JWT_TOKEN} rejected"
        raise RuntimeError(msg)
    except RuntimeError:
        log.exception("payment_failed")
    reqlog.flush()
    text = stream.getvalue()
    assert "RuntimeError: token [REDACTED] rejected" in text.replace("\\x0a", "\n")
    assert JWT_TOKEN not in text
    assert "Traceback (most recent call last)" in text.replace("\\x0a", "\n")


def test_stdlib_exception_is_redacted(log_output: LogOutput) -> None:
    log_output.configure()
    try:
        msg = "could not reach postgres://app:hunter2@db/orders"
        raise ConnectionError(msg)
    except ConnectionError:
        logging.getLogger("db").exception("connect failed")
    [event] = log_output.events()
    assert event["exception"][0]["exc_value"] == f"could not reach postgres://app:{R}@db/orders"


# --- configuration ------------------------------------------------------------------------------


def test_extra_keys_add_to_the_defaults() -> None:
    redactor = Redactor(extra_keys=["tenant-signature", "*_pin_code"])
    event = {"event": "e", "tenantSignature": "s", "card_pin_code": 1, "password": "p", "x": 1}
    assert redact(event, redactor) == {
        "event": "e",
        "tenantSignature": R,
        "card_pin_code": R,
        "password": R,
        "x": 1,
    }


def test_keys_replace_the_defaults() -> None:
    redactor = Redactor(keys=["*internal*"])
    event = {"event": "e", "password": "p", "my_internal_note": "n"}
    assert redact(event, redactor) == {"event": "e", "password": "p", "my_internal_note": R}


def test_patterns_replace_and_extend() -> None:
    none = Redactor(patterns=[])
    assert redact({"event": "Bearer abc"}, none) == {"event": "Bearer abc"}
    extra = Redactor(extra_patterns=[r"ORD-\d+", re.compile(r"pin=(?P<secret>\d+)")])
    assert redact({"event": "ORD-991 pin=1234 Bearer abc"}, extra) == {
        "event": f"{R} pin={R} Bearer {R}"
    }
    only_bearer = Redactor(patterns=[BEARER_TOKEN])
    assert redact({"event": "Bearer abc 4111111111111111"}, only_bearer) == {
        "event": f"Bearer {R} 4111111111111111"
    }
    only_cards = Redactor(patterns=[CARD_NUMBER])
    assert redact({"event": "4111111111111111 4111111111111112"}, only_cards) == {
        "event": f"{R} 4111111111111112"
    }


def test_censor() -> None:
    redactor = Redactor(censor="***")
    assert redact({"event": "e", "token": "t", "query": "token=1"}, redactor) == {
        "event": "e",
        "token": "***",
        "query": "token=***",
    }


def test_public_helpers() -> None:
    redactor = Redactor()
    body = {"password": "p", "name": "ada"}
    assert redactor.redact(body) == {"password": R, "name": "ada"}
    clean = {"name": "ada", "tags": ["a"]}
    assert redactor.redact(clean) is clean
    assert redactor.redact_query("a=1&token=2") == f"a=1&token={R}"
    assert redactor.redact_text("Bearer x") == f"Bearer {R}"
    assert redactor.is_secret_key("X-Api-Key")
    assert not redactor.is_secret_key("author")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keys": "password"}, "keys"),
        ({"extra_keys": [1]}, "extra_keys"),
        ({"keys": ["**"]}, "keys"),
        ({"patterns": ["("]}, "patterns"),
        ({"extra_patterns": [r"x*"]}, "empty string"),
        ({"patterns": "Bearer"}, "patterns"),
        ({"censor": 1}, "censor"),
        ({"max_depth": 0}, "max_depth"),
    ],
)
def test_redactor_validates_its_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Redactor(**kwargs)


def test_redaction_is_on_by_default(log_output: LogOutput) -> None:
    log_output.configure()
    reqlog.get_logger("app").info("login", password="hunter2")
    assert log_output.events()[0]["password"] == R


def test_redact_false_turns_it_off(log_output: LogOutput) -> None:
    log_output.configure(redact=False)
    reqlog.get_logger("app").info("login Bearer abc", password="hunter2")
    [event] = log_output.events()
    assert (event["event"], event["password"]) == ("login Bearer abc", "hunter2")


def test_configure_with_a_custom_redactor(log_output: LogOutput) -> None:
    log_output.configure(redact=Redactor(extra_keys=["national_id"], censor="<hidden>"))
    reqlog.get_logger("app").info("kyc", national_id="X1", password="p", name="ada")
    [event] = log_output.events()
    assert (event["national_id"], event["password"], event["name"]) == (
        "<hidden>",
        "<hidden>",
        "ada",
    )


@pytest.mark.parametrize("value", ["yes", 1, None, Redactor])
def test_configure_rejects_other_redact_values(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^redact: "):
        reqlog.configure(output=io.BytesIO(), redact=value)


def test_a_field_added_by_a_user_processor_is_redacted(log_output: LogOutput) -> None:
    def add_key(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict["upstream_api_key"] = "k-123"
        return event_dict

    log_output.configure(processors=[add_key])
    reqlog.get_logger("app").info("called")
    assert log_output.events()[0]["upstream_api_key"] == R


def test_bound_context_is_redacted(log_output: LogOutput) -> None:
    log_output.configure()
    app = FastAPI()
    app.add_middleware(reqlog.RequestLoggingMiddleware)

    @app.get("/")
    async def index() -> dict[str, str]:
        reqlog.bind(session_id="abc", tenant="acme")
        return {}

    get(app, "/")
    [event] = log_output.access()
    assert (event["session_id"], event["tenant"]) == (R, "acme")
