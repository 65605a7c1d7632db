"""Errors of the deidentify stage: terminal, written for a steward, never carrying a data value."""

from __future__ import annotations

from seqlife.exceptions import SeqlifeError


class DeidentificationError(SeqlifeError):
    """De-identification refused or could not complete; nothing was released."""

    stage = "deidentify"


class CodeIndexDestroyed(DeidentificationError):
    """The project's patient code index was destroyed with the last of its datasets: nobody can
    re-identify its subjects any more (GB/T 39725 §10.2 h; §11.7.4.3 a)."""

    def __init__(self, project: str, destroyed_on: str, destruction: str) -> None:
        super().__init__(
            f"The patient code index of project {project} was destroyed on {destroyed_on} with the "
            f"last of the project's datasets (destruction {destruction}, see `seqlife destroy "
            "certificate`): its subjects can no longer be re-identified (GB/T 39725 §10.2 h; "
            "§11.7.4.3 a).", project=project, destruction=destruction)


class KAnonymityNotReached(DeidentificationError):
    """No node of the lattice reaches k within the suppression budget (GB/T 39725 §10.2 e).

    ``best_k`` is the largest k the most generalised node reaches with at most ``budget`` rows
    suppressed (0 when even that node cannot keep a single class).
    """

    def __init__(self, k: int, best_k: int, max_suppression: float, budget: int,
                 quasi_identifiers: list[str], l: int | None = None) -> None:
        diversity = f" and l = {l} distinct sensitive values per class" if l else ""
        super().__init__(
            f"k-anonymity not reached: k = {k}{diversity} was asked for the quasi-identifiers "
            f"{quasi_identifiers}, but the best reachable within the suppression budget "
            f"({max_suppression:.1%}, {budget} rows) is k = {best_k}, even with every "
            "quasi-identifier generalised to the top of its hierarchy (GB/T 39725 §10.2 e). "
            "Nothing was released. A steward can widen the hierarchies (add coarser levels ending "
            "in '*'), raise the suppression budget in the policy, or drop a quasi-identifier from "
            "the release.",
            k=k, best_k=best_k, max_suppression=max_suppression, budget=budget,
            quasi_identifiers=list(quasi_identifiers), l=l,
        )
        self.k = k
        self.best_k = best_k
        self.max_suppression = max_suppression
        self.budget = budget
        self.quasi_identifiers = list(quasi_identifiers)
        self.l = l


class ReidentificationRiskTooHigh(DeidentificationError):
    """The re-identification test on an output failed (GB/T 39725 §11.4.2.4; RARE §4.5)."""

    def __init__(self, metric: str, value: float, threshold: float) -> None:
        super().__init__(
            f"Re-identification test failed: {metric} = {value:.4g} exceeds the limit "
            f"{threshold:.4g} (GB/T 39725 §11.4.2.4; RARE §4.5). Nothing was released; "
            "generalise the quasi-identifiers further, raise k, or drop a quasi-identifier, then "
            "run de-identification again.",
            metric=metric, value=value, threshold=threshold,
        )
        self.metric = metric
        self.value = value
        self.threshold = threshold


class UndecidedColumns(DeidentificationError):
    """Columns the stage cannot decide from the approved classification: it stops (fail closed)
    and names each column with what a steward must decide. Column names only, never values."""

    def __init__(self, decisions: dict[str, str]) -> None:
        lines = "; ".join(f"'{column}': {what}" for column, what in decisions.items())
        super().__init__(
            f"De-identification stopped: {len(decisions)} column(s) need a steward's decision "
            f"before anything is released — {lines}. Decide with `seqlife classify approve "
            "DATASET --override FILE:FIELD=GRADE:IDENTIFIER[:ROLE] --reason ...` (GB/T 39725 "
            "§10.2; §6.2).", columns=list(decisions))
        self.decisions = dict(decisions)
