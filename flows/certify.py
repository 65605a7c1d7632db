"""Flow ``certify``: the steward certifies a derived dataset version against DER §5, or the flow
refuses with every unmet requirement listed. Both outcomes are audited."""

from __future__ import annotations

from prefect import flow

from infra.resources import Resources, build_resources
from seqlife import certify as rules
from seqlife.exceptions import PolicyViolation, SeqlifeError
from seqlife.settings import Settings
from tasks import certify as t


def run_certify(res: Resources, dataset: str, version: int | None, scenario: str) -> dict:
    policy = rules.load_certify_policy()
    obj = f"dataset:{dataset}" + (f"@v{version}" if version else "")
    try:
        if res.settings.role != policy["signer_role"]:
            raise PolicyViolation(
                f"Only a data {policy['signer_role']} signs a derived-data certificate (DER §5); "
                f"the current role is '{res.settings.role}'.")
        evidence, docs = t.gather_evidence(res, dataset, version, scenario)
        requirements = rules.check_requirements(evidence, policy)
        unmet = [r for r in requirements if not r.ok]
        if unmet:
            raise rules.CertificationRefused(f"{dataset} v{evidence.version}", unmet)
        issued = t.issue(res, evidence, requirements, policy, docs)
    except SeqlifeError as exc:
        res.audit.append("certify.refuse", obj, "refused", reason=exc.message,
                         policy_hash=policy.content_hash)
        raise
    res.audit.append("certify.sign", f"dataset:{dataset}@v{issued['version']}", "certified",
                     reason=f"certificate {issued['certificate']}",
                     after_digest=issued["signed"]["certificate"]["content_digest"],
                     policy_hash=policy.content_hash)
    return issued


@flow(name="certify", log_prints=False)
def certify_flow(dataset: str, version: int | None = None,
                 scenario: str = "scientific_research") -> dict:
    """Certify a derived (de-identified) dataset version; returns the signed certificate.

    Args:
        dataset: a derived dataset, e.g. `<raw>--<project>` written by the deidentify flow.
        version: its version (latest by default).
        scenario: the application scenario it is certified for (DER §4).
    """
    return run_certify(build_resources(Settings.from_env()), dataset, version, scenario)
