"""`seqlife encrypt`, `seqlife decrypt` and `seqlife keys`: Crypt4GH files and the key store."""

from __future__ import annotations

import argparse
import getpass
import os
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from seqlife.cli.common import Commands, console, emit, err_console, required
from seqlife.settings import Settings


def _progress(args: argparse.Namespace, total: int) -> Progress:
    return Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), console=err_console,
                    disable=args.json or total < (64 << 20))


def _public_key(path: str) -> bytes:
    from crypt4gh.keys import get_public_key

    try:
        return get_public_key(path)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"seqlife: cannot read the Crypt4GH public key {path} "
                         f"({type(exc).__name__}); use a file written by crypt4gh-keygen or "
                         "`seqlife keys generate`.")


def _secret_key(path: str) -> bytes:
    """A crypt4gh-keygen secret key; passphrase from C4GH_PASSPHRASE, else asked for."""
    from crypt4gh.keys import get_private_key

    from seqlife.encrypt.c4gh import WrongKey

    def passphrase() -> str:
        return os.environ.get("C4GH_PASSPHRASE") or getpass.getpass(f"Passphrase for {path}: ")

    try:
        return get_private_key(path, passphrase)
    except SystemExit as exc:  # the library exits on a wrong passphrase
        raise WrongKey(f"The passphrase does not unlock the key file {Path(path).name}.") from exc
    except (OSError, ValueError) as exc:
        raise SystemExit(f"seqlife: cannot read the Crypt4GH secret key {path} "
                         f"({type(exc).__name__}).")


def _stream_file(args: argparse.Namespace, src_path: Path, out: Path, work: Any) -> Any:
    """Run ``work(src, dst, progress)`` from ``src_path`` into ``out``, removing ``out`` on error."""
    total = src_path.stat().st_size
    tmp = out.with_name(f".{out.name}.partial")
    try:
        with _progress(args, total) as progress, open(src_path, "rb") as src, \
                open(tmp, "wb") as dst:
            bar = progress.add_task(src_path.name, total=total)
            result = work(src, dst, lambda n: progress.advance(bar, n))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return result


def cmd_encrypt(args: argparse.Namespace, settings: Settings) -> int:
    """A file for recipients, or a dataset version kept encrypted (flow)."""
    from seqlife.encrypt import c4gh

    source = Path(args.target)
    if source.is_file():
        out = Path(required(args.out, "--out"))
        if not args.recipient:
            raise SystemExit("seqlife encrypt: name at least one --recipient public key")
        recipients = [_public_key(p) for p in args.recipient]
        sealed = _stream_file(args, source, out, lambda s, d, p: c4gh.encrypt_stream(
            s, d, recipients, progress=p))
        payload = {"in": str(source), "out": str(out), "recipients": len(recipients),
                   **sealed.__dict__}
        emit(args, payload, lambda: console.print(
            f"Encrypted {source.name} -> {out} (Crypt4GH, {len(recipients)} recipient(s)); "
            f"plaintext sha256 {sealed.sha256}"))
        return 0
    from flows.encrypt import encrypt_flow

    result = encrypt_flow(args.target, args.version)
    emit(args, result, lambda: console.print(
        f"[green]Encrypted[/] {result['dataset']} v{result['version']}: {result['verified']} "
        f"file(s) sealed at intake and authenticated, {result['encrypted']} sealed now, "
        f"{result['purged']} plaintext object(s) purged"))
    return 0


def cmd_decrypt(args: argparse.Namespace, settings: Settings) -> int:
    """A Crypt4GH file with a key file (recipients) or a dataset's data key (operators, audited)."""
    from seqlife.encrypt import c4gh

    source, out = Path(args.input), Path(required(args.out, "--out"))
    if not source.is_file():
        raise SystemExit(f"seqlife decrypt: {source} is not a file")
    if args.key:
        secret = _secret_key(args.key)
    elif args.dataset:
        from infra.resources import build_resources

        res = build_resources(settings)
        secret = res.data_keys.secret_key(args.dataset)
        res.audit.append("encrypt.decrypt", f"dataset:{args.dataset}", "ok",
                         reason=f"file {source.name} decrypted with the dataset key")
    else:
        raise SystemExit("seqlife decrypt: give --key SECKEY (a crypt4gh key file) or "
                         "--dataset NAME")
    sealed = _stream_file(args, source, out, lambda s, d, p: c4gh.decrypt_stream(
        s, d, secret, progress=p))
    emit(args, {"in": str(source), "out": str(out), **sealed.__dict__}, lambda: console.print(
        f"Decrypted {source.name} -> {out}: {sealed.size:,} bytes, every segment authenticated; "
        f"sha256 {sealed.sha256}"))
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    from infra.resources import build_resources

    if args.action == "generate":
        return _keys_generate(args)
    res = build_resources(settings)
    if args.action == "list":
        rows = res.data_keys.describe()

        def render() -> None:
            table = Table("dataset", "master key", "created", "rotated", "shredded",
                          "public key sha256", title=f"data keys (current master "
                                                     f"{res.data_keys.master.key_id})")
            for r in rows:
                table.add_row(r["dataset"], r["kek"], r["created_at"], r.get("rotated_at", ""),
                              r.get("shredded_at", ""), r["public_key_sha256"])
            console.print(table)

        emit(args, {"master": res.data_keys.master.key_id, "keys": rows}, render)
        return 0
    if args.action == "rotate":
        from flows.encrypt import rotate_keys_flow

        result = rotate_keys_flow(args.kms_key_id, args.new_master_env)
        emit(args, result, lambda: console.print(
            f"[green]Rotated[/]: {result['rewrapped']} data key(s) re-wrapped from "
            f"{result['from']} to {result['to']}; no payload was touched"))
        return 0
    dataset = required(args.dataset, "DATASET")
    reason = required(args.reason, "--reason")
    from tasks.encrypt import shred_data_key

    shredded, backups = shred_data_key(res, dataset)
    res.audit.append("keys.shred", f"dataset:{dataset}",
                     "ok" if shredded or backups else "unchanged",
                     reason=f"{reason} (removed from {backups} key-store backup(s))")
    emit(args, {"dataset": dataset, "shredded": shredded, "key_backups_purged": backups},
         lambda: console.print(
             f"[red]Data key of {dataset} destroyed[/] (and in {backups} key-store backup(s)): "
             "every encrypted copy is now unreadable" if shredded or backups
             else f"{dataset} had no data key left to destroy"))
    return 0


def _keys_generate(args: argparse.Namespace) -> int:
    """A recipient key pair in the crypt4gh-keygen format."""
    from crypt4gh.keys import c4gh as c4gh_keys

    sk, pk = Path(required(args.sk, "--sk")), Path(required(args.pk, "--pk"))
    passphrase = os.environ.get(args.passphrase_env or "", "").encode() or None
    if passphrase is None and not args.nocrypt:
        raise SystemExit("seqlife keys generate: give --passphrase-env VAR (the secret key is "
                         "locked with it) or --nocrypt")
    c4gh_keys.generate(str(sk), str(pk), passphrase=passphrase, comment=b"seqlife")
    emit(args, {"sk": str(sk), "pk": str(pk), "locked": passphrase is not None},
         lambda: console.print(f"Key pair written: {sk} (secret, 0400) and {pk} (public)"))
    return 0


def register(commands: Commands) -> None:
    encrypt = commands.add_parser(
        "encrypt", help="encrypt a file for recipients, or keep a dataset version encrypted",
        description="seqlife encrypt FILE --out OUT --recipient PUBKEY [...]: a Crypt4GH file any "
                    "GA4GH tool reads.\nseqlife encrypt DATASET [--version N]: collect and "
                    "deidentify store every file sealed (Crypt4GH under the dataset's data key, "
                    "signed SHA-256 manifest); this authenticates every stored copy against the "
                    "manifest, and seals and purges any plaintext an older catalog left.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    encrypt.add_argument("target", help="a file, or a dataset name")
    encrypt.add_argument("--out", help="output file (file mode)")
    encrypt.add_argument("--recipient", action="append",
                         help="recipient public key (crypt4gh-keygen format); repeatable")
    encrypt.add_argument("--version", type=int, help="dataset version (default the latest)")
    encrypt.set_defaults(handler=cmd_encrypt)

    decrypt = commands.add_parser(
        "decrypt", help="decrypt a Crypt4GH file with a key file or a dataset's key",
        description="seqlife decrypt IN --out OUT --key SECKEY: with a crypt4gh-keygen secret key "
                    "(passphrase from C4GH_PASSPHRASE or asked).\nseqlife decrypt IN --out OUT "
                    "--dataset NAME: with the dataset's data key from the key store (audited). "
                    "A wrong key, a truncated file or a changed byte stops with a typed error.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    decrypt.add_argument("input", help="Crypt4GH file")
    decrypt.add_argument("--out", help="plaintext output file")
    decrypt.add_argument("--key", help="secret key file (crypt4gh-keygen format)")
    decrypt.add_argument("--dataset", help="use this dataset's data key instead")
    decrypt.set_defaults(handler=cmd_decrypt)

    keys = commands.add_parser(
        "keys", help="list, rotate or shred data keys; generate a recipient key pair",
        description="seqlife keys list: data keys, their master key and dates (nothing secret).\n"
                    "seqlife keys rotate [--kms-key-id ID | --new-master-env VAR]: re-wrap every "
                    "data key under a new master key (payloads untouched).\n"
                    "seqlife keys shred DATASET --reason TEXT: destroy the dataset's data key, "
                    "making every encrypted copy unreadable (crypto-shredding; audited).\n"
                    "seqlife keys generate --sk SK --pk PK (--passphrase-env VAR | --nocrypt): a "
                    "key pair in the crypt4gh-keygen format.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    keys.add_argument("action", choices=("list", "rotate", "shred", "generate"))
    keys.add_argument("dataset", nargs="?", help="with shred: the dataset")
    keys.add_argument("--reason", help="with shred: why the key is destroyed")
    keys.add_argument("--kms-key-id", help="with rotate: move the data keys under this KMS key")
    keys.add_argument("--new-master-env", help="with rotate: environment variable holding the "
                                               "new base64 master key")
    keys.add_argument("--sk", help="with generate: secret key file to write")
    keys.add_argument("--pk", help="with generate: public key file to write")
    keys.add_argument("--passphrase-env", help="with generate: variable holding the passphrase")
    keys.add_argument("--nocrypt", action="store_true", help="with generate: leave it unlocked")
    keys.set_defaults(handler=cmd_keys)
