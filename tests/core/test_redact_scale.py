"""The supervisor's Redactor at many accounts: every line is still masked exactly as one
search per secret would mask it, with the per-secret search skipped for a line holding
no secret's first characters; ``reach`` is O(1) (asked by each child's pipes)."""

from __future__ import annotations

import random

from multirun.core.redact import MASK, MIN_SECRET_LEN, Redactor, mask_fields


def one_search_per_secret(redactor: Redactor, text: str) -> str:
    """What the Redactor did before the prefilter (the reference)."""
    for secret in redactor.secrets:
        if len(secret) >= MIN_SECRET_LEN and secret in text:
            text = text.replace(secret, MASK)
    for short in redactor._short:
        text = short.sub(MASK, text)
    return mask_fields(text)


def test_masking_is_unchanged_by_the_prefilter() -> None:
    rng = random.Random(7)
    secrets = [f"key-{i:03d}-{rng.randrange(10**6):06d}" for i in range(300)]
    secrets += ["abcd", "abcdefgh", "xyz", "bcde", "zz-top-secret"]
    redactor = Redactor(secrets)
    alphabet = "abcdefghxyz -0123456789"
    for _ in range(2000):
        words = [
            rng.choice(secrets)
            if rng.random() < 0.2
            else "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
            for _ in range(rng.randrange(0, 8))
        ]
        text = rng.choice(["", " ", "-"]).join(words)
        assert redactor(text) == one_search_per_secret(redactor, text), text


def test_a_line_with_a_secret_is_masked_and_one_without_kept() -> None:
    redactor = Redactor([f"bench-key-{i:03d}" for i in range(500)])
    assert redactor("sent bench-key-042 and bench-key-499") == f"sent {MASK} and {MASK}"
    line = "INFO [acct-123] account acct-123: random on BTCUSD every 5s"
    assert redactor(line) == line
    assert redactor("") == "" and redactor("abc") == "abc"


def test_reach_is_the_longest_secret_but_one() -> None:
    assert Redactor(["abcd", "abcdefgh", "xy"]).reach == 7
    assert Redactor([]).reach == 0
