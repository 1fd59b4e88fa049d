"""A request's queue terms (router/http/queue_terms.py): the API key's priority and
max_wait, lowered or shortened (never raised) by X-Priority and X-Max-Wait; bad
headers are 400s in the API's shape; the tenant is a digest, never the secret."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from router.catalogue.config import ApiKey
from router.catalogue.parse import ConfigError, parse_config
from router.http.app_keys import API_KEY
from router.http.errors import HTTPError
from router.http.queue_terms import key_terms, parse_max_wait, parse_priority, queue_terms, tenant_of

SECRET = "sk-team-0123456789abcdef"


def terms_of(headers: dict[str, str], key: ApiKey | None = None):
    request = make_mocked_request("POST", "/v1/chat/completions", headers=headers)
    if key is not None:
        request[API_KEY] = key
    return queue_terms(request)


@pytest.mark.parametrize(("text", "value"), [("high", 10), ("normal", 0), ("low", -10), (" LOW ", -10),
                                             ("5", 5), ("-20", -20), ("+3", 3)])
def test_priority_header_values(text: str, value: int) -> None:
    assert parse_priority(text) == value


@pytest.mark.parametrize("text", ["", " ", "urgent", "1.5", "ten", "true"])
def test_bad_priority_header_values(text: str) -> None:
    with pytest.raises(ValueError):
        parse_priority(text)


@pytest.mark.parametrize(("text", "value"), [("30", 30.0), ("0", 0.0), ("2.5", 2.5), (" 7 ", 7.0)])
def test_max_wait_header_values(text: str, value: float) -> None:
    assert parse_max_wait(text) == value


@pytest.mark.parametrize("text", ["", "-1", "nan", "inf", "30s", "soon"])
def test_bad_max_wait_header_values(text: str) -> None:
    with pytest.raises(ValueError):
        parse_max_wait(text)


def test_without_a_key_or_headers_a_request_is_normal_without_deadline_in_the_one_anonymous_tenant() -> None:
    terms = terms_of({})
    assert (terms.priority, terms.tenant, terms.max_wait) == (0, None, None)
    assert terms.deadline(100.0) is None


def test_a_request_may_lower_its_priority_never_raise_it() -> None:
    key = ApiKey(key=SECRET, priority="normal")
    assert terms_of({"X-Priority": "low"}, key).priority == -10
    assert terms_of({"X-Priority": "high"}, key).priority == 0  # taken as the key's
    assert terms_of({"X-Priority": "high"}).priority == 0  # no key: normal
    assert terms_of({"X-Priority": "-3"}, ApiKey(key=SECRET, priority="high")).priority == -3
    assert terms_of({}, ApiKey(key=SECRET, priority="7")).priority == 7


def test_a_request_may_shorten_its_keys_max_wait_never_lengthen_it() -> None:
    key = ApiKey(key=SECRET, max_wait=60.0)
    assert terms_of({}, key).max_wait == 60.0
    assert terms_of({"X-Max-Wait": "30"}, key).max_wait == 30.0
    assert terms_of({"X-Max-Wait": "600"}, key).max_wait == 60.0
    assert terms_of({"X-Max-Wait": "12.5"}).max_wait == 12.5  # without a key: no limit, shortened
    assert terms_of({"X-Max-Wait": "10"}).deadline(100.0) == 110.0


@pytest.mark.parametrize(("header", "value", "code"), [("X-Priority", "urgent", "invalid_priority"),
                                                        ("X-Priority", "", "invalid_priority"),
                                                        ("X-Max-Wait", "-5", "invalid_max_wait"),
                                                        ("X-Max-Wait", "1m", "invalid_max_wait")])
def test_a_bad_header_is_a_400_naming_the_header(header: str, value: str, code: str) -> None:
    with pytest.raises(HTTPError) as raised:
        terms_of({header: value})
    assert raised.value.status == 400
    assert raised.value.code == code
    assert header in raised.value.message


def test_the_tenant_is_a_digest_of_the_key_never_the_secret() -> None:
    a, b = ApiKey(key=SECRET), ApiKey(key=SECRET + "x", role="read")
    assert tenant_of(a) == tenant_of(ApiKey(key=SECRET, role="admin")) == key_terms(a).tenant
    assert tenant_of(a) != tenant_of(b)
    assert SECRET not in str(tenant_of(a)) and tenant_of(None) is None


def test_the_catalogue_reads_priority_and_max_wait_of_a_key() -> None:
    config = parse_config({"router": {"api_keys": [{"key": SECRET, "priority": "low", "max_wait": 30},
                                                   {"key": SECRET + "2", "priority": 5}]}, "models": {}})
    first, second = config.router.api_keys
    assert isinstance(first, ApiKey) and isinstance(second, ApiKey)
    assert key_terms(first).priority == -10 and key_terms(first).max_wait == 30.0
    assert key_terms(second).priority == 5 and key_terms(second).max_wait is None
    for bad in ({"priority": "urgent"}, {"priority": 1.5}, {"max_wait": -1}):
        with pytest.raises(ConfigError):
            parse_config({"router": {"api_keys": [{"key": SECRET, **bad}]}, "models": {}})
