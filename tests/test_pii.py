"""PIIRedactor: each detector on true positives and near misses, the actions, hashing,
nested data, the fields configuration and the hook contract."""

from __future__ import annotations

import copy
import re
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import EventStore
from eventstore.events import Event
from eventstore.privacy.pii import DETECTORS, Finding, PIIRedactor

# Secrets are assembled from parts so that secret scanners do not flag this file.
OPENAI = "sk-" + "proj-" + "abcDEF1234567890abcdEF_ghij-KLMNOP"
OPENAI_LEGACY = "sk-" + "T3BlbkFJabcdefghijklmnopqrstuv0123456789"
ANTHROPIC = "sk-" + "ant-api03-" + "abcdefghijklmnopqrstuvwxyz0123456789_-AB"
GITHUB_PAT = "ghp" + "_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
GITHUB_OAUTH = "gho" + "_" + "16C7e42F292c6912E7710c838347Ae178B4a"
GITHUB_SERVER = "ghs" + "_" + "16C7e42F292c6912E7710c838347Ae178B4a"
GITHUB_FINE = "github" + "_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123"
AWS = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_TEMP = "ASIA" + "JEXAMPLEXEG2JICEA"[:16]
SLACK = "xoxb" + "-1234567890-0987654321-abcdefghijklmnopqrstuvwx"
GOOGLE = "AIza" + "SyA-1234567890abcdefghijklmnopqrstu"
STRIPE = "sk_" + "live_" + "4eC39HqLyjWDarjtT1zdp7dc"
STRIPE_RESTRICTED = "rk_" + "live_" + "4eC39HqLyjWDarjtT1zdp7dc"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAzb3x1Zq8p0fPz0m7q3XkYh0v8Yw9cQ2m1lq4Bz7f0sP0a9Xk\n"
    "Qy5b2Lw3vTq9r8Zc1N0e4F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0u1V2w3X4y5Z6a\n"
    "-----END RSA PRIVATE KEY-----"
)


def kinds(redactor: PIIRedactor, text: str) -> list[str]:
    return [f.kind for f in redactor.find(text)]


@pytest.fixture
def redactor() -> PIIRedactor:
    return PIIRedactor()


# --- detectors: true positives -------------------------------------------------------------


@pytest.mark.parametrize(
    "card",
    [
        "4242 4242 4242 4242",
        "4111-1111-1111-1111",
        "378282246310005",
        "3782 822463 10005",
        "5555555555554444",
        "6011 1111 1111 1117",
    ],
)
def test_card_numbers_are_found(redactor: PIIRedactor, card: str) -> None:
    text = f"my card is {card}, exp 12/27"
    assert redactor.find(text) == [Finding("card", 11, 11 + len(card), card)]
    assert redactor.redact_text(text) == "my card is [CARD], exp 12/27"


@pytest.mark.parametrize(
    ("phone", "region"),
    [
        ("+44 20 7946 0958", "US"),
        ("+1 (415) 555-2671", "US"),
        ("+49 30 901820", "US"),
        ("+33 1 42 68 53 00", "US"),
        ("+1-415-555-2671", "DE"),
        ("(415) 555-2671", "US"),
        ("415.555.2671", "US"),
        ("030 901820", "DE"),
    ],
)
def test_phone_numbers_are_found(phone: str, region: str) -> None:
    redactor = PIIRedactor(default_region=region)
    text = f"call me on {phone} tomorrow"
    assert redactor.find(text) == [Finding("phone", 11, 11 + len(phone), phone)]
    assert redactor.redact_text(text) == "call me on [PHONE] tomorrow"


def test_national_phone_numbers_need_the_matching_region() -> None:
    assert kinds(PIIRedactor(default_region="US"), "ruf 030 901820 an") == []
    assert kinds(PIIRedactor(default_region=None), "call (415) 555-2671") == []
    assert kinds(PIIRedactor(default_region=None), "call +1 415 555 2671") == ["phone"]


@pytest.mark.parametrize(
    "iban",
    [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82 WEST 1234 5698 7654 32",
        "GB82WEST12345698765432",
        "FR14 2004 1010 0505 0001 3M02 606",
        "FR1420041010050500013M02606",
        "NL91ABNA0417164300",
    ],
)
def test_ibans_are_found(redactor: PIIRedactor, iban: str) -> None:
    text = f"IBAN: {iban}."
    assert redactor.find(text) == [Finding("iban", 6, 6 + len(iban), iban)]


def test_iban_followed_by_an_upper_case_word_stops_at_its_length(redactor: PIIRedactor) -> None:
    assert redactor.redact_text("BE68 5390 0754 7034 EURO") == "[IBAN] EURO"


@pytest.mark.parametrize(
    "ip",
    [
        "192.168.1.10",
        "8.8.8.8",
        "0.0.0.0",
        "255.255.255.255",
        "2001:db8::1",
        "::1",
        "fe80::1%eth0",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "2001:db8:85a3::8a2e:370:7334",
        "::ffff:192.0.2.1",
    ],
)
def test_ip_addresses_are_found(redactor: PIIRedactor, ip: str) -> None:
    text = f"request from {ip}, retried"
    assert redactor.find(text) == [Finding("ip", 13, 13 + len(ip), ip)]


def test_ip_addresses_in_brackets_and_at_sentence_end(redactor: PIIRedactor) -> None:
    assert redactor.redact_text("GET [2001:db8::1]:8080 from 10.0.0.1.") == (
        "GET [[IP]]:8080 from [IP]."
    )


@pytest.mark.parametrize(
    "email",
    ["jane@example.com", "Jane.Doe+tag@Example.co.uk", "a_b-c%d@mail.sub.example.org"],
)
def test_emails_are_found(redactor: PIIRedactor, email: str) -> None:
    text = f"write to <{email}>, thanks"
    assert redactor.find(text) == [Finding("email", 10, 10 + len(email), email)]


def test_several_emails_in_a_row(redactor: PIIRedactor) -> None:
    out = redactor.redact_text("a@b.io,c@d.io; mailto:e@f.dev")
    assert out == "[EMAIL],[EMAIL]; mailto:[EMAIL]"


@pytest.mark.parametrize(
    "secret",
    [
        OPENAI,
        OPENAI_LEGACY,
        ANTHROPIC,
        GITHUB_PAT,
        GITHUB_OAUTH,
        GITHUB_SERVER,
        GITHUB_FINE,
        AWS,
        AWS_TEMP,
        SLACK,
        GOOGLE,
        STRIPE,
        STRIPE_RESTRICTED,
        JWT,
    ],
)
def test_secrets_are_found(redactor: PIIRedactor, secret: str) -> None:
    text = f"key={secret} ok"
    assert redactor.find(text) == [Finding("secret", 4, 4 + len(secret), secret)]
    assert redactor.redact_text(text) == "key=[SECRET] ok"


def test_bearer_tokens_keep_their_scheme(redactor: PIIRedactor) -> None:
    assert redactor.redact_text("Authorization: Bearer abcdef0123456789xyz.ABC~+/=") == (
        "Authorization: Bearer [SECRET]"
    )
    assert redactor.redact_text("send bearer 0a1b2c3d4e5f6a7b8c9d.") == "send bearer [SECRET]."
    assert redactor.redact_text(f"Authorization: Bearer {JWT}") == "Authorization: Bearer [SECRET]"


def test_pem_private_key_blocks_are_found_whole(redactor: PIIRedactor) -> None:
    text = f"here:\n{PEM}\nthanks"
    assert redactor.redact_text(text) == "here:\n[SECRET]\nthanks"
    ec = PEM.replace("RSA PRIVATE", "EC PRIVATE")
    assert redactor.redact_text(ec) == "[SECRET]"
    truncated = PEM.rsplit("\n", 1)[0]  # pasted without its END line
    assert redactor.redact_text(f"oops {truncated}") == "oops [SECRET]"


# --- detectors: near misses ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "4242 4242 4242 4241",  # Luhn-invalid
        "4242424242424241",
        "card 1234-5678-9012-3456",
        "id 42424242424242424242",  # 20 digits: longer than any card
        "4242424242424242abc",
        "ref INV-4242424242424242",
        "amount 4242424242424242.50",
        "Order #123456789",
        "order no. 20240115-000123",
        "invoice INV-2024-000123",
        "timestamp 1718000000123",
        "2024-01-15",
        "2024-01-15 10:30:00",
        "2024-01-15T10:30:00Z",
        "on 01/15/2024 at 10:30",
        "15.01.2024",
        "10:30",
        "12:30:45.123",
        "1.2.3",
        "v2.10.4",
        "v1.2.3.4",
        "version 1.2.3.4",
        "Python 3.11.4",
        "3.14159",
        "pi is 3.14159265358979323",
        "DE89 3704 0044 0532 0130 01",  # bad IBAN checksum
        "GB82 WEST 1234 5698 7654 33",
        "999.1.1.1",
        "256.1.1.1 and 1.2.3.4.5",
        "1 2 3 4 5 6 7 8 9 10",
        "std::vector<int> and dead::beef",
        "MAC 00:1A:2B:3C:4D:5E",
        "ISBN 978-3-16-148410-0",
        "price $1,234,567.89",
        "user@localhost and @handle",
        "uuid 0190f5a2-7c3e-7b4a-9c2d-1e2f3a4b5c6d",
        "sha 3f786850e387550fdab836ed7e6dc881de23001b",
        "pip install sk-learn; run task-runner",
        "the bearer of this letter, bearer internationalization",
        "ISO8601 and SHA256 and TLS13",
    ],
)
def test_near_misses_are_left_alone(redactor: PIIRedactor, text: str) -> None:
    assert redactor.find(text) == []
    assert redactor.redact_text(text) is text


def test_detectors_never_rewrite_overlapping_spans(redactor: PIIRedactor) -> None:
    # The digits of an IBAN, a card or an IP could also pass as phone numbers or cards.
    assert kinds(redactor, "DE89 3704 0044 0532 0130 00") == ["iban"]
    assert kinds(redactor, "4242 4242 4242 4242") == ["card"]
    assert kinds(redactor, "192.168.100.200") == ["ip"]
    assert kinds(redactor, "::ffff:192.0.2.1") == ["ip"]
    assert kinds(redactor, f"Bearer {OPENAI}") == ["secret"]


def test_numbers_written_next_to_each_other_are_told_apart(redactor: PIIRedactor) -> None:
    assert redactor.redact_text("call +44 20 7946 0958 4242 4242 4242 4242 now") == (
        "call [PHONE] [CARD] now"
    )
    assert redactor.redact_text("+1 (415) 555-2671 10.0.0.1") == "[PHONE] [IP]"
    assert redactor.redact_text("order 12 4111 1111 1111 1111") == "order 12 [CARD]"


def test_find_reports_findings_in_text_order(redactor: PIIRedactor) -> None:
    text = f"ip 10.0.0.1, mail jane@example.com, key {AWS}, call +44 20 7946 0958"
    findings = redactor.find(text)
    assert [f.kind for f in findings] == ["ip", "email", "secret", "phone"]
    assert all(text[f.start : f.end] == f.value for f in findings)


# --- actions -------------------------------------------------------------------------------


def test_redact_is_the_default_action(redactor: PIIRedactor) -> None:
    text = (
        f"jane@example.com +44 20 7946 0958 4242 4242 4242 4242 DE89370400440532013000 "
        f"10.0.0.1 {GITHUB_PAT}"
    )
    assert redactor.redact_text(text) == "[EMAIL] [PHONE] [CARD] [IBAN] [IP] [SECRET]"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("jane.doe@example.com", "j***@example.com"),
        ("4242 4242 4242 4242", "**** **** **** 4242"),
        ("378282246310005", "***********0005"),
        ("+44 20 7946 0958", "+** ** **** 0958"),
        ("+1 (415) 555-2671", "+* (***) ***-2671"),
        ("DE89 3704 0044 0532 0130 00", "DE** **** **** **** **30 00"),
        ("GB82WEST12345698765432", "GB****************5432"),
        ("192.168.1.10", "192.168.1.*"),
        ("2001:db8:85a3::8a2e:370:7334", "2001:db8:85a3:*"),
        (OPENAI, "sk-proj-…"),
        (ANTHROPIC, "sk-ant-…"),
        (OPENAI_LEGACY, "sk-…"),
        (GITHUB_PAT, "ghp_…"),
        (GITHUB_FINE, "github_pat_…"),
        (AWS, "AKIA…"),
        (SLACK, "xoxb-…"),
        (GOOGLE, "AIza…"),
        (STRIPE, "sk_live_…"),
        (JWT, "eyJ…"),
        (PEM, "-----BEGIN RSA PRIVATE KEY-----…"),
        ("Bearer abcdef0123456789xyz", "Bearer …"),
    ],
)
def test_mask_keeps_a_hint(text: str, masked: str) -> None:
    assert PIIRedactor(action="mask").redact_text(text) == masked


def test_hash_renders_a_typed_hmac_token() -> None:
    redactor = PIIRedactor(action="hash", secret=b"k1")
    out = redactor.redact_text("mail jane@example.com or call +44 20 7946 0958")
    assert re.fullmatch(r"mail \[EMAIL:[0-9a-f]{16}\] or call \[PHONE:[0-9a-f]{16}\]", out)
    assert "jane" not in out and "7946" not in out
    assert re.fullmatch(
        r"\[CARD:[0-9a-f]{8}\]",
        PIIRedactor(action="hash", secret=b"k1", hash_length=8).redact_text("4111111111111111"),
    )


def test_hash_is_stable_across_instances_and_depends_on_the_secret() -> None:
    text = "jane@example.com 4242 4242 4242 4242 +1 (415) 555-2671 10.0.0.1"
    one = PIIRedactor(action="hash", secret=b"shared").redact_text(text)
    two = PIIRedactor(action="hash", secret=b"shared").redact_text(text)
    as_str = PIIRedactor(action="hash", secret="shared").redact_text(text)
    other = PIIRedactor(action="hash", secret=b"another").redact_text(text)
    assert one == two == as_str
    tokens, other_tokens = one.split(), other.split()
    assert len(tokens) == len(other_tokens) == 4
    assert all(a != b for a, b in zip(tokens, other_tokens, strict=True))


@pytest.mark.parametrize(
    "variants",
    [
        ["4242 4242 4242 4242", "4242-4242-4242-4242", "4242424242424242"],
        ["jane.doe@example.com", "Jane.Doe@Example.COM"],
        ["+1 (415) 555-2671", "+14155552671", "+1 415.555.2671", "(415) 555-2671"],
        ["DE89 3704 0044 0532 0130 00", "DE89370400440532013000"],
        ["2001:db8::1", "2001:0db8:0000:0000:0000:0000:0000:0001"],
    ],
)
def test_formatting_variants_hash_to_the_same_token(variants: list[str]) -> None:
    redactor = PIIRedactor(action="hash", secret=b"k")
    tokens = {redactor.redact_text(v) for v in variants}
    assert len(tokens) == 1
    assert re.fullmatch(r"\[[A-Z]+:[0-9a-f]{16}\]", tokens.pop())


def test_the_same_value_of_two_kinds_hashes_differently() -> None:
    redactor = PIIRedactor(action="hash", secret=b"k")
    card = redactor.redact_text("4242424242424242")
    secret = redactor.redact_text(f"Bearer {'4242424242424242'}")
    assert card.split(":")[1] != secret.split(":")[1]


def test_actions_per_detector_with_a_default() -> None:
    redactor = PIIRedactor(actions={"card": "mask", "email": "hash"}, secret=b"k")
    out = redactor.redact_text("jane@example.com paid with 4242 4242 4242 4242 from 10.0.0.1")
    assert re.fullmatch(r"\[EMAIL:[0-9a-f]{16}\] paid with \*{4} \*{4} \*{4} 4242 from \[IP\]", out)
    masked = PIIRedactor(action="mask", actions={"ip": "redact"})
    assert masked.redact_text("10.0.0.1 jane@example.com") == "[IP] j***@example.com"


def test_hash_without_a_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        PIIRedactor(action="hash")
    with pytest.raises(ValueError, match="secret"):
        PIIRedactor(actions={"email": "hash"})
    with pytest.raises(ValueError, match="secret"):
        PIIRedactor(action="hash", secret=b"")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"detectors": {"email", "ssn"}},
        {"actions": {"passport": "redact"}},
        {"action": "scramble"},
        {"actions": {"email": "drop"}},
        {"default_region": "XX"},
        {"fields": ["content"]},
        {"fields": ["data..content"]},
        {"fields": []},
        {"hash_length": 4},
    ],
)
def test_invalid_configuration_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PIIRedactor(**kwargs)


def test_repr_does_not_leak_the_secret() -> None:
    assert "topsecret" not in repr(PIIRedactor(action="hash", secret="topsecret"))


# --- detectors toggled off ------------------------------------------------------------------


def test_disabled_detectors_are_not_applied() -> None:
    text = f"jane@example.com +44 20 7946 0958 4242 4242 4242 4242 10.0.0.1 {AWS}"
    only_email = PIIRedactor(detectors={"email"})
    assert only_email.redact_text(text) == (
        f"[EMAIL] +44 20 7946 0958 4242 4242 4242 4242 10.0.0.1 {AWS}"
    )
    no_phone_no_ip = PIIRedactor(detectors=set(DETECTORS) - {"phone", "ip"})
    assert no_phone_no_ip.redact_text(text) == "[EMAIL] +44 20 7946 0958 [CARD] 10.0.0.1 [SECRET]"
    assert PIIRedactor(detectors=[]).redact_text(text) is text


# --- events ---------------------------------------------------------------------------------


def make_event(**overrides: Any) -> Event:
    fields: dict[str, Any] = {
        "type": "message_sent",
        "data": {"role": "user", "content": "hi, I am jane@example.com"},
        "conversation_id": "c1",
        "user_id": "u1",
        "metadata": {"client_ip": "203.0.113.7", "model": "gpt-4o"},
    }
    fields.update(overrides)
    return Event(**fields)


def test_redacted_event_is_a_new_event_with_other_fields_unchanged(
    redactor: PIIRedactor,
) -> None:
    event = make_event()
    before = copy.deepcopy(msgspec.structs.asdict(event))
    out = redactor(event)
    assert isinstance(out, Event) and out is not event
    assert out.data == {"role": "user", "content": "hi, I am [EMAIL]"}
    assert out.metadata == {"client_ip": "[IP]", "model": "gpt-4o"}
    for name in ("id", "type", "conversation_id", "user_id", "occurred_at"):
        assert getattr(out, name) == getattr(event, name)
    assert msgspec.structs.asdict(event) == before  # the original is untouched


def test_event_without_pii_comes_back_as_the_same_object(redactor: PIIRedactor) -> None:
    event = make_event(
        data={"role": "assistant", "content": "Version 2.10.4 shipped on 2024-01-15.",
              "tokens": 12, "parts": [{"text": "no personal data"}]},
        metadata={"model": "gpt-4o", "latency_ms": 12.5, "tags": ["a", "b"]},
    )  # fmt: skip
    assert redactor(event) is event


def test_nested_data_and_metadata_are_redacted_at_any_depth(redactor: PIIRedactor) -> None:
    event = make_event(
        data={
            "messages": [
                {"parts": [{"text": "mail a@b.io"}, "call +44 20 7946 0958", 42, None, True]},
                {"parts": [{"text": "nothing here"}]},
            ],
            "count": 2,
            "jane@example.com": "keys are redacted too",
        },
        metadata={"trace": {"hops": ["10.0.0.1", {"deep": [["x@y.org"]]}], "ok": 1.5}},
    )
    before = copy.deepcopy(msgspec.structs.asdict(event))
    out = redactor(event)
    assert out.data == {
        "messages": [
            {"parts": [{"text": "mail [EMAIL]"}, "call [PHONE]", 42, None, True]},
            {"parts": [{"text": "nothing here"}]},
        ],
        "count": 2,
        "[EMAIL]": "keys are redacted too",
    }
    assert out.metadata == {"trace": {"hops": ["[IP]", {"deep": [["[EMAIL]"]]}], "ok": 1.5}}
    assert msgspec.structs.asdict(event) == before
    # untouched branches are shared, not copied
    assert out.data["messages"][1] is event.data["messages"][1]


def test_tuples_are_redacted_too(redactor: PIIRedactor) -> None:
    event = make_event(data={"pair": ("a@b.io", 1)})
    assert redactor(event).data == {"pair": ("[EMAIL]", 1)}


def test_fields_select_paths() -> None:
    event = make_event(
        data={
            "content": "mail a@b.io",
            "title": "mail c@d.io",
            "messages": [{"content": "e@f.io", "name": "g@h.io"}, {"content": "i@j.io"}],
        },
        metadata={"client_ip": "10.0.0.1", "headers": {"from": "k@l.io"}},
    )
    only_content = PIIRedactor(fields=["data.content"])(event)
    assert only_content.data["content"] == "mail [EMAIL]"
    assert only_content.data["title"] == "mail c@d.io"
    assert only_content.data["messages"] == event.data["messages"]
    assert only_content.metadata is event.metadata

    through_lists = PIIRedactor(fields=["data.messages.content"])(event)
    assert through_lists.data["messages"] == [
        {"content": "[EMAIL]", "name": "g@h.io"},
        {"content": "[EMAIL]"},
    ]
    assert through_lists.data["content"] == "mail a@b.io"

    all_metadata = PIIRedactor(fields=["metadata.*"])(event)
    assert all_metadata.metadata == {"client_ip": "[IP]", "headers": {"from": "[EMAIL]"}}
    assert all_metadata.data is event.data

    star_in_the_middle = PIIRedactor(fields=["metadata.*.from", "data.title"])(event)
    assert star_in_the_middle.metadata == {"client_ip": "10.0.0.1", "headers": {"from": "[EMAIL]"}}
    assert star_in_the_middle.data["title"] == "mail [EMAIL]"
    assert star_in_the_middle.data["content"] == "mail a@b.io"

    # a path that ends short of the strings selects everything below it
    whole_data = PIIRedactor(fields=["data", "data.content"])(event)
    assert "@" not in str(whole_data.data) and whole_data.metadata is event.metadata


def test_a_field_path_that_matches_nothing_leaves_the_event_alone() -> None:
    event = make_event()
    assert PIIRedactor(fields=["data.missing.deeper", "metadata.model.x"])(event) is event


def test_redact_text_and_find_on_empty_and_short_strings(redactor: PIIRedactor) -> None:
    assert redactor.find("") == []
    assert redactor.redact_text("::1") == "[IP]"
    assert redactor.redact_text("ok") == "ok"


# --- in a store ------------------------------------------------------------------------------


async def test_the_store_persists_the_redacted_form() -> None:
    async with EventStore.open("memory://", redact=[PIIRedactor()]) as store:
        recorded = await store.append(
            make_event(data={"role": "user", "content": "card 4242 4242 4242 4242"})
        )
        assert recorded.data["content"] == "card [CARD]"
        assert recorded.metadata["client_ip"] == "[IP]"
        assert [e.data for e in [e async for e in store.read()]] == [recorded.data]


# --- robustness --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=12),
            st.sampled_from(
                ["+44 20 7946 0958", "4242 4242 4242 4242", "DE89370400440532013000",
                 "10.0.0.1", "::1", "a@b.io", AWS, "Bearer ", "-", ".", ":", "+", " "]
            ),
        ),
        max_size=8,
    ).map("".join)
)  # fmt: skip
def test_findings_are_ordered_disjoint_and_exact(text: str) -> None:
    redactor = PIIRedactor()
    findings = redactor.find(text)
    end = 0
    for f in findings:
        assert end <= f.start < f.end <= len(text)
        assert text[f.start : f.end] == f.value
        end = f.end
    out = redactor.redact_text(text)
    assert (out is text) == (not findings)
