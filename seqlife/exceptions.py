"""One error hierarchy for every stage.

Messages are written for a data steward: they say what was refused, where, and what to do, and
they never contain a personal identifier, a secret or a data value. ``Transient`` marks errors a
retry may cure (storage or database hiccups); everything else is terminal and never retried.
"""

from __future__ import annotations


class SeqlifeError(Exception):
    """Root of every error seqlife raises on purpose."""

    #: The lifecycle stage the error belongs to; stamped on the audit record.
    stage: str = "core"

    def __init__(self, message: str, **attrs: object) -> None:
        super().__init__(message)
        self.message = message
        self.attrs = attrs
        self._recorded: str | None = None

    def record_as(self, text: str) -> None:
        """What is kept at rest (audit trail, the orchestrator's run history) when it must name
        things differently from what the person at the terminal reads in ``message`` — a
        delivered file by its code rather than the lab's sample ID."""
        self._recorded = text

    def __str__(self) -> str:
        return self._recorded or self.message


class Transient:
    """Mixin: the operation may succeed if retried (network, storage, database unavailable)."""


class ConfigurationError(SeqlifeError):
    """Settings or a policy file are wrong; nothing was done."""

    stage = "config"


class PolicyFileError(ConfigurationError):
    """A policy file is missing a key, has an unknown key or a value of the wrong kind."""


class ResidencyViolation(ConfigurationError):
    """A store, catalog, KMS or backup location lies outside what the residency policy allows
    (GB/T 39725 §7 q). Names each location by its setting and host, never by its full URL (a
    database URL may hold a password)."""

    def __init__(self, refusals: list[tuple[str, str, str]], clause: str) -> None:
        listed = "; ".join(f"{what} ({setting}): {why}" for what, setting, why in refusals)
        super().__init__(
            f"Health data and its keys stay in the country ({clause}): {listed}. Point these "
            "settings at in-country locations; a server that stands in the country but is not "
            "listed is added to allowed_hosts in data_catalog/policies/residency.yaml with the "
            "record of where it stands. Nothing was opened.",
            locations=[what for what, _, _ in refusals], clause=clause)
        self.refusals = list(refusals)
        self.clause = clause


class InsecureTransport(ConfigurationError):
    """A server would answer without TLS where plain HTTP is not allowed (GB/T 39725 §10.1 g;
    §8.3 Table 5 API 2)."""


# --- infrastructure -------------------------------------------------------------------------


class StorageError(SeqlifeError):
    """The object store refused or failed an operation."""

    stage = "store"


class StorageUnavailable(StorageError, Transient):
    """The object store could not be reached; retrying may help."""


class ObjectNotFound(StorageError):
    """No object (or no such version) under that key."""


class IntegrityError(StorageError):
    """Stored bytes do not match their recorded SHA-256: the object was altered or damaged."""


class CatalogError(SeqlifeError):
    """The catalog database refused or failed an operation."""

    stage = "catalog"


class CatalogUnavailable(CatalogError, Transient):
    """The catalog database could not be reached; retrying may help."""


class AuditError(SeqlifeError):
    """The audit trail could not be written or does not verify."""

    stage = "audit"


class AuditChainBroken(AuditError):
    """Recomputing the hash chain found a changed, missing or reordered record."""

    def __init__(self, seq: int, problem: str) -> None:
        super().__init__(
            f"Audit trail broken at record #{seq}: {problem}. Records from #{seq} on cannot be "
            "trusted; restore the audit table from backup and report the incident (SEQ §7.5).",
            seq=seq,
            problem=problem,
        )
        self.seq = seq
        self.problem = problem


# --- collect --------------------------------------------------------------------------------


class CollectError(SeqlifeError):
    """Intake refused a file or table; nothing of this collection was registered."""

    stage = "collect"


class MalformedFile(CollectError):
    """A file is not a valid instance of its format (truncated, corrupt, wrong structure)."""

    def __init__(self, path: str, file_format: str, problem: str) -> None:
        super().__init__(
            f"{path}: not a valid {file_format} file ({problem}). Nothing from this collection "
            "was registered; replace the file with a complete copy from the sequencing lab and "
            "collect again.",
            path=path,
            format=file_format,
        )
        self.path = path
        self.file_format = file_format
        self.problem = problem


class UnknownFormat(CollectError):
    """The content of a file matches none of the accepted formats."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path}: content is not FASTQ, BAM, CRAM, VCF or a declared table; seqlife "
            "recognises files by content, not by name. Remove it from the delivery or declare it.",
            path=path,
        )


class SchemaMismatch(CollectError):
    """A table does not follow its declared schema."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(
            f"{path}: table does not follow its declared schema ({problem}). Fix the export "
            "and collect again; nothing was registered.",
            path=path,
        )


class PolicyViolation(SeqlifeError):
    """A rule of the standard forbids the operation; retrying will not help."""

    stage = "policy"


class ConsentMissing(PolicyViolation):
    """Data for a subject has no informed-consent record (GB/T 39725 §7 a)."""

    def __init__(self, where: str, subject_ref: str) -> None:
        super().__init__(
            f"{where}: subject {subject_ref} has no informed-consent record (GB/T 39725 §7 a). "
            "Register the signed consent, or remove the subject's data from the delivery.",
            subject=subject_ref,
        )


class ConsentScopeError(PolicyViolation):
    """The subject's consent does not cover the collection scenario (GB/T 39725 §7 a–b)."""

    def __init__(self, where: str, subject_ref: str, scope: str, scenario: str) -> None:
        super().__init__(
            f"{where}: subject {subject_ref} consented to '{scope}' use only, which does not "
            f"cover '{scenario}' (GB/T 39725 §7 a–b). A new consent is needed for this use.",
            subject=subject_ref,
            scope=scope,
            scenario=scenario,
        )


# --- classify -------------------------------------------------------------------------------


class ClassificationError(SeqlifeError):
    """Classification could not be proposed, approved or overridden as asked."""

    stage = "classify"


class ClassificationMissing(ClassificationError):
    """The next stage needs a classification and there is none (GB/T 39725 App. F)."""

    def __init__(self, dataset: str) -> None:
        super().__init__(
            f"{dataset} has not been classified. Run `seqlife classify {dataset}` and have a "
            "steward approve the proposal before this step (GB/T 39725 §6.2, App. F).",
            dataset=dataset)


class ClassificationNotApproved(ClassificationError):
    """A proposal exists but no steward has approved it."""

    def __init__(self, dataset: str) -> None:
        super().__init__(
            f"The classification of {dataset} is proposed but not approved. A steward must "
            f"review it (`seqlife classify approve {dataset}`) before this step (GB/T 39725 App. F).",
            dataset=dataset)


class ClassificationStale(ClassificationError):
    """The approved classification describes other content than the version now stored."""

    def __init__(self, dataset: str) -> None:
        super().__init__(
            f"The approved classification of {dataset} was made for different content; classify "
            "and approve the current version again before this step.",
            dataset=dataset)


class HeaderFieldsUndecided(ClassificationError):
    """Sequencing header fields the handling table does not know have no steward decision, so
    the classification is not approved (fail closed; GB/T 39725 §10.2 a, d)."""


class TableDecodeError(CollectError):
    """A hospital table cannot be read: its encoding, container or layout is not accepted.

    The message names the file label, the position of the problem (row or column number, sheet
    count) and what to do; it never quotes a byte or cell of the file.
    """

    def __init__(self, path: str, problem: str, remedy: str) -> None:
        super().__init__(f"{path}: {problem}. {remedy}", path=path)
        self.path = path
        self.problem = problem
        self.remedy = remedy


class ColumnMapNeeded(CollectError):
    """A delivered table's columns are not ours: a map was proposed from their content and waits
    for a steward (GB/T 39725 §11.3.4.4 a). Names columns and the proposal, never a value."""

    def __init__(self, path: str, proposal: str, undecided: dict[str, str],
                 missing: tuple[str, ...]) -> None:
        parts = [f"{path}: its columns are not the schema's; a column map was proposed from "
                 f"their content and written to {proposal}."]
        if undecided:
            parts.append("A steward must decide " + "; ".join(
                f"'{c}': {why}" for c, why in undecided.items()) + ".")
        if missing:
            parts.append(f"No delivered column fills the required column(s) {list(missing)}.")
        parts.append("Review the proposal, then collect with --map FILE (or --accept-map when "
                     "nothing is left to decide). Nothing was registered.")
        super().__init__(" ".join(parts), path=path, proposal=proposal,
                         undecided=list(undecided), missing=list(missing))
        self.proposal = proposal
        self.undecided = dict(undecided)
        self.missing = missing
