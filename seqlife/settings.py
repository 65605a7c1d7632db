"""One settings object, read from ``SEQLIFE_*`` environment variables.

Embedded defaults need no server: a SQLite catalog, a local versioned object store and a local key
store, all under ``SEQLIFE_HOME``. Production points the same code at PostgreSQL and S3.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from seqlife.exceptions import ConfigurationError
from seqlife.network import Network, parse_networks

#: Documented in ``seqlife --help``; name -> what it sets.
ENVIRONMENT_VARIABLES: dict[str, str] = {
    "SEQLIFE_HOME": "working directory for the embedded defaults (default ./.seqlife)",
    "SEQLIFE_DB_URL": "catalog database (default sqlite:///$SEQLIFE_HOME/catalog.db; "
    "production postgresql+psycopg://user@host:5432/db)",
    "SEQLIFE_STORE_URL": "object store (default a versioned directory $SEQLIFE_HOME/store; "
    "production s3://bucket[/prefix])",
    "SEQLIFE_S3_ENDPOINT_URL": "S3 endpoint for s3:// stores (e.g. http://127.0.0.1:8333); "
    "credentials come from the usual AWS_* variables",
    "SEQLIFE_KEYSTORE_DIR": "local key store, never inside the object store "
    "(default $SEQLIFE_HOME/keys)",
    "SEQLIFE_MASTER_KEY": "local master key wrapping the per-dataset data keys: 32 bytes, "
    "base64 (default: a 0600 file made in the key store on first use)",
    "SEQLIFE_KMS_KEY_ID": "wrap data keys with this AWS KMS key instead of the local master key",
    "SEQLIFE_KMS_ENDPOINT_URL": "KMS endpoint (e.g. http://127.0.0.1:5000); region and "
    "credentials from AWS_*",
    "SEQLIFE_BACKUP_DIR": "second location for backups of the catalog and object store "
    "(default $SEQLIFE_HOME/backups/data)",
    "SEQLIFE_KEY_BACKUP_DIR": "backups of the key store, kept apart from the data backups "
    "(default $SEQLIFE_HOME/backups/keys)",
    "SEQLIFE_DASK_ADDRESS": "Dask scheduler (tcp://host:8786) the per-file tasks of collect, "
    "deidentify and encrypt fan out on (default: Prefect's own runner)",
    "SEQLIFE_REFERENCE": "FASTA file(s) of the reference genomes CRAM files were made with, "
    "separated by ':' (plain or gzip); their sequences are cached by MD5 under "
    "$SEQLIFE_HOME/references and htslib never looks them up on a network",
    "SEQLIFE_TLS_CERT": "PEM certificate (chain) every server of seqlife presents, e.g. "
    "`share serve` (default: a self-signed pair for localhost made under $SEQLIFE_HOME/tls)",
    "SEQLIFE_TLS_KEY": "PEM private key of SEQLIFE_TLS_CERT (set both or neither)",
    "SEQLIFE_TRUSTED_PROXIES": "comma-separated CIDRs of reverse proxies whose X-Forwarded-For "
    "names the caller (default none: the caller is the socket peer)",
    "SEQLIFE_PLAIN_HTTP": "'loopback' lets a server answer plain HTTP on 127.0.0.1/::1 only, "
    "for tests; refused for any other host (default: TLS only)",
    "SEQLIFE_ACTOR": "who is acting, stamped on audit records (default the login name)",
    "SEQLIFE_ROLE": "the actor's role, stamped on audit records (default operator)",
}


@dataclass(frozen=True)
class Settings:
    """Where the catalog, object store and key store live, how servers are reached, and who is
    acting."""

    home: Path
    db_url: str
    store_url: str
    s3_endpoint_url: str | None
    keystore_dir: Path
    actor: str
    role: str
    kms_key_id: str | None = None
    kms_endpoint_url: str | None = None
    backup_dir: Path | None = None
    key_backup_dir: Path | None = None
    references: tuple[Path, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    trusted_proxies: tuple[Network, ...] = ()
    plain_http: bool = False

    @property
    def prefect_home(self) -> Path:
        """Prefect's ephemeral API keeps its SQLite database here, inside our home."""
        return self.home / "prefect"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        """Build settings from the environment and refuse a key store inside the object store."""
        env = dict(os.environ if env is None else env)
        home = Path(env.get("SEQLIFE_HOME", ".seqlife")).expanduser().resolve()
        store_url = env.get("SEQLIFE_STORE_URL") or (home / "store").as_uri()
        keystore_dir = Path(env.get("SEQLIFE_KEYSTORE_DIR") or home / "keys").expanduser().resolve()
        settings = cls(
            home=home,
            db_url=env.get("SEQLIFE_DB_URL") or f"sqlite:///{home / 'catalog.db'}",
            store_url=store_url,
            s3_endpoint_url=env.get("SEQLIFE_S3_ENDPOINT_URL") or None,
            keystore_dir=keystore_dir,
            actor=env.get("SEQLIFE_ACTOR") or env.get("USER") or "operator",
            role=env.get("SEQLIFE_ROLE") or "operator",
            kms_key_id=env.get("SEQLIFE_KMS_KEY_ID") or None,
            kms_endpoint_url=env.get("SEQLIFE_KMS_ENDPOINT_URL") or None,
            backup_dir=Path(env.get("SEQLIFE_BACKUP_DIR") or home / "backups" / "data")
            .expanduser().resolve(),
            key_backup_dir=Path(env.get("SEQLIFE_KEY_BACKUP_DIR") or home / "backups" / "keys")
            .expanduser().resolve(),
            references=tuple(Path(part).expanduser().resolve() for part in
                             env.get("SEQLIFE_REFERENCE", "").split(os.pathsep) if part),
            tls_cert=_path(env.get("SEQLIFE_TLS_CERT")),
            tls_key=_path(env.get("SEQLIFE_TLS_KEY")),
            trusted_proxies=parse_networks(env.get("SEQLIFE_TRUSTED_PROXIES", ""),
                                           "SEQLIFE_TRUSTED_PROXIES"),
            plain_http=_plain_http(env.get("SEQLIFE_PLAIN_HTTP", "")),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse contradictory settings before anything runs: the key store may not sit in the
        store (keys apart from data, GB/T 39725 §10.1 g); a TLS certificate comes with its key."""
        parsed = urlparse(self.store_url)
        if parsed.scheme not in ("file", "s3"):
            raise ConfigurationError(
                f"SEQLIFE_STORE_URL must start with file:// or s3://, got scheme '{parsed.scheme}'."
            )
        if parsed.scheme == "file":
            store_dir = Path(parsed.path).resolve()
            if self.keystore_dir == store_dir or store_dir in self.keystore_dir.parents:
                raise ConfigurationError(
                    "SEQLIFE_KEYSTORE_DIR lies inside the object store; keys must be stored apart "
                    "from data (GB/T 39725 §10.1 g). Choose a directory outside the store."
                )
        if not self.db_url.startswith(("sqlite", "postgresql")):
            raise ConfigurationError("SEQLIFE_DB_URL must be a sqlite:// or postgresql+psycopg:// URL.")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigurationError("SEQLIFE_TLS_CERT and SEQLIFE_TLS_KEY go together: set both "
                                     "(your certificate and its key) or neither (a self-signed "
                                     "pair for local use).")


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser().resolve() if value else None


def _plain_http(value: str) -> bool:
    """Plain HTTP is asked for by name, never by a truthy accident ('1', 'yes')."""
    if value not in ("", "loopback"):
        raise ConfigurationError(f"SEQLIFE_PLAIN_HTTP may only be 'loopback' (got '{value}'); "
                                 "servers answer over TLS unless a loopback test asks otherwise.")
    return value == "loopback"
