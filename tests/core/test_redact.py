"""Every way a secret could leak into text, tried against the one module that masks them."""

from __future__ import annotations

import logging

import pytest

from multirun.core.redact import (
    FRAGMENT_LEN,
    MASK,
    MAX_LINE,
    LineSplitter,
    RedactingFilter,
    Redactor,
    Secret,
    install_log_redaction,
    mask_fields,
)

KEY = "k3y-ABCDEF0123456789"
TOKEN = "tok-9f8e7d6c5b4a"


def test_a_secret_never_shows_itself() -> None:
    secret = Secret(KEY)
    assert KEY not in str(secret) and KEY not in repr(secret) and KEY not in f"{secret!s}"
    assert secret.masked() == MASK
    assert secret.reveal() == KEY
    assert secret == Secret(KEY) and hash(secret) == hash(Secret(KEY))
    assert not Secret("")


def test_the_whole_key_is_masked_wherever_it_appears() -> None:
    redact = Redactor([KEY])
    assert redact(f"key {KEY} and again:{KEY}!") == f"key {MASK} and again:{MASK}!"


def test_longest_secret_first_so_a_secret_containing_another_is_masked_whole() -> None:
    redact = Redactor(["abcd1234", "abcd1234-more", ""])
    assert redact("x abcd1234-more and abcd1234") == f"x {MASK} and {MASK}"


def test_short_secrets_are_masked_only_as_whole_words() -> None:
    redact = Redactor(["ab"])
    assert redact("ab cab about ab.") == f"{MASK} cab about {MASK}."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "GET /v1/balance?user=u&api_key=SECRET&token=T0K",
            f"GET /v1/balance?user=u&api_key={MASK}&token={MASK}",
        ),
        ('{"res": {"token": "abcDEF123"}}', f'{{"res": {{"token": "{MASK}"}}}}'),
        ("{'api_key': 'abc123'} token='xyz'", f"{{'api_key': '{MASK}'}} token='{MASK}'"),
        ("API_KEY=zzz", f"API_KEY={MASK}"),
        ("a token was renewed; tokens=3", "a token was renewed; tokens=3"),
    ],
)
def test_secret_fields_are_masked_even_when_the_value_is_unknown(text: str, expected: str) -> None:
    assert mask_fields(text) == expected
    assert Redactor()(text) == expected


def test_the_session_token_as_a_parameter_value_is_masked() -> None:
    redact = Redactor([KEY, TOKEN])
    line = f"requests: params={{'user': 'u', 'x': '{TOKEN}'}}"
    assert TOKEN not in redact(line)


def test_server_text_masks_a_fragment_of_the_key_and_fits_one_line() -> None:
    redact = Redactor([KEY])
    echoed = f"invalid key prefix {KEY[:12]}\nsee docs"
    clean = redact.server_text(echoed)
    assert KEY[:FRAGMENT_LEN] not in clean and "\n" not in clean
    assert clean == f"invalid key prefix {MASK} see docs"
    assert len(redact.server_text("x" * 500)) == 160
    # Fewer than FRAGMENT_LEN characters of the key are ordinary text.
    assert redact.server_text(f"id {KEY[:5]}") == f"id {KEY[:5]}"


def test_a_key_split_across_a_line_cut_is_masked_whole() -> None:
    split = LineSplitter([KEY], max_line=32)
    data = ("x" * 28 + KEY + "y" * 40).encode()
    lines = split.feed(data) + split.flush()
    assert all(KEY[:4] not in line or MASK in line for line in lines)
    assert KEY not in "".join(lines)
    joined = "".join(lines)
    assert MASK in joined and "k3y-ABCD" not in joined


def test_without_secrets_a_long_line_is_cut_exactly_at_max_line() -> None:
    split = LineSplitter()
    lines = split.feed(b"a" * (MAX_LINE + 10))  # no newline yet: a line still arriving
    assert [len(x) for x in lines] == [MAX_LINE]
    assert [len(x) for x in split.feed(b"\nnext\n")] == [10, 4]


def test_urllib3_records_lose_their_query_secrets() -> None:
    install_log_redaction(["test.redact.urls"])
    install_log_redaction(["test.redact.urls"])  # once only
    logger = logging.getLogger("test.redact.urls")
    assert sum(isinstance(f, RedactingFilter) for f in logger.filters) == 1
    record = logging.LogRecord(
        "test.redact.urls", logging.DEBUG, __file__, 1, "GET %s", (f"/s?api_key={KEY}",), None
    )
    assert logger.filters[0].filter(record)
    assert KEY not in record.getMessage() and MASK in record.getMessage()


@pytest.mark.parametrize(
    "echo",
    [
        lambda key: key[3:10],  # 7 characters
        lambda key: key[5:11],  # 6: the shortest run masked
        lambda key: key[2:12].lower(),
        lambda key: key[4:11].upper(),
        lambda key: key[1:9].swapcase(),
    ],
)
def test_server_text_masks_six_characters_of_a_key_in_any_case(echo) -> None:
    # A server echoing short fragments of the key (lower-cased variants too) must not get
    # them into logs or status.json: issue 23, case 13.
    assert FRAGMENT_LEN == 6
    fragment = echo(KEY)
    clean = Redactor([KEY]).server_text(f"bad key {fragment} for user")
    assert clean == f"bad key {MASK} for user", fragment
