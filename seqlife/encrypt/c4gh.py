"""GA4GH Crypt4GH v1 files, streamed in constant memory.

The header (magic, version, packets each encrypted to one recipient with X25519 +
ChaCha20-Poly1305) is built and opened with the reference ``crypt4gh`` library, so any GA4GH
tool reads what we write. The payload is the standard sequence of 64 KiB segments, each
``nonce(12) || ChaCha20-Poly1305-IETF(segment) || tag(16)`` under the file's session key; we
seal segments with ``cryptography``'s ChaCha20Poly1305 (OpenSSL), which is byte-compatible with
libsodium's ``crypto_aead_chacha20poly1305_ietf`` and faster from Python than the reference
loop. Sharing re-encrypts only the header (:func:`reencrypt_header`): the payload is untouched.

Errors are typed and say what went wrong without quoting keys or data: a key that opens no
header packet (:class:`WrongKey`), a header that does not parse (:class:`TamperedHeader`), a
segment whose tag fails (:class:`TamperedPayload`), a file that ends early (:class:`Truncated`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Sequence

from crypt4gh import SEGMENT_SIZE
from crypt4gh import header as c4gh_header
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from seqlife.exceptions import SeqlifeError

# The reference library logs session and secret keys at DEBUG and every failed packet at ERROR:
# nothing of it may reach a log (GB/T 39725 §10.1 g).
logging.getLogger("crypt4gh").setLevel(logging.CRITICAL + 1)

NONCE_SIZE = 12
TAG_SIZE = 16
CIPHER_SEGMENT_SIZE = NONCE_SIZE + SEGMENT_SIZE + TAG_SIZE
METHOD_X25519_CHACHA20_POLY1305 = 0
MAGIC = b"crypt4gh"

Progress = Callable[[int], None]


class EncryptionError(SeqlifeError):
    """The encrypt stage refused or could not complete an operation."""

    stage = "encrypt"


class WrongKey(EncryptionError):
    """The key offered opens none of the file's header packets."""


class TamperedHeader(EncryptionError):
    """The Crypt4GH header does not parse or its packets were altered."""


class TamperedPayload(EncryptionError):
    """A payload segment fails authentication: its bytes were changed."""


class Truncated(EncryptionError):
    """The file ends before its last segment is complete."""


@dataclass(frozen=True)
class Sealed:
    """What a streaming pass learned: plaintext digest and size, ciphertext size and header size."""

    sha256: str
    size: int
    cipher_size: int
    header_size: int


def public_key_of(secret_key: bytes) -> bytes:
    """The X25519 public key of a raw 32-byte secret key."""
    return X25519PrivateKey.from_private_bytes(secret_key).public_key().public_bytes_raw()


def new_secret_key() -> bytes:
    """A fresh X25519 secret key (32 raw bytes)."""
    return X25519PrivateKey.generate().private_bytes_raw()


def make_header(session_key: bytes, sender_secret: bytes, recipients: Sequence[bytes]) -> bytes:
    """A serialized header giving ``session_key`` to every recipient public key."""
    if not recipients:
        raise EncryptionError("A Crypt4GH file needs at least one recipient public key.")
    packet = c4gh_header.make_packet_data_enc(METHOD_X25519_CHACHA20_POLY1305, session_key)
    keys = [(METHOD_X25519_CHACHA20_POLY1305, sender_secret, bytes(pk)) for pk in recipients]
    return c4gh_header.serialize(c4gh_header.encrypt(packet, keys))


def read_header(stream: BinaryIO) -> tuple[list[bytes], int]:
    """The header's encrypted packets and the header's length; the stream is left at the payload."""
    try:
        packets = list(c4gh_header.parse(stream))
    except ValueError as exc:
        raise TamperedHeader("This is not a readable Crypt4GH file: its header is damaged or "
                             "was altered.") from exc
    size = 16 + sum(4 + len(p) for p in packets)
    return packets, size


def session_keys(packets: Sequence[bytes], secret_key: bytes,
                 sender_public: bytes | None = None) -> list[bytes]:
    """The session keys ``secret_key`` can open; :class:`WrongKey` if none."""
    try:
        opened, _ = c4gh_header.decrypt(packets, [(METHOD_X25519_CHACHA20_POLY1305, secret_key,
                                                    None)], sender_pubkey=sender_public)
        data, edit_list = c4gh_header.partition_packets(opened)
        keys = [c4gh_header.parse_enc_packet(p) for p in data]
    except ValueError as exc:
        raise TamperedHeader("The Crypt4GH header holds a packet seqlife cannot accept (altered "
                             "or of an unsupported kind).") from exc
    if not keys:
        raise WrongKey("The key offered does not open this file: it was encrypted for another "
                       "recipient, or the key belongs to another dataset.")
    if edit_list is not None:
        raise TamperedHeader("The file carries a Crypt4GH edit list; seqlife stores and shares "
                             "whole files only.")
    return keys


BATCH = 16  # segments read, sealed and written per call: fewer Python round trips per byte


def _seal_batch(seal: Callable[..., Any], plain: memoryview, n: int, out: memoryview) -> int:
    """Seal up to BATCH segments of ``plain[:n]`` into ``out``; returns the bytes written."""
    nonces = os.urandom(NONCE_SIZE * BATCH)
    pos = 0
    for i, offset in enumerate(range(0, n, SEGMENT_SIZE)):
        length = min(SEGMENT_SIZE, n - offset)
        out[pos:pos + NONCE_SIZE] = nonces[i * NONCE_SIZE:(i + 1) * NONCE_SIZE]
        seal(out[pos:pos + NONCE_SIZE], plain[offset:offset + length], None,
             out[pos + NONCE_SIZE:pos + NONCE_SIZE + length + TAG_SIZE])
        pos += NONCE_SIZE + length + TAG_SIZE
    return pos


class SealingWriter:
    """Crypt4GH encryption fed by writes, for a pass that must read the plaintext for another
    purpose too: intake validates, hashes and seals each delivered byte in one read. Memory
    stays at one batch of segments; the ciphertext's SHA-256 is taken as it is written."""

    def __init__(self, dst: BinaryIO, recipients: Sequence[bytes]) -> None:
        session_key = os.urandom(32)
        header = make_header(session_key, new_secret_key(), recipients)
        dst.write(header)
        self._dst, self._seal = dst, ChaCha20Poly1305(session_key).encrypt_into
        self._pending = bytearray()
        self._out = memoryview(bytearray(CIPHER_SEGMENT_SIZE * BATCH))
        self.cipher_digest = hashlib.sha256(header)
        self.header_size = len(header)
        self.size, self.cipher_size = 0, len(header)

    def write(self, data: bytes) -> None:
        self._pending += data
        batch = SEGMENT_SIZE * BATCH
        while len(self._pending) >= batch:
            chunk = bytes(self._pending[:batch])
            del self._pending[:batch]
            self._emit(chunk)

    def close(self) -> Sealed:
        """Seal what is left (the last, shorter segment); ``Sealed.sha256`` is left to the
        caller, who hashed the plaintext on its way here."""
        if self._pending:
            self._emit(bytes(self._pending))
            self._pending.clear()
        return Sealed("", self.size, self.cipher_size, self.header_size)

    def _emit(self, chunk: bytes) -> None:
        pos = _seal_batch(self._seal, memoryview(chunk), len(chunk), self._out)
        self._dst.write(self._out[:pos])
        self.cipher_digest.update(self._out[:pos])
        self.size += len(chunk)
        self.cipher_size += pos


def encrypt_stream(src: BinaryIO, dst: BinaryIO, recipients: Sequence[bytes], *,
                   sender_secret: bytes | None = None, progress: Progress | None = None,
                   digest: bool = True) -> Sealed:
    """Encrypt ``src`` into ``dst`` as Crypt4GH for ``recipients`` (X25519 public keys).

    Memory stays at a 1 MiB batch of segments whatever the size. With ``digest`` the SHA-256 of
    the plaintext is computed in the same pass, so the caller can record and later verify it
    (``Sealed.sha256`` is empty otherwise).
    """
    session_key = os.urandom(32)
    header = make_header(session_key, sender_secret or new_secret_key(), recipients)
    dst.write(header)
    seal = ChaCha20Poly1305(session_key).encrypt_into
    hasher = hashlib.sha256() if digest else None
    view = memoryview(bytearray(SEGMENT_SIZE * BATCH))
    out = memoryview(bytearray(CIPHER_SEGMENT_SIZE * BATCH))
    size = cipher = 0
    while True:
        n = _read_full(src, view)
        if n == 0:
            break
        if hasher:
            hasher.update(view[:n])
        pos = _seal_batch(seal, view, n, out)
        dst.write(out[:pos])
        size += n
        cipher += pos
        if progress:
            progress(n)
        if n < len(view):
            break
    return Sealed(hasher.hexdigest() if hasher else "", size, len(header) + cipher, len(header))


def decrypt_stream(src: BinaryIO, dst: BinaryIO | None, secret_key: bytes, *,
                   sender_public: bytes | None = None, progress: Progress | None = None,
                   digest: bool = True) -> Sealed:
    """Decrypt Crypt4GH ``src`` into ``dst`` (or only authenticate it when ``dst`` is None).

    Every segment is authenticated before its bytes are written; a failure stops at once with
    :class:`TamperedPayload` or :class:`Truncated`.
    """
    packets, header_size = read_header(src)
    keys = session_keys(packets, secret_key, sender_public)
    return _decrypt_body(src, dst, keys, header_size, progress, digest)


def _decrypt_body(src: BinaryIO, dst: BinaryIO | None, keys: Sequence[bytes], header_size: int,
                  progress: Progress | None, digest: bool = True) -> Sealed:
    ciphers = [ChaCha20Poly1305(k) for k in keys]
    hasher = hashlib.sha256() if digest else None
    view = memoryview(bytearray(CIPHER_SEGMENT_SIZE * BATCH))
    out = memoryview(bytearray(SEGMENT_SIZE * BATCH))
    size = cipher = index = 0
    while True:
        n = _read_full(src, view)
        if n == 0:
            break
        done = 0
        try:
            for offset in range(0, n, CIPHER_SEGMENT_SIZE):
                end = min(offset + CIPHER_SEGMENT_SIZE, n)
                if end - offset <= NONCE_SIZE + TAG_SIZE:
                    raise _segment_error(index, full=False)
                length = end - offset - NONCE_SIZE - TAG_SIZE
                _open_segment_into(ciphers, view[offset:offset + NONCE_SIZE],
                                   view[offset + NONCE_SIZE:end], out[done:done + length],
                                   index, end - offset == CIPHER_SEGMENT_SIZE)
                done += length
                index += 1
        finally:  # only authenticated segments go out, also when a later one fails
            if hasher:
                hasher.update(out[:done])
            if dst is not None and done:
                dst.write(out[:done])
        size += done
        cipher += n
        if progress:
            progress(done)
        if n < len(view):
            break
    return Sealed(hasher.hexdigest() if hasher else "", size, header_size + cipher, header_size)


def _open_segment_into(ciphers: Sequence[ChaCha20Poly1305], nonce: memoryview, body: memoryview,
                       out: memoryview, index: int, full: bool) -> None:
    for aead in ciphers:
        try:
            aead.decrypt_into(nonce, body, None, out)
            return
        except InvalidTag:
            continue
    raise _segment_error(index, full)


def _segment_error(index: int, full: bool) -> EncryptionError:
    """A short last segment that fails is a cut file; a full one was altered."""
    if not full:
        return Truncated(f"The last segment ({index + 1}) of the encrypted file fails "
                         "authentication: the file was cut short or its end was altered.")
    return TamperedPayload(f"Segment {index + 1} of the encrypted file fails authentication: "
                           "its bytes were changed after encryption.")


def _open_segment(ciphers: Sequence[ChaCha20Poly1305], nonce: bytes, body: memoryview,
                  index: int, full: bool) -> bytes:
    """One authenticated segment as new bytes (the reader hands them out piece by piece)."""
    out = bytearray(len(body) - TAG_SIZE)
    _open_segment_into(ciphers, memoryview(nonce), body, memoryview(out), index, full)
    return bytes(out)


def _read_full(src: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``src`` unless the stream ends (network streams return short reads)."""
    filled = 0
    while filled < len(view):
        n = src.readinto(view[filled:])  # type: ignore[attr-defined]
        if not n:
            break
        filled += n
    return filled


def reencrypt_header(header: bytes | BinaryIO, secret_key: bytes, recipients: Sequence[bytes],
                     *, sender_secret: bytes | None = None) -> bytes:
    """A new header that gives the same session key(s) to ``recipients`` only.

    Only the header is read and written: the payload is shared as it is, so granting access to
    a 100 GB file costs one X25519 exchange per recipient.
    """
    stream = io.BytesIO(header) if isinstance(header, (bytes, bytearray)) else header
    packets, _ = read_header(stream)
    keys = session_keys(packets, secret_key)
    sender = sender_secret or new_secret_key()
    new_packets = []
    for key in keys:
        packet = c4gh_header.make_packet_data_enc(METHOD_X25519_CHACHA20_POLY1305, key)
        new_packets += list(c4gh_header.encrypt(
            packet, [(METHOD_X25519_CHACHA20_POLY1305, sender, bytes(pk)) for pk in recipients]))
    return c4gh_header.serialize(new_packets)


def header_length(stream: BinaryIO) -> int:
    """Length in bytes of the header at the start of ``stream`` (read, not decrypted)."""
    return read_header(stream)[1]


class PlaintextReader(io.RawIOBase):
    """A readable stream of the plaintext of a Crypt4GH stream, one segment at a time.

    Stages that read stored data (classify, de-identify, certify, share) read through this when
    a file is kept encrypted only. Each segment is authenticated before any of its bytes are
    returned; at the end, ``expected`` (sha256, size) from the signed manifest is checked, so a
    file swapped for another validly encrypted one is refused too.
    """

    def __init__(self, raw: BinaryIO, secret_key: bytes,
                 expected: tuple[str, int] | None = None,
                 on_mismatch: Callable[[str, int], Exception] | None = None) -> None:
        super().__init__()
        self._raw = raw
        packets, self.header_size = read_header(raw)
        self._ciphers = [ChaCha20Poly1305(k) for k in session_keys(packets, secret_key)]
        self._expected, self._on_mismatch = expected, on_mismatch
        self._segment = bytearray(CIPHER_SEGMENT_SIZE)
        self._pending = memoryview(b"")
        self._index, self._size, self._done = 0, 0, False
        self._digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def _next_segment(self) -> None:
        view = memoryview(self._segment)
        n = _read_full(self._raw, view)
        if n == 0:
            self._finish()
            return
        if n <= NONCE_SIZE + TAG_SIZE:
            raise _segment_error(self._index, full=False)
        plain = _open_segment(self._ciphers, bytes(view[:NONCE_SIZE]), view[NONCE_SIZE:n],
                              self._index, n == CIPHER_SEGMENT_SIZE)
        self._digest.update(plain)
        self._size += len(plain)
        self._index += 1
        self._pending = memoryview(plain)
        if n < CIPHER_SEGMENT_SIZE:
            self._finish()

    def _finish(self) -> None:
        self._done = True
        if self._raw.read(1):  # also lets a verifying stream check the stored object's digest
            raise TamperedPayload("Bytes follow the last segment of the encrypted file: it was "
                                  "altered after encryption.")
        if self._expected is None:
            return
        got = (self._digest.hexdigest(), self._size)
        if got != tuple(self._expected):
            factory = self._on_mismatch or (lambda _s, _n: TamperedPayload(
                "The decrypted file differs from its recorded digest: it was replaced."))
            raise factory(*got)

    def readinto(self, buffer: Any) -> int:  # type: ignore[override]
        target = memoryview(buffer).cast("B")
        while not self._pending and not self._done:
            self._next_segment()
        if not self._pending:
            return 0
        n = min(len(target), len(self._pending))
        target[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()
