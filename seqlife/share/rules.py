"""Share rules, pure core: who may ask for data, what is checked before the committee sees a
request, how reviewers are drawn and votes tallied, what a data use agreement must hold and how
long it runs, and the cross-border cap.

Every verdict carries the clause it comes from, so a steward can answer "why was this refused?"
without reading code. Nothing here touches storage, the catalog or a workflow engine; the shell
gathers the facts (``DatasetFacts``, ``PastGrant``, consents, the expert pool) and records results.
Messages never echo personal data: applicants and reviewers are not named, values are not quoted.
"""

from __future__ import annotations

import calendar
import hashlib
import random
from collections import Counter
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any, Collection, Mapping, Sequence

from seqlife.exceptions import SeqlifeError
from seqlife.policy import Policy, load_policy

STAGE = "share"

REQUIRED_RULES = frozenset({
    "certified_only", "institution_only", "review_criteria", "score_range",
    "reviewers_per_request", "approval_fraction", "max_extensions", "follow_up_months",
    "destruction_days_after_end", "cross_border_record_cap", "home_country",
    "piecemeal_window_days", "api_limits", "small_cells", "duo_purposes", "confidentiality_years",
})

#: Delivery tiers (GB/T 39725 §6.5 Table 2, §8.3 Table 5): file, API, enclave, public aggregate.
TIERS = ("file", "api", "enclave", "aggregate")

#: The only zone whose certified versions may be shared (RARE §3.5): de-identified research data.
SHAREABLE_ZONE = "03_deidentified"


def load_share_policy() -> Policy:
    return load_policy(STAGE, REQUIRED_RULES)


# --- errors ---------------------------------------------------------------------------------


class ShareError(SeqlifeError):
    """Root of the share stage's errors."""

    stage = "share"


class RequestRefused(ShareError):
    """Pre-review checks failed; every failed check is listed with its clause."""

    def __init__(self, what: str, findings: Sequence["Finding"]) -> None:
        failed = [f for f in findings if not f.ok]
        items = "; ".join(f"[{f.rule}] {f.detail} ({f.clause})" for f in failed)
        super().__init__(
            f"{what} refused before review: {len(failed)} check(s) failed — {items}. Nothing was "
            "sent to the committee; correct the request and submit it again.", what=what)
        self.findings = failed


class ReviewError(ShareError):
    """The review does not follow the rules: wrong reviewer, double or missing vote, bad score."""


class AgreementError(ShareError):
    """The data use agreement is incomplete, not in force, or cannot be extended again."""


class CrossBorderRefused(ShareError):
    """A transfer abroad breaks GB/T 39725 §7 o–p; refer it to the authorities."""


# --- request --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResearchPlan:
    """The research plan a request must carry (RARE §4.1.2)."""

    purpose: str
    inclusion: str
    exclusion: str
    variables: tuple[str, ...]
    endpoints: str
    analysis: str


@dataclass(frozen=True)
class ShareRequest:
    """One institution's request for one dataset version, as submitted."""

    id: str
    institution: str
    applicant: str
    project: str
    funded: bool
    qualifications: tuple[str, ...]
    plan: ResearchPlan
    duo_codes: tuple[str, ...]
    dataset: str
    version: int | None
    variables: tuple[str, ...]
    records: int
    destination_country: str
    tier: str
    applicant_is_institution: bool = True


_PLAN_TEXT = ("purpose", "inclusion", "exclusion", "endpoints", "analysis")
_REQUIRED_STR = ("institution", "applicant", "project", "dataset", "destination_country", "tier")
_KNOWN_KEYS = frozenset({"id", "institution", "applicant", "project", "funded", "qualifications",
                         "plan", "duo_codes", "dataset", "version", "variables", "records",
                         "destination_country", "tier", "applicant_is_institution"})


def parse_request(doc: Mapping[str, Any], request_id: str) -> ShareRequest:
    """Build a request from a YAML/JSON document (keys as the field names, ``plan`` nested).

    Missing, unknown or wrongly typed fields raise ShareError naming the field; values are never
    echoed, since a document may carry names. ``version`` may be absent (latest certified version)
    and ``applicant_is_institution`` defaults to true.
    """
    where = f"Share request {request_id}"
    if not isinstance(doc, Mapping):
        raise ShareError(f"{where}: the request must be a mapping of field names to values.")
    unknown = set(doc) - _KNOWN_KEYS
    if unknown:
        raise ShareError(f"{where}: unknown field(s) {sorted(map(str, unknown))}; check the "
                         "spelling against the request form.")
    if "id" in doc and doc["id"] != request_id:
        raise ShareError(f"{where}: field 'id' does not match the request id.")

    def need(name: str, container: Mapping[str, Any] = doc, prefix: str = "") -> Any:
        if name not in container or container[name] is None:
            raise ShareError(f"{where}: field '{prefix}{name}' is missing.")
        return container[name]

    def text(name: str, container: Mapping[str, Any] = doc, prefix: str = "",
             non_empty: bool = True) -> str:
        value = need(name, container, prefix)
        if not isinstance(value, str) or (non_empty and not value.strip()):
            raise ShareError(f"{where}: field '{prefix}{name}' must be a non-empty text."
                             if non_empty else f"{where}: field '{prefix}{name}' must be text.")
        return value.strip()

    def texts(name: str, container: Mapping[str, Any] = doc, prefix: str = "",
              non_empty: bool = True) -> tuple[str, ...]:
        value = need(name, container, prefix)
        if (not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip()
                                                            for v in value)
                or (non_empty and not value)):
            raise ShareError(f"{where}: field '{prefix}{name}' must be a "
                             f"{'non-empty ' if non_empty else ''}list of non-empty texts.")
        return tuple(v.strip() for v in value)

    def flag(name: str, default: bool | None = None) -> bool:
        if name not in doc and default is not None:
            return default
        value = need(name)
        if not isinstance(value, bool):
            raise ShareError(f"{where}: field '{name}' must be true or false.")
        return value

    strings = {name: text(name) for name in _REQUIRED_STR}
    if strings["tier"] not in TIERS:
        raise ShareError(f"{where}: field 'tier' must be one of {', '.join(TIERS)}.")
    country = strings["destination_country"].upper()
    if not (country.isascii() and country.isalpha()):
        raise ShareError(f"{where}: field 'destination_country' must be an ISO 3166 country code.")

    plan_doc = need("plan")
    if not isinstance(plan_doc, Mapping):
        raise ShareError(f"{where}: field 'plan' must be a mapping with "
                         f"{', '.join(_PLAN_TEXT + ('variables',))}.")
    plan_unknown = set(plan_doc) - set(_PLAN_TEXT) - {"variables"}
    if plan_unknown:
        raise ShareError(f"{where}: unknown field(s) in 'plan': {sorted(map(str, plan_unknown))}.")
    # Empty plan parts are accepted here and reported by check_request (RARE §4.1.2).
    plan_text = {name: text(name, plan_doc, "plan.", non_empty=False) for name in _PLAN_TEXT}
    plan = ResearchPlan(variables=texts("variables", plan_doc, "plan.", non_empty=False),
                        **plan_text)

    version = doc.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or version < 1):
        raise ShareError(f"{where}: field 'version' must be a positive whole number or absent.")
    records = need("records")
    if isinstance(records, bool) or not isinstance(records, int) or records < 1:
        raise ShareError(f"{where}: field 'records' must be a positive whole number.")

    return ShareRequest(
        id=request_id, institution=strings["institution"], applicant=strings["applicant"],
        project=strings["project"], funded=flag("funded"),
        qualifications=texts("qualifications", non_empty=False), plan=plan,
        duo_codes=texts("duo_codes"), dataset=strings["dataset"], version=version,
        variables=texts("variables"), records=records, destination_country=country,
        tier=strings["tier"], applicant_is_institution=flag("applicant_is_institution", True))


# --- pre-review checks ----------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One check's verdict, why, and the clause it applies."""

    rule: str
    ok: bool
    detail: str
    clause: str


@dataclass(frozen=True)
class PastGrant:
    """A request granted earlier, as far as piecemeal and cross-border limits need it."""

    request_id: str
    institution: str
    dataset: str
    variables: frozenset[str]
    records: int
    decided_on: date
    destination_country: str


@dataclass(frozen=True)
class DatasetFacts:
    """What the catalog knows of the requested version."""

    dataset: str
    version: int
    certified: bool
    zone: str
    deidentified: bool
    important_data: bool
    columns: frozenset[str]
    allowed_tiers: frozenset[str]


def _same(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def _names(items: Collection[str]) -> str:
    return ", ".join(sorted(items))


def check_request(request: ShareRequest, facts: DatasetFacts, *, past: Sequence[PastGrant],
                  blacklisted: Collection[str], today: date, policy: Policy) -> list[Finding]:
    """Every pre-review check with its verdict; the committee sees a request only if all pass.

    ``past`` must hold every earlier grant (all institutions): the piecemeal check looks at this
    institution's grants on this dataset within the window, the cross-border cap at all grants to
    the destination country. Committee approval of a transfer abroad is checked again at delivery
    with ``cross_border_check(approved=...)``.
    """
    if not _same(request.dataset, facts.dataset) or (
            request.version is not None and request.version != facts.version):
        raise ShareError(f"Share request {request.id}: the catalog facts describe "
                         f"{facts.dataset} v{facts.version}, not the requested dataset version.")
    findings: list[Finding] = []

    individual = policy["institution_only"] and not request.applicant_is_institution
    findings.append(Finding(
        "institution", not individual,
        "applied by an institution" if not individual else
        "applied by an individual; only institutions may apply (head signs and seals)",
        policy.clause("institution_only")))

    findings.append(Finding(
        "qualified_researcher", bool(request.qualifications),
        f"{len(request.qualifications)} qualification(s) stated" if request.qualifications else
        "no qualification of the researcher is stated", "RARE §3.6, §4.1.1"))

    funded = request.funded and bool(request.project.strip())
    findings.append(Finding(
        "funded_project", funded,
        "a funded project supports the request" if funded else
        "no funded project supports the request", "RARE §3.6, §4.1.1; GB/T 39725 §11.4.2.2"))

    plan = request.plan
    missing = [name for name in _PLAN_TEXT if not getattr(plan, name).strip()]
    if not plan.variables:
        missing.insert(3, "variables")
    findings.append(Finding(
        "research_plan", not missing,
        "purpose, inclusion, exclusion, variables, endpoints and analysis plan given" if not
        missing else f"the research plan lacks: {', '.join(missing)}", "RARE §4.1.2"))

    problems = []
    if facts.zone != SHAREABLE_ZONE:
        problems.append(f"zone {facts.zone} is not research data ({SHAREABLE_ZONE}); raw and "
                        "registry data are never shared directly")
    if policy["certified_only"] and not facts.certified:
        problems.append("the version is not certified")
    if not facts.deidentified:
        problems.append("the version is not de-identified")
    findings.append(Finding(
        "certified_research_data", not problems,
        f"{facts.dataset} v{facts.version} is certified, de-identified research data" if not
        problems else "; ".join(problems), policy.clause("certified_only")))

    asked, planned = set(request.variables), set(plan.variables)
    beyond_plan, beyond_data = asked - planned, asked - facts.columns
    problems = []
    if not asked:
        problems.append("no variables requested")
    if beyond_plan:
        problems.append(f"variable(s) not in the research plan: {_names(beyond_plan)}")
    if beyond_data:
        problems.append(f"variable(s) not in the dataset: {_names(beyond_data)}")
    findings.append(Finding(
        "minimum_necessary", not problems,
        f"{len(asked)} variable(s), all in the plan and the dataset" if not problems else
        "; ".join(problems), "GB/T 39725 §8.3 a, §11.4.2.2; RARE §4.1"))

    window = timedelta(days=int(policy["piecemeal_window_days"]))
    earlier = [g for g in past if _same(g.institution, request.institution)
               and _same(g.dataset, request.dataset) and g.request_id != request.id
               and today - window <= g.decided_on <= today]
    # The new variables themselves are judged by minimum_necessary; here, what earlier grants add.
    outside = set().union(*(g.variables for g in earlier)) - planned
    findings.append(Finding(
        "piecemeal", not outside,
        f"with {len(earlier)} earlier grant(s) in {window.days} days, all variables stay within "
        "the plan" if not outside else
        f"together with {len(earlier)} earlier grant(s) to the same institution on this dataset "
        f"within {window.days} days the data would include variable(s) outside this plan: "
        f"{_names(outside)}", policy.clause("piecemeal_window_days")))

    barred = any(_same(name, request.institution) or _same(name, request.applicant)
                 for name in blacklisted)
    findings.append(Finding(
        "blacklist", not barred,
        "neither the institution nor the applicant is blacklisted" if not barred else
        "the institution or the applicant is blacklisted for an earlier breach; no request is "
        "accepted", "RARE §4.11"))

    tier_ok = request.tier in facts.allowed_tiers
    findings.append(Finding(
        "tier", tier_ok,
        f"tier '{request.tier}' is allowed for this dataset" if tier_ok else
        f"tier '{request.tier}' is not allowed for this dataset (allowed: "
        f"{_names(facts.allowed_tiers) or 'none'})", "GB/T 39725 §6.5 Table 2, §8.3 Table 5"))

    already = sum(g.records for g in past if g.request_id != request.id
                  and _same(g.destination_country, request.destination_country))
    # Approval is the committee's later step; here only what can be refused up front is checked.
    findings.append(cross_border_check(
        request.destination_country, request.records, already,
        deidentified=facts.deidentified, important_data=facts.important_data, approved=True,
        policy=policy))
    return findings


def require_passed(request: ShareRequest, findings: Sequence[Finding]) -> None:
    """Raise RequestRefused listing every failed check; only a request with none goes to review."""
    if any(not f.ok for f in findings):
        raise RequestRefused(f"Share request {request.id}", findings)


# --- consent --------------------------------------------------------------------------------


def eligible_subjects(consents: Mapping[str, tuple[frozenset[str], bool]],
                      duo_codes: Sequence[str], policy: Policy) -> tuple[set[str], set[str]]:
    """Split subjects (by surrogate) into eligible and excluded for the requested data use.

    A subject is eligible when not withdrawn and, for every DUO code, holds a consent scope that
    covers it (GB/T 39725 §7 a–b; RARE §4.9): use beyond the consented scope needs new consent.
    """
    purposes = policy["duo_purposes"]
    if not duo_codes:
        raise ShareError("A share needs at least one DUO data-use code to check consent against "
                         f"({policy.clause('duo_purposes')}).")
    unknown = sorted({code for code in duo_codes if code not in purposes})
    if unknown:
        raise ShareError(f"Unknown DUO code(s) {', '.join(unknown)}: the share policy maps only "
                         f"{', '.join(sorted(purposes))} to consent scopes. Add the code to "
                         f"share.yaml with the scopes that cover it, or use a known code.")
    needed = []
    for code in duo_codes:
        covering = purposes[code]
        needed.append(frozenset([covering] if isinstance(covering, str) else covering))
    eligible, excluded = set(), set()
    for subject, (scopes, withdrawn) in consents.items():
        if not withdrawn and all(scopes & covering for covering in needed):
            eligible.add(subject)
        else:
            excluded.add(subject)
    return eligible, excluded


# --- committee review -----------------------------------------------------------------------


@dataclass(frozen=True)
class Reviewer:
    """A member of the expert pool and the parties they must not judge."""

    id: str
    institution: str
    conflicts: frozenset[str] = frozenset()


def _conflicted(reviewer: Reviewer, request: ShareRequest) -> bool:
    return (_same(reviewer.institution, request.institution)
            or any(_same(c, request.institution) or _same(c, request.applicant)
                   for c in reviewer.conflicts))


def draw_reviewers(pool: Sequence[Reviewer], request: ShareRequest, seed: bytes,
                   policy: Policy) -> list[Reviewer]:
    """Draw reviewers at random from the expert pool after recusing conflicts of interest.

    The draw is reproducible from the seed (and independent of the pool's order), so an auditor
    can replay it (GB/T 39725 §11.4.2.3).
    """
    wanted = int(policy["reviewers_per_request"])
    ids = Counter(r.id for r in pool)
    if any(n > 1 for n in ids.values()):
        raise ReviewError("The expert pool lists the same reviewer more than once; fix the pool "
                          "before drawing.")
    free = sorted((r for r in pool if not _conflicted(r, request)), key=lambda r: r.id)
    if len(free) < wanted:
        raise ReviewError(
            f"Share request {request.id}: only {len(free)} of {len(pool)} reviewers in the pool "
            f"are free of conflicts of interest, {wanted} are needed "
            f"({policy.clause('reviewers_per_request')}). Enlarge the expert pool.")
    rng = random.Random(hashlib.sha256(seed).digest())
    return rng.sample(free, wanted)


@dataclass(frozen=True)
class Vote:
    """One drawn reviewer's vote and scoring sheet."""

    reviewer: str
    approve: bool
    scores: Mapping[str, int]
    comment: str = ""


@dataclass(frozen=True)
class Decision:
    """The committee's decision, recorded with the tally and the mean score per criterion."""

    approved: bool
    in_favour: int
    voters: int
    required: str
    mean_scores: Mapping[str, float]
    message: str


def tally(drawn: Sequence[str], votes: Sequence[Vote], policy: Policy) -> Decision:
    """Count the votes of the drawn reviewers: approved only with MORE than the approval fraction.

    Every drawn reviewer votes exactly once, nobody else votes, and every criterion of the
    scoring sheet is scored within range; otherwise ReviewError and no decision.
    """
    if not drawn:
        raise ReviewError("No reviewers were drawn; draw them before tallying.")
    if len(set(drawn)) != len(drawn):
        raise ReviewError("The list of drawn reviewers names someone twice.")
    counts = Counter(v.reviewer for v in votes)
    outsiders = [r for r in counts if r not in set(drawn)]
    if outsiders:
        raise ReviewError(f"{len(outsiders)} vote(s) came from someone not drawn for this request; "
                          "only drawn reviewers may vote (GB/T 39725 §11.4.2.3).")
    doubled = [r for r, n in counts.items() if n > 1]
    if doubled:
        raise ReviewError(f"{len(doubled)} reviewer(s) voted more than once; each drawn reviewer "
                          "votes exactly once.")
    absent = [r for r in drawn if r not in counts]
    if absent:
        raise ReviewError(f"{len(absent)} of {len(drawn)} drawn reviewer(s) have not voted; the "
                          "review is incomplete.")
    criteria = list(policy["review_criteria"])
    low, high = int(policy["score_range"]["min"]), int(policy["score_range"]["max"])
    for vote in votes:
        if set(vote.scores) != set(criteria):
            raise ReviewError(
                f"A scoring sheet must score exactly {', '.join(criteria)} "
                f"({policy.clause('review_criteria')}); missing: "
                f"{_names(set(criteria) - set(vote.scores)) or 'none'}, unknown: "
                f"{_names(set(map(str, vote.scores)) - set(criteria)) or 'none'}.")
        bad = [c for c, s in vote.scores.items()
               if isinstance(s, bool) or not isinstance(s, int) or not low <= s <= high]
        if bad:
            raise ReviewError(f"Score(s) for {_names(bad)} must be whole numbers from {low} to "
                              f"{high} ({policy.clause('score_range')}).")

    fraction = policy["approval_fraction"]
    numerator, denominator = int(fraction["numerator"]), int(fraction["denominator"])
    voters, in_favour = len(drawn), sum(1 for v in votes if v.approve)
    approved = in_favour * denominator > voters * numerator
    required = f"more than {numerator}/{denominator}"
    clause = policy.clause("approval_fraction")
    means = {c: sum(v.scores[c] for v in votes) / len(votes) for c in criteria}
    verdict = "Approved" if approved else "Not approved"
    return Decision(approved, in_favour, voters, required, means,
                    f"{verdict}: {in_favour} of {voters} reviewers in favour "
                    f"({required} required, {clause}).")


# --- data use agreement ---------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """The signed data use agreement: who, for how long, with which protections."""

    id: str
    request_id: str
    institution: str
    starts: date
    ends: date
    extensions: int
    protection_measures: tuple[str, ...]
    emergency_plan: str


def _add_months(day: date, months: int) -> date:
    """The same day ``months`` later, clamped to the month's last day (31 Jan + 1 -> 28/29 Feb)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def new_agreement(request: ShareRequest, agreement_id: str, starts: date, months: int,
                  protection_measures: Sequence[str], emergency_plan: str) -> Agreement:
    """An agreement for ``months`` of use, in force from ``starts`` through the same date ``months``
    later (day clamped to the month's end). Protection measures, a leak emergency plan and a use
    period are mandatory (GB/T 39725 §11.4.2.5; RARE §4.3)."""
    measures = tuple(m.strip() for m in protection_measures if m and m.strip())
    missing = []
    if not agreement_id.strip():
        missing.append("an agreement id")
    if not measures:
        missing.append("protection measures")
    if not emergency_plan.strip():
        missing.append("a leak emergency plan")
    if months < 1:
        missing.append("a use period of at least one month")
    if missing:
        raise AgreementError(f"The data use agreement for request {request.id} lacks "
                             f"{', '.join(missing)} (GB/T 39725 §11.4.2.5; RARE §4.3); nothing "
                             "may be transferred before it is complete.")
    return Agreement(agreement_id.strip(), request.id, request.institution, starts,
                     _add_months(starts, months), 0, measures,
                     emergency_plan.strip())


def extend(agreement: Agreement, new_end: date, written_request: str, policy: Policy) -> Agreement:
    """Extend the use period on a written request with reasons, at most ``max_extensions`` times."""
    limit, clause = int(policy["max_extensions"]), policy.clause("max_extensions")
    if agreement.extensions >= limit:
        raise AgreementError(f"Agreement {agreement.id} was already extended "
                             f"{agreement.extensions} time(s); at most {limit} extensions are "
                             f"allowed ({clause}). The committee may reopen the topic to others.")
    if not written_request.strip():
        raise AgreementError(f"Agreement {agreement.id}: an extension needs a written request "
                             f"stating the reasons ({clause}).")
    if new_end <= agreement.ends:
        raise AgreementError(f"Agreement {agreement.id}: the new end must be after the current "
                             f"end {agreement.ends.isoformat()}.")
    return replace(agreement, ends=new_end, extensions=agreement.extensions + 1)


def require_active(agreement: Agreement, today: date) -> None:
    """No access or delivery outside the agreed use period (GB/T 39725 §11.4.2.5)."""
    if today < agreement.starts:
        raise AgreementError(f"Agreement {agreement.id} is not in force until "
                             f"{agreement.starts.isoformat()} (GB/T 39725 §11.4.2.5).")
    if today > agreement.ends:
        raise AgreementError(f"Agreement {agreement.id} expired on {agreement.ends.isoformat()}; "
                             "the data must be destroyed (GB/T 39725 §11.4.2.5–11.4.2.6). Ask "
                             "for an extension in writing if use must continue (RARE §3.7).")


def follow_up_due(agreement: Agreement, policy: Policy) -> date:
    """When the requester must have filed outputs with the committee (RARE §3.7)."""
    return _add_months(agreement.starts, int(policy["follow_up_months"]))


def destruction_due(agreement: Agreement, policy: Policy) -> date:
    """Last day to destroy the data and send written proof (GB/T 39725 §11.4.2.6)."""
    return agreement.ends + timedelta(days=int(policy["destruction_days_after_end"]))


# --- cross-border ---------------------------------------------------------------------------


def cross_border_check(destination: str, records: int, already_sent: int, *, deidentified: bool,
                       important_data: bool, approved: bool, policy: Policy) -> Finding:
    """A transfer abroad needs de-identified, non-important data, committee approval and a
    cumulative count per destination within the cap; anything else goes to the authorities."""
    clause, cap = policy.clause("cross_border_record_cap"), int(policy["cross_border_record_cap"])
    if _same(destination, str(policy["home_country"])):
        return Finding("cross_border", True, "domestic recipient; no cross-border limit applies",
                       clause)
    if records < 0 or already_sent < 0:
        raise ShareError("Record counts for a cross-border check cannot be negative.")
    total = already_sent + records
    problems = []
    if not deidentified:
        problems.append("the data is not de-identified")
    if important_data:
        problems.append("the data is important data")
    if not approved:
        problems.append("the data security committee has not approved the transfer")
    if total > cap:
        problems.append(f"{already_sent} record(s) already sent to {destination.upper()} plus "
                        f"{records} requested make {total}, above the cumulative cap of {cap}")
    if problems:
        return Finding("cross_border", False,
                       "; ".join(problems) + "; refer the transfer to the competent authorities",
                       clause)
    return Finding("cross_border", True,
                   f"{total} of {cap} records to {destination.upper()} cumulatively, "
                   "de-identified, not important data", clause)
