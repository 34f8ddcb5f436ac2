"""Signed notes, checkpoints and signing keys against Go's golang.org/x/mod/sumdb/note
known answers and the C2SP specifications, plus a by-hand check of what we sign."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from eventstore.errors import EventStoreError
from eventstore.integrity import (
    IntegrityError,
    MalformedNoteError,
    NoteVerificationError,
    SigningKeyError,
    format_checkpoint,
    load_signing_key,
    open_checkpoint,
    open_note,
    parse_checkpoint,
    parse_verifier_key,
    sign_note,
    verifier_key,
)
from eventstore.integrity.note import key_id

# golang.org/x/mod sumdb/note/note_test.go (TestNewSigner, TestSign, TestVerifierList,
# TestOpen) and the package doc of note.go.
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqf"
    "qdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTG"
    "wnWLox33WWd1RvMc+QQ=\n"
)


def peter_seed() -> bytes:
    # The skey's last field is base64(0x01 || 32-byte Ed25519 seed).
    raw = base64.b64decode(PETER_SKEY.split("+", 4)[-1])
    assert raw[0] == 1
    return raw[1:]


def test_go_known_answers_for_key_id_verifier_key_and_signature() -> None:
    seed = peter_seed()
    assert verifier_key(seed, "PeterNeumann") == PETER_VKEY
    pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    assert key_id("PeterNeumann", pub) == 0xC74F20A3
    assert sign_note(TEXT, seed, "PeterNeumann") == TEXT + "\n" + PETER_SIG


def test_go_open_accepts_known_and_ignores_unknown_signers() -> None:
    msg = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    note = open_note(msg, [PETER_VKEY])
    assert note.text == TEXT
    assert [(s.name, s.key_id) for s in note.sigs] == [("PeterNeumann", 0xC74F20A3)]
    assert [(s.name, s.key_id) for s in note.unverified_sigs] == [("EnochRoot", 0xAF0CFE78)]
    both = open_note(msg, [PETER_VKEY, ENOCH_VKEY])
    assert [s.name for s in both.sigs] == ["PeterNeumann", "EnochRoot"]
    assert both.unverified_sigs == []
    with pytest.raises(NoteVerificationError, match="no verifiable signatures"):
        open_note(msg, [])
    with pytest.raises(NoteVerificationError, match="ambiguous key EnochRoot"):
        open_note(TEXT + "\n" + ENOCH_SIG, [ENOCH_VKEY, PETER_VKEY, ENOCH_VKEY])
    open_note(TEXT + "\n" + PETER_SIG, [ENOCH_VKEY, PETER_VKEY, ENOCH_VKEY])


def test_go_open_rejects_bad_notes() -> None:
    peter = PETER_SIG.encode()
    text = TEXT.encode()
    with pytest.raises(MalformedNoteError, match="more than 100"):
        open_note(text + b"\n" + peter * 101, [PETER_VKEY])
    # Go slices bytes: the em dash is three of them.
    with pytest.raises(NoteVerificationError, match="invalid signature for key PeterNeumann"):
        open_note(text + b"\n" + peter[:60] + b"ABCD" + peter[60:], [PETER_VKEY])
    bad = [
        text,
        text + b"\n",
        text + b"\n" + peter[:-1],
        b"\x01" + text + b"\n" + peter,
        b"\xff" + text + b"\n" + peter,
        text + b"\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2"
        "pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=".encode(),
        text + b"\n" + peter + b"Unexpected line.\n",
        text + b"\n" + peter.replace("—".encode(), b"-"),
    ]
    for msg in bad:
        with pytest.raises(MalformedNoteError):
            open_note(msg, [PETER_VKEY])


def test_go_open_drops_repeated_signatures() -> None:
    enoch_abcd = ENOCH_SIG[:58] + "ABCD" + ENOCH_SIG[58:]  # 60 bytes in Go = 58 chars here
    msg = TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + enoch_abcd
    note = open_note(msg, [PETER_VKEY])
    assert [s.name for s in note.sigs] == ["PeterNeumann"]
    assert len(note.unverified_sigs) == 2


def test_go_verifier_key_manglings_are_rejected() -> None:
    assert parse_verifier_key(PETER_VKEY).key_id == 0xC74F20A3
    key = PETER_VKEY.encode()
    for i in range(len(key) + 1):
        for j in range(i + 1, len(key) + 1):
            if i == 0 and j == len(key):
                continue
            with pytest.raises(MalformedNoteError):
                parse_verifier_key(key[i:j].decode())
    for i in range(len(key)):
        mangled = bytearray(key)
        mangled[i] += 1
        with pytest.raises(MalformedNoteError):
            parse_verifier_key(mangled.decode())
    # Wrong key length and unknown algorithm, each with a key id adjusted to match.
    with pytest.raises(MalformedNoteError, match="32 bytes"):
        parse_verifier_key(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        )
    with pytest.raises(MalformedNoteError, match="unknown algorithm"):
        parse_verifier_key("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


def test_key_names_follow_go_rules() -> None:
    seed = peter_seed()
    for name in ["", "a b", "a+b", "a\tb", "a\u00a0b", "a\u2003b"]:
        with pytest.raises(MalformedNoteError):
            sign_note(TEXT, seed, name)
        with pytest.raises(MalformedNoteError):
            verifier_key(seed, name)
    with pytest.raises(MalformedNoteError, match="newline"):
        sign_note("no final newline", seed, "PeterNeumann")
    with pytest.raises(MalformedNoteError, match="control character"):
        sign_note("a\rb\n", seed, "PeterNeumann")


def test_c2sp_checkpoint_example_parses_and_unknown_signer_is_not_enough() -> None:
    # c2sp.org/tlog-checkpoint's example.
    body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    sig = (
        "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5"
        "/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    )
    cp = parse_checkpoint(body)
    assert (cp.origin, cp.size, cp.extensions) == ("example.com/behind-the-sofa", 20852163, [])
    assert base64.b64encode(cp.root).decode() == "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    assert format_checkpoint(cp.origin, cp.size, cp.root) == body
    with pytest.raises(NoteVerificationError):
        open_checkpoint(body + "\n" + sig, [PETER_VKEY])


def test_checkpoint_round_trip_with_extensions_and_rejections() -> None:
    key = Ed25519PrivateKey.generate()
    root = hashlib.sha256(b"root").digest()
    text = format_checkpoint("example.com/log", 42, root, ["ext one"])
    signed = sign_note(text, key, "example.com/log")
    cp = open_checkpoint(signed, [verifier_key(key, "example.com/log")])
    assert (cp.origin, cp.size, cp.extensions) == ("example.com/log", 42, ["ext one"])
    assert cp.root == root
    b64 = base64.b64encode(root).decode()
    for bad in [
        f"o\n042\n{b64}\n",
        f"o\n+42\n{b64}\n",
        f"o\n4_2\n{b64}\n",
        f"o\n\u0664\u0662\n{b64}\n",  # Arabic-Indic digits: int() takes them, the spec not
        f"o\n42\n{b64[:-4]}\n",
        f"o\n42\n{b64}",
        f"o\n42\n{b64}\n\nmore\n",
        "o\n42\n",
        f"\n42\n{b64}\n",
    ]:
        with pytest.raises(MalformedNoteError):
            parse_checkpoint(bad)
    assert parse_checkpoint(f"o\n0\n{b64}\n").size == 0
    # A known key whose signature fails rejects the note, even if another one verifies.
    other = Ed25519PrivateKey.generate()
    tampered = signed.replace("\n42\n", "\n43\n")
    with pytest.raises(NoteVerificationError, match="invalid signature"):
        open_checkpoint(tampered, [verifier_key(key, "example.com/log")])
    with pytest.raises(NoteVerificationError, match="no verifiable"):
        open_checkpoint(signed, [verifier_key(other, "example.com/log")])


def test_signed_checkpoint_checked_by_hand_with_cryptography() -> None:
    key = Ed25519PrivateKey.generate()
    origin = "audit.example/log"
    root = hashlib.sha256(b"some root").digest()
    note = sign_note(format_checkpoint(origin, 7, root), key, origin)

    body, sep, sigblock = note.rpartition("\n\n")
    assert sep == "\n\n"
    lines = (body + "\n").split("\n")[:-1]
    assert lines == [origin, "7", base64.b64encode(root).decode()]
    sig_lines = sigblock.split("\n")
    assert sig_lines[-1] == "" and len(sig_lines) == 2
    line = sig_lines[0]
    assert line[0] == "\u2014" and line[1] == " "
    name, b64 = line[2:].split(" ")
    assert name == origin
    raw = base64.b64decode(b64, validate=True)
    assert len(raw) == 4 + 64
    pub = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    expected_id = hashlib.sha256(origin.encode() + b"\n" + b"\x01" + pub).digest()[:4]
    assert raw[:4] == expected_id
    # Verify with cryptography alone, from the verifier key string as a third party has it.
    vkey = verifier_key(key, origin)
    vname, vid, vpub = vkey.split("+")
    assert (vname, bytes.fromhex(vid)) == (origin, expected_id)
    pub_from_vkey = base64.b64decode(vpub)
    assert pub_from_vkey[0] == 1
    Ed25519PublicKey.from_public_bytes(pub_from_vkey[1:]).verify(
        raw[4:], (body + "\n").encode()
    )


# -- keys ----------------------------------------------------------------------------------


def test_signing_key_forms_all_load_the_same_key() -> None:
    seed = peter_seed()
    key = Ed25519PrivateKey.from_private_bytes(seed)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    b64 = base64.b64encode(seed).decode()
    forms = [seed, pem, pem.decode(), key, b64]
    for form in forms:
        loaded = load_signing_key(form)
        assert loaded is not None
        assert verifier_key(loaded, "PeterNeumann") == PETER_VKEY
    for env_value in [pem.decode(), b64, f"  {b64}\n"]:
        loaded = load_signing_key(environ={"EVENTSTORE_SIGNING_KEY": env_value})
        assert loaded is not None
        assert verifier_key(loaded, "PeterNeumann") == PETER_VKEY
    assert load_signing_key(environ={}) is None
    assert load_signing_key(environ={"EVENTSTORE_SIGNING_KEY": " "}) is None


def test_bad_signing_keys_raise_clear_errors() -> None:
    ec_pem = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    encrypted = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    cases = [
        (b"short", "5 bytes"),
        (ec_pem, "not an Ed25519 key"),
        (encrypted, "encrypted"),
        ("not base64!", "neither PEM nor base64"),
        (base64.b64encode(b"x" * 31).decode(), "31 bytes"),
        (b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n", "PEM"),
    ]
    for value, message in cases:
        with pytest.raises(SigningKeyError, match=message) as info:
            load_signing_key(value)
        assert isinstance(info.value, IntegrityError)
        assert isinstance(info.value, EventStoreError)
    with pytest.raises(SigningKeyError, match="EVENTSTORE_SIGNING_KEY"):
        load_signing_key(environ={"EVENTSTORE_SIGNING_KEY": "nope"})
    with pytest.raises(SigningKeyError, match="int"):
        load_signing_key(42)  # type: ignore[arg-type]
