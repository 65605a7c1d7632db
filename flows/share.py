"""Flow ``share``: deliver what an approved data use agreement grants, by its tier.

file -> the recipient's watermarked extract as Crypt4GH for their public key; enclave -> the
extract placed in a controlled working area whose exports need committee approval; api -> a
bearer token for the controlled API. Every delivery is refused when the agreement is not in
force, the institution is blacklisted, or a cross-border total would pass the cap; refusals and
deliveries are audited with size, content and time (HDS §8.3 Table 5).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from infra.resources import Resources, build_resources
from seqlife.exceptions import SeqlifeError
from seqlife.settings import Settings
from seqlife.share import rules
from tasks import share as t


def run_share(res: Resources, agreement: str, recipient_public: bytes | None,
              out_dir: Path | None) -> dict:
    obj = f"agreement:{agreement}"
    try:
        with res.sessions() as session:
            row, _ = t.agreement_of(session, agreement)
            tier = row.request.document["tier"]
        if tier == "file":
            if recipient_public is None or out_dir is None:
                raise rules.ShareError("A file share needs the recipient's public key and an "
                                       "output folder.")
            return {"tier": tier, **t.deliver_file(res, agreement, recipient_public, out_dir)}
        if tier == "enclave":
            return {"tier": tier, **t.open_enclave(res, agreement)}
        if tier == "api":
            return {"tier": tier, **t.issue_token(res, agreement)}
        raise rules.ShareError(f"Agreement {agreement} is for the {tier} tier; publish "
                               "aggregates with `seqlife share publish`.")
    except SeqlifeError as exc:
        res.audit.append("share.refuse", obj, "refused", reason=exc.message)
        raise


@flow(name="share", log_prints=False)
def share_flow(agreement: str, recipient_key: str | None = None, out_dir: str | None = None
               ) -> dict:
    """Deliver under an approved data use agreement.

    Args:
        agreement: the agreement id (``dua-...``).
        recipient_key: file tier: the recipient's Crypt4GH public key file.
        out_dir: file tier: where the encrypted extract is written.
    """
    from crypt4gh.keys import get_public_key

    public = get_public_key(recipient_key) if recipient_key else None
    return run_share(build_resources(Settings.from_env()), agreement, public,
                     Path(out_dir) if out_dir else None)
