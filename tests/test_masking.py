"""Masking secret values in data, text and log records."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attune_actors.kv import MASK, Masker, MaskingFilter, default_masker

SECRET = "hunter2-secret"


def test_an_empty_masker_returns_its_input_untouched() -> None:
    masker = Masker()
    data = {"a": [1, "text", {"b": ("x", None)}]}
    assert not masker
    assert masker.mask(data) is data
    text = "nothing to hide"
    assert masker.mask_text(text) is text


def test_nested_structures_are_masked_in_a_copy() -> None:
    masker = Masker([SECRET])
    untouched = {"deep": ["no", "secret", "here"]}
    data = {
        "token": SECRET,
        "header": f"Bearer {SECRET}",
        "list": [1, f"x{SECRET}y", (SECRET, 2)],
        SECRET: "as a key",
        "untouched": untouched,
    }
    masked = masker.mask(data)
    assert masked == {
        "token": MASK,
        "header": "Bearer ***",
        "list": [1, "x***y", (MASK, 2)],
        MASK: "as a key",
        "untouched": untouched,
    }
    assert masked["untouched"] is untouched  # parts without secrets are shared, not copied
    assert data["token"] == SECRET  # the input is not modified
    plain = {"a": ["b", ("c",)]}
    assert masker.mask(plain) is plain
    assert bool(masker)


def test_short_empty_and_blank_values_are_not_masked() -> None:
    masker = Masker(["", "ab", "  ", "   ", None, True, False, 12])
    assert not masker
    assert masker.mask_text("ab 12 true") == "ab 12 true"
    masker.add("abc")
    assert masker.mask_text("xabcx ab") == "x***x ab"


def test_numbers_are_masked_as_whole_values_and_in_text() -> None:
    masker = Masker([1234567])
    assert masker.mask({"pin": 1234567, "text": "pin is 1234567", "other": 7, "flag": True}) == {
        "pin": MASK,
        "text": "pin is ***",
        "other": 7,
        "flag": True,
    }
    masker.add("314159")  # a string secret also masks the same number
    assert masker.mask([314159, 3.5]) == [MASK, 3.5]


def test_structured_secrets_mask_their_leaves() -> None:
    masker = Masker()
    masker.add({"user": "admin-user", "password": SECRET, "port": 5432, "tls": True, "x": "ab"})
    assert masker.mask_text(f"login admin-user:{SECRET}@db:5432") == "login ***:***@db:***"
    assert masker.mask_text("user password tls True ab") == "user password tls True ab"


def test_the_longest_of_overlapping_secrets_is_masked_whole() -> None:
    masker = Masker(["abc", "abcdef"])
    assert masker.mask_text("_abcdef_abc_") == "_***_***_"


def test_regex_characters_in_secrets_are_literal() -> None:
    masker = Masker(["a.b*c(d"])
    assert masker.mask_text("a.b*c(d aXbbbc(d") == "*** aXbbbc(d"


def test_escaped_forms_are_masked_in_json_and_repr_text() -> None:
    secret = "quote\"back\\slash'tick"
    masker = Masker([secret])
    for text in (json.dumps({"p": secret}), repr({"p": secret}), str([secret])):
        masked = masker.mask_text(text)
        assert "quote" not in masked
        assert "slash" not in masked


def test_multi_line_secrets_are_masked_line_by_line() -> None:
    key = "-----BEGIN KEY-----\nMIIBVgIBADANBgkqhkiG\n9w0BAQEFAASCAUAwggE8\n-----END KEY-----\n"
    masker = Masker([key])
    assert masker.mask_text(f"key:\n{key}") == "key:\n***"
    assert "MIIBVgIBADANBgkqhkiG" not in masker.mask_text("line MIIBVgIBADANBgkqhkiG only")


def test_repr_never_shows_secrets() -> None:
    masker = Masker([SECRET])
    assert SECRET not in repr(masker)


def test_default_masker_is_one_per_process() -> None:
    assert default_masker() is default_masker()
    assert MaskingFilter().masker is default_masker()


@given(
    secret=st.text(st.characters(exclude_characters="*"), min_size=3, max_size=12),
    parts=st.lists(st.text(st.characters(exclude_characters="*"), max_size=8), max_size=6),
)
def test_masked_text_never_contains_the_secret(secret: str, parts: list[str]) -> None:
    masker = Masker([secret])
    text = secret.join(parts) + secret
    assert secret not in masker.mask_text(text)
    assert all(secret not in s for s in masker.mask([*parts, secret]))


def test_adding_while_masking_from_other_threads() -> None:
    masker = Masker()
    secrets = [f"secret-number-{i:03d}" for i in range(200)]
    start = threading.Barrier(2)

    def add_all() -> None:
        start.wait()
        for s in secrets:
            masker.add(s)

    def mask_all() -> None:
        start.wait()
        for s in secrets:
            assert masker.mask_text(f"<{s}>") in (f"<{s}>", "<***>")

    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(add_all), pool.submit(mask_all)]:
            future.result()
    assert masker.mask(secrets) == [MASK] * len(secrets)


# --- log records ----------------------------------------------------------------------------------


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, io.StringIO, Masker]]:
    masker = Masker()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(MaskingFilter(masker))
    logger = logging.getLogger("test_masking.parent")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, stream, masker
    finally:
        logger.removeHandler(handler)


def test_log_messages_and_arguments_are_masked(
    log: tuple[logging.Logger, io.StringIO, Masker],
) -> None:
    logger, stream, masker = log
    logger.info("before %s", SECRET)  # not yet a secret
    masker.add(SECRET)
    logger.info("token %s in %r", SECRET, {"auth": {"token": SECRET}})
    logger.getChild("child").warning(f"f-string with {SECRET}")  # propagated from a child logger
    logger.info("mapping %(token)s", {"token": SECRET})
    assert stream.getvalue().splitlines() == [
        f"INFO before {SECRET}",
        "INFO token *** in {'auth': {'token': '***'}}",
        "WARNING f-string with ***",
        "INFO mapping ***",
    ]


def test_tracebacks_are_masked(log: tuple[logging.Logger, io.StringIO, Masker]) -> None:
    logger, stream, masker = log
    masker.add(SECRET)
    try:
        raise RuntimeError(f"login failed with {SECRET}")
    except RuntimeError:
        logger.exception("action failed")
    output = stream.getvalue()
    assert "RuntimeError: login failed with ***" in output
    assert "Traceback" in output
    assert SECRET not in output


def test_records_without_secrets_keep_their_arguments() -> None:
    masker = Masker([SECRET])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "value %s", ("public",), None)
    assert MaskingFilter(masker).filter(record)
    assert (record.msg, record.args) == ("value %s", ("public",))
    with_secret = logging.LogRecord("x", logging.INFO, __file__, 1, "v %s", (SECRET,), None)
    assert MaskingFilter(masker).filter(with_secret)
    assert (with_secret.getMessage(), with_secret.args) == ("v ***", None)


def test_a_record_whose_arguments_do_not_fit_is_still_masked_and_kept() -> None:
    masker = Masker([SECRET])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s %s", (SECRET,), None)
    assert MaskingFilter(masker).filter(record)
    assert record.args == (MASK,)
