"""Crypt4GH core: round trips of any size, interoperability with the reference library and its
command-line tool, header-only sharing, and typed errors for a wrong key, a truncated file and a
tampered header or payload (GB/T 39725 §10.1 g-h, §11.3.4.6 a 1-3)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from crypt4gh import lib as c4gh_lib
from crypt4gh.keys import c4gh as c4gh_keys
from crypt4gh.keys import get_private_key, get_public_key
from hypothesis import given, settings
from hypothesis import strategies as st

from seqlife.encrypt import c4gh, manifest
from seqlife.encrypt.c4gh import SEGMENT_SIZE, TamperedHeader, TamperedPayload, Truncated, WrongKey

BIN = Path(sys.executable).parent


def keypair() -> tuple[bytes, bytes]:
    secret = c4gh.new_secret_key()
    return secret, c4gh.public_key_of(secret)


def encrypt_bytes(data: bytes, *recipients: bytes) -> bytes:
    out = io.BytesIO()
    c4gh.encrypt_stream(io.BytesIO(data), out, list(recipients))
    return out.getvalue()


def decrypt_bytes(blob: bytes, secret: bytes) -> bytes:
    out = io.BytesIO()
    c4gh.decrypt_stream(io.BytesIO(blob), out, secret)
    return out.getvalue()


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([0, 1, SEGMENT_SIZE - 1, SEGMENT_SIZE, SEGMENT_SIZE + 1,
                        3 * SEGMENT_SIZE]) | st.integers(0, 200_000))
def test_round_trip_any_size_and_reference_library_reads_it(size: int) -> None:
    """Our files decrypt with the GA4GH reference implementation, byte for byte."""
    secret, public = keypair()
    data = os.urandom(size)
    blob = encrypt_bytes(data, public)
    assert decrypt_bytes(blob, secret) == data
    reference = io.BytesIO()
    c4gh_lib.decrypt([(0, secret, None)], io.BytesIO(blob), reference)
    assert reference.getvalue() == data


@given(size=st.sampled_from([0, 1, SEGMENT_SIZE - 1, SEGMENT_SIZE, 16 * SEGMENT_SIZE,
                              16 * SEGMENT_SIZE + 1, 40 * SEGMENT_SIZE + 7]),
       pieces=st.lists(st.integers(1, 200_000), min_size=1, max_size=8))
@settings(max_examples=40, deadline=None)
def test_sealing_fed_by_writes_is_a_standard_file(size: int, pieces: list[int]) -> None:
    """Intake seals in the validating read (issue 17): whatever sizes the writes come in, the
    GA4GH reference library decrypts the result byte for byte, and the recorded sizes and
    ciphertext digest are the file's."""
    import hashlib

    secret = c4gh.new_secret_key()
    data = os.urandom(size)
    blob = io.BytesIO()
    writer = c4gh.SealingWriter(blob, [c4gh.public_key_of(secret)])
    offset, turn = 0, 0
    while offset < size:
        step = pieces[turn % len(pieces)]
        writer.write(data[offset:offset + step])
        offset, turn = offset + step, turn + 1
    sealed = writer.close()
    assert sealed.size == size and sealed.cipher_size == len(blob.getvalue())
    assert writer.cipher_digest.hexdigest() == hashlib.sha256(blob.getvalue()).hexdigest()
    reference = io.BytesIO()
    c4gh_lib.decrypt([(0, secret, None)], io.BytesIO(blob.getvalue()), reference)
    assert reference.getvalue() == data


def test_we_read_what_the_reference_library_writes() -> None:
    secret, public = keypair()
    data = os.urandom(3 * SEGMENT_SIZE + 17)
    blob = io.BytesIO()
    c4gh_lib.encrypt([(0, c4gh.new_secret_key(), public)], io.BytesIO(data), blob)
    assert decrypt_bytes(blob.getvalue(), secret) == data


def test_sealed_reports_plaintext_digest_and_sizes() -> None:
    import hashlib

    _, public = keypair()
    data = os.urandom(100_000)
    out = io.BytesIO()
    sealed = c4gh.encrypt_stream(io.BytesIO(data), out, [public])
    assert sealed.sha256 == hashlib.sha256(data).hexdigest() and sealed.size == len(data)
    assert sealed.cipher_size == len(out.getvalue())
    assert c4gh.header_length(io.BytesIO(out.getvalue())) == sealed.header_size


@pytest.mark.skipif(not (BIN / "crypt4gh").exists(), reason="crypt4gh CLI is installed with the lib")
def test_reference_command_line_tool_interoperates_with_keygen_key_files(tmp_path: Path) -> None:
    """A recipient uses the tools they already have: crypt4gh-keygen keys, crypt4gh decrypt."""
    env = {**os.environ, "C4GH_PASSPHRASE": "correct horse"}
    subprocess.run([str(BIN / "crypt4gh-keygen"), "--sk", str(tmp_path / "k.sec"), "--pk",
                    str(tmp_path / "k.pub"), "--nocrypt", "-f"], env=env, check=True,
                   capture_output=True, stdin=subprocess.DEVNULL)
    assert c4gh.public_key_of(get_private_key(str(tmp_path / "k.sec"), lambda: "")) == \
        get_public_key(str(tmp_path / "k.pub"))
    # a passphrase-locked key as keygen writes it (keygen asks on a terminal, so the library
    # writes it here); the CLI unlocks it from C4GH_PASSPHRASE
    c4gh_keys.generate(str(tmp_path / "r.sec"), str(tmp_path / "r.pub"),
                       passphrase=b"correct horse", comment=b"recipient")
    public = get_public_key(str(tmp_path / "r.pub"))
    secret = get_private_key(str(tmp_path / "r.sec"), lambda: "correct horse")
    data = os.urandom(2 * SEGMENT_SIZE + 5)
    (tmp_path / "ours.c4gh").write_bytes(encrypt_bytes(data, public))
    with open(tmp_path / "ours.c4gh", "rb") as src:
        cli = subprocess.run([str(BIN / "crypt4gh"), "decrypt", "--sk", str(tmp_path / "r.sec")],
                             stdin=src, env=env, capture_output=True, check=True)
    assert cli.stdout == data
    (tmp_path / "plain").write_bytes(data)
    with open(tmp_path / "plain", "rb") as src:
        theirs = subprocess.run([str(BIN / "crypt4gh"), "encrypt", "--recipient_pk",
                                 str(tmp_path / "r.pub")], stdin=src, env=env,
                                capture_output=True, check=True).stdout
    assert decrypt_bytes(theirs, secret) == data


def test_header_reencryption_shares_the_same_payload_with_a_new_recipient() -> None:
    """Sharing touches only the header: the recipient reads header' + the untouched payload."""
    archive_secret, archive_public = keypair()
    recipient_secret, recipient_public = keypair()
    data = os.urandom(5 * SEGMENT_SIZE)
    blob = encrypt_bytes(data, archive_public)
    size = c4gh.header_length(io.BytesIO(blob))
    new_header = c4gh.reencrypt_header(blob[:size], archive_secret, [recipient_public])
    shared = new_header + blob[size:]
    assert decrypt_bytes(shared, recipient_secret) == data
    with pytest.raises(WrongKey):
        decrypt_bytes(shared, archive_secret)  # only the recipient's packet is in the new header
    with pytest.raises(WrongKey):
        c4gh.reencrypt_header(blob[:size], recipient_secret, [recipient_public])


def test_wrong_key_is_refused_with_a_steward_message() -> None:
    _, public = keypair()
    other, _ = keypair()
    with pytest.raises(WrongKey, match="does not open this file"):
        decrypt_bytes(encrypt_bytes(b"x" * 1000, public), other)


@pytest.mark.parametrize("cut", [1, 16, 100, SEGMENT_SIZE])
def test_truncated_ciphertext_is_refused(cut: int) -> None:
    secret, public = keypair()
    blob = encrypt_bytes(os.urandom(2 * SEGMENT_SIZE + 1000), public)
    with pytest.raises((Truncated, TamperedPayload)):
        decrypt_bytes(blob[:-cut], secret)


def test_one_flipped_payload_byte_is_refused_and_nothing_after_it_is_written() -> None:
    secret, public = keypair()
    data = os.urandom(3 * SEGMENT_SIZE)
    blob = bytearray(encrypt_bytes(data, public))
    size = c4gh.header_length(io.BytesIO(bytes(blob)))
    blob[size + c4gh.CIPHER_SEGMENT_SIZE + 500] ^= 0x01  # inside segment 2
    out = io.BytesIO()
    with pytest.raises(TamperedPayload, match="Segment 2"):
        c4gh.decrypt_stream(io.BytesIO(bytes(blob)), out, secret)
    assert out.getvalue() == data[:SEGMENT_SIZE]  # only authenticated bytes came out


@pytest.mark.parametrize("offset", [0, 9, 20, 60])
def test_tampered_header_is_refused(offset: int) -> None:
    secret, public = keypair()
    blob = bytearray(encrypt_bytes(b"y" * 5000, public))
    blob[offset] ^= 0xFF
    with pytest.raises((TamperedHeader, WrongKey)):
        decrypt_bytes(bytes(blob), secret)


def test_not_a_crypt4gh_file() -> None:
    with pytest.raises(TamperedHeader, match="not a readable Crypt4GH file"):
        decrypt_bytes(b"plain text, not encrypted", keypair()[0])


def test_keys_never_reach_a_log(caplog: pytest.LogCaptureFixture) -> None:
    """The reference library logs secret keys at DEBUG: seqlife silences it (§10.1 g)."""
    import logging

    secret, public = keypair()
    with caplog.at_level(logging.DEBUG):
        blob = encrypt_bytes(b"z" * 100, public)
        decrypt_bytes(blob, secret)
        with pytest.raises(WrongKey):
            decrypt_bytes(blob, keypair()[0])
    text = caplog.text
    assert secret.hex() not in text and "secret key" not in text and "Decryption failed" not in text


def test_signed_manifest_refuses_edits_foreign_keys_and_changed_bytes() -> None:
    """§11.3.4.6 a 3: the manifest verifies under the controller's key only, and checks bytes."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    body = manifest.build("d", 1, {"a.bam": {"sha256": "1" * 64, "size": 3,
                                             "cipher_sha256": "2" * 64, "cipher_size": 200}},
                          "f" * 16, "p" * 64, "2026-11-23T00:00:00+00:00")
    signed = manifest.sign(body, key)
    good = manifest.verified(signed, key.public_key())
    manifest.check_entry(good, "a.bam", sha256="1" * 64, size=3)
    with pytest.raises(manifest.ManifestInvalid, match="differ from the signed"):
        manifest.check_entry(good, "a.bam", sha256="3" * 64, size=3)
    with pytest.raises(manifest.ManifestInvalid, match="not in the version"):
        manifest.check_entry(good, "b.bam", sha256="1" * 64, size=3)
    edited = {**signed, "manifest": {**signed["manifest"], "version": 2}}
    with pytest.raises(manifest.ManifestInvalid, match="edited"):
        manifest.verified(edited, key.public_key())
    with pytest.raises(manifest.ManifestInvalid, match="not the controller"):
        manifest.verified(signed, Ed25519PrivateKey.generate().public_key())


def test_keygen_format_round_trip_through_the_library(tmp_path: Path) -> None:
    """Key files in the crypt4gh-keygen format (what recipients already have)."""
    c4gh_keys.generate(str(tmp_path / "k.sec"), str(tmp_path / "k.pub"), passphrase=b"pw",
                       comment=b"seqlife test")
    secret = get_private_key(str(tmp_path / "k.sec"), lambda: "pw")
    assert c4gh.public_key_of(secret) == get_public_key(str(tmp_path / "k.pub"))
