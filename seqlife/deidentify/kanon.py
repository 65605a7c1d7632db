"""k-anonymity by optimal full-domain generalisation with record suppression (GB/T 39725 §10.2 e).

Every quasi-identifier has a :class:`~seqlife.deidentify.hierarchy.Hierarchy`; a *node* of the
generalisation lattice picks one level per quasi-identifier. A node is **k-anonymous** when the
rows of its equivalence classes smaller than k (and, if asked, with fewer than l distinct sensitive
values) number at most ``max_suppression * n``; those rows are removed and every remaining
combination of quasi-identifier values is shared by at least k rows.

**Loss.** Each k-anonymous node is scored by one number,
``loss = precision + suppressed / n``, where ``precision`` is ARX's Prec, the mean over the
quasi-identifiers of ``level / height`` (0 = nothing generalised, 1 = everything ``*``). Both terms
are shares in [0, 1]: suppressing 1 % of the rows costs as much as generalising 1 % of the way up
the hierarchies. Ties go to fewer suppressed rows, then to the lexicographically lower node.

**Monotonicity (the assumption the search relies on).** Each level of a hierarchy coarsens the one
below it (two values equal at level i are equal at level i+1; checked at start-up). Generalising a
node therefore only merges its classes, so rows in classes of size >= k (or with >= l distinct
sensitive values) stay in such classes, and ``suppressed(parent) <= suppressed(child)``. Hence
k-anonymity within the budget is inherited by every more general node, and the suppressed count of
any evaluated node is a lower bound for all its more specific nodes.

**Search.** The returned node is the one with the least loss among *all* k-anonymous nodes of the
lattice, not only among the minimal ones: because of the suppression term a node above a minimal
node can have a lower loss, so the search is a branch and bound over the whole lattice:

1. the top node (everything at its coarsest level) is evaluated first; if it is not k-anonymous
   no node is, and :class:`KAnonymityNotReached` is raised;
2. a greedy descent from the top (best child at each step) gives a first incumbent;
3. the remaining nodes are visited from the most to the least generalised (ancestors before
   descendants). A node is skipped when ``precision + lower_bound(suppressed) / n`` cannot beat
   the incumbent, or when its lower bound already exceeds the budget (a descendant of a node that
   is not k-anonymous, i.e. predictive tagging as in Flash/OLA). Every evaluation raises the
   suppression lower bound of all its descendants (a box of the lattice array).

All minimal k-anonymous nodes whose loss could compete are thereby evaluated; nodes that cannot
win are never touched. A node is evaluated on integer codes computed once per quasi-identifier and
level (factorised distinct values), mixed into one int64 key per row and counted with
``np.bincount`` / ``np.unique``: about a millisecond per node on 100,000 rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from seqlife.deidentify.errors import DeidentificationError, KAnonymityNotReached
from seqlife.deidentify.hierarchy import Hierarchy

#: Largest lattice searched; larger ones need fewer quasi-identifiers or shorter hierarchies.
MAX_LATTICE_NODES = 2_000_000
_EPS = 1e-12
_KEY_LIMIT = 1 << 62


@dataclass(frozen=True)
class KAnonResult:
    """The released table and how it was obtained (no data values outside ``table``)."""

    table: pd.DataFrame          # generalised rows, suppressed rows removed, original index kept
    levels: dict[str, int]       # chosen level per quasi-identifier
    suppressed: int              # rows removed
    k_achieved: int              # min class size after suppression (0 if no row is left)
    classes: int
    info_loss: dict[str, float]
    l_diversity: int | None      # min distinct sensitive values per class, if ``sensitive`` given


@dataclass(frozen=True)
class _Evaluation:
    suppressed: int
    class_keys: np.ndarray       # sorted class keys (or dense ids) ...
    sizes: np.ndarray            # ... their sizes in rows ...
    members: np.ndarray          # ... and in people (distinct subjects; = sizes, one row each)
    bad: np.ndarray              # ... and whether the class is suppressed
    distinct: np.ndarray | None  # distinct sensitive values per class
    row_key: np.ndarray          # key of every row


class _Lattice:
    """Integer codes of every quasi-identifier at every level, and node evaluation on them."""

    def __init__(self, df: pd.DataFrame, qis: Sequence[str], hierarchies: Mapping[str, Hierarchy],
                 k: int, l: int | None, sensitive: str | None,
                 weights: np.ndarray | None = None, subject: str | None = None) -> None:
        self.n = len(df)
        self.weights = weights  # rows each row stands for (aggregated input), or one each
        self.k, self.l = k, l
        self.qis = list(qis)
        self.heights = [hierarchies[q].height for q in qis]
        self.codes: list[list[np.ndarray]] = []     # [qi][level] -> row codes
        self.cards: list[list[int]] = []            # [qi][level] -> number of distinct codes
        self.generalised: list[list[pd.Series]] = []  # [qi][level] -> value of each base code
        self.base: list[np.ndarray] = []
        for q in qis:
            base, uniques = pd.factorize(df[q], use_na_sentinel=False)
            distinct = pd.Series(uniques)
            dtype = _smallest_code_type(len(uniques))
            codes, cards, values = [], [], []
            previous: np.ndarray | None = None
            for level, fn in enumerate(hierarchies[q].levels):
                mapped = distinct if level == 0 else fn(distinct)
                if len(mapped) != len(distinct):
                    raise DeidentificationError(
                        f"Hierarchy '{hierarchies[q].name}' level {level} does not return one "
                        "value per input value.")
                level_codes, level_uniques = pd.factorize(mapped, use_na_sentinel=False)
                if previous is not None:
                    _check_nesting(previous, level_codes, hierarchies[q].name, level)
                previous = level_codes
                codes.append(level_codes.astype(dtype)[base])
                cards.append(max(len(level_uniques), 1))
                values.append(pd.Series(mapped).reset_index(drop=True))
            self.base.append(base)
            self.codes.append(codes)
            self.cards.append(cards)
            self.generalised.append(values)
        self.sensitive: np.ndarray | None = None
        self.sensitive_card = 1
        # Several rows of one person count once: k is about people, not rows.
        self.subjects: np.ndarray | None = None
        self.subject_card = 1
        if subject is not None:
            codes, uniques = pd.factorize(df[subject], use_na_sentinel=False)
            if len(uniques) < self.n:
                self.subjects, self.subject_card = codes.astype(np.int64), len(uniques)
        if sensitive is not None:
            scodes, suniques = pd.factorize(df[sensitive], use_na_sentinel=False)
            self.sensitive, self.sensitive_card = scodes.astype(np.int64), max(len(suniques), 1)
        self.evaluated = 0

    def precision(self, node: Sequence[int]) -> float:
        if not node:
            return 0.0
        return float(sum(lv / h for lv, h in zip(node, self.heights)) / len(node))

    def row_key(self, node: Sequence[int]) -> tuple[np.ndarray, int]:
        """One int64 per row identifying its class at ``node``, and the key range."""
        key = np.zeros(self.n, dtype=np.int64)
        card = 1
        for i, level in enumerate(node):
            c = self.cards[i][level]
            if c == 1:
                continue
            if card * c >= _KEY_LIMIT:
                key, uniques = pd.factorize(key)
                key, card = key.astype(np.int64), max(len(uniques), 1)
            if card == 1:
                key = self.codes[i][level].astype(np.int64)
            else:
                key *= c
                key += self.codes[i][level]
            card *= c
        return key, card

    def evaluate(self, node: Sequence[int]) -> _Evaluation:
        self.evaluated += 1
        key, card = self.row_key(node)
        if self.weights is not None:
            class_keys, inverse = np.unique(key, return_inverse=True)
            sizes = np.bincount(inverse.reshape(-1), weights=self.weights).astype(np.int64)
        elif card <= 2 * self.n + 1024:
            counts = np.bincount(key, minlength=card)
            class_keys = np.flatnonzero(counts)
            sizes = counts[class_keys]
        else:
            class_keys, sizes = np.unique(key, return_counts=True)
        members = sizes
        if self.subjects is not None:
            dense = np.searchsorted(class_keys, key)
            pairs = np.unique(dense * self.subject_card + self.subjects)
            members = np.bincount(pairs // self.subject_card, minlength=len(class_keys))
        bad = members < self.k
        distinct = None
        if self.sensitive is not None and self.n:
            if card * self.sensitive_card >= _KEY_LIMIT:
                dense = np.searchsorted(class_keys, key)
                pairs = dense * self.sensitive_card + self.sensitive
                classes_of_pairs = np.unique(pairs) // self.sensitive_card
                distinct = np.bincount(classes_of_pairs, minlength=len(class_keys))
            else:
                pairs = key * self.sensitive_card + self.sensitive
                pair_classes = np.unique(pairs) // self.sensitive_card
                _, distinct = np.unique(pair_classes, return_counts=True)
            if self.l:
                bad |= distinct < self.l
        suppressed = int(sizes[bad].sum())
        return _Evaluation(suppressed, class_keys, sizes, members, bad, distinct, key)

    def table(self, df: pd.DataFrame, node: Sequence[int], evaluation: _Evaluation
              ) -> pd.DataFrame:
        """``df`` with each quasi-identifier at its level and the suppressed classes removed."""
        out = df.copy(deep=False)  # copy-on-write: df itself is never modified
        for i, (q, level) in enumerate(zip(self.qis, node)):
            if level:
                values = self.generalised[i][level].array.take(self.base[i])
                out[q] = pd.Series(values, index=df.index, name=q)
        if evaluation.suppressed:
            bad_keys = evaluation.class_keys[evaluation.bad]
            keep = ~np.isin(evaluation.row_key, bad_keys)
            out = out.loc[keep]
        return out


def _smallest_code_type(distinct: int) -> type:
    """The narrowest unsigned integer holding codes 0..distinct-1 (codes are kept per level)."""
    for candidate in (np.uint8, np.uint16, np.uint32):
        if distinct <= np.iinfo(candidate).max + 1:
            return candidate
    return np.int64


def _check_nesting(lower: np.ndarray, upper: np.ndarray, name: str, level: int) -> None:
    """Level ``level`` must map every class of the level below to exactly one class."""
    pairs = np.unique(np.stack([lower, upper], axis=1), axis=0)
    if len(pairs) != len(np.unique(lower)):
        raise DeidentificationError(
            f"Hierarchy '{name}': level {level} is not a coarsening of level {level - 1} (two "
            "values equal at the lower level differ above it); the k-anonymity search needs "
            "nested levels.")


def _best_k_within(evaluation: _Evaluation, l: int | None, budget: int) -> int:
    """Largest k reachable at this node with at most ``budget`` rows suppressed.

    Classes failing l-diversity are suppressed whatever k is; of the others, the smallest are
    suppressed first, and k is then the smallest class kept. 0 when nothing can be kept.
    """
    sizes, members = evaluation.sizes, evaluation.members
    failing_l = (np.zeros(len(sizes), dtype=bool) if evaluation.distinct is None or not l
                 else evaluation.distinct < l)
    forced = int(sizes[failing_l].sum())
    order = np.argsort(members[~failing_l], kind="stable")
    ordered, rows = members[~failing_l][order], sizes[~failing_l][order]
    removed = forced + np.concatenate([[0], np.cumsum(rows)])
    reachable = [int(size) for j, size in enumerate(ordered) if removed[j] <= budget]
    return max(reachable, default=0)


def _validate(df: pd.DataFrame, qis: Sequence[str], hierarchies: Mapping[str, Hierarchy], k: int,
              max_suppression: float, sensitive: str | None, l: int | None) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DeidentificationError(f"k must be a whole number >= 1 (got {k!r}).")
    if not 0.0 <= float(max_suppression) <= 1.0:
        raise DeidentificationError(
            f"max_suppression is a share of rows in [0, 1] (got {max_suppression!r}).")
    if len(set(qis)) != len(qis):
        raise DeidentificationError(f"Quasi-identifiers are listed twice: {list(qis)}.")
    missing = [q for q in qis if q not in df.columns]
    if missing:
        raise DeidentificationError(f"Quasi-identifier column(s) {missing} are not in the table.")
    unmapped = [q for q in qis if q not in hierarchies]
    if unmapped:
        raise DeidentificationError(
            f"No generalisation hierarchy for quasi-identifier(s) {unmapped}; add them to "
            "deidentify_hierarchies.yaml.")
    if l is not None:
        if sensitive is None:
            raise DeidentificationError("l-diversity needs the sensitive column to be named.")
        if l < 1:
            raise DeidentificationError(f"l must be a whole number >= 1 (got {l!r}).")
    if sensitive is not None and sensitive not in df.columns:
        raise DeidentificationError(f"Sensitive column '{sensitive}' is not in the table.")


def anonymise(df: pd.DataFrame, quasi_identifiers: list[str], hierarchies: dict[str, Hierarchy],
              k: int = 5, max_suppression: float = 0.05, sensitive: str | None = None,
              l: int | None = None, weights: str | None = None,
              subject: str | None = None) -> KAnonResult:
    """Generalise ``quasi_identifiers`` to the least-loss k-anonymous node (see module docstring).

    Args:
        df: the table; columns other than the quasi-identifiers are returned untouched.
        quasi_identifiers: columns generalised together.
        hierarchies: a hierarchy for every quasi-identifier.
        k: minimum class size (GB/T 39725 §10.2 e: 5).
        max_suppression: share of rows that may be removed instead of generalising further.
        sensitive: column whose distinct values per class are counted (l-diversity).
        l: if given, classes with fewer than ``l`` distinct ``sensitive`` values are suppressed
            within the same budget.
        weights: column holding how many rows each row stands for, when ``df`` is the table
            aggregated by its quasi-identifiers (and sensitive column); counts, budget and loss
            are then those of the full table (see ``seqlife.deidentify.streaming``).
        subject: column identifying the person of each row: a class must then hold ``k``
            distinct people (a patient with five rows is one person, not five); the budget still
            counts rows.

    Returns:
        The generalised table (suppressed rows removed, index kept) with its levels and loss.

    Raises:
        KAnonymityNotReached: even the most generalised node needs more suppression than allowed.
        DeidentificationError: the arguments or hierarchies are unusable.
    """
    qis = list(quasi_identifiers)
    _validate(df, qis, hierarchies, k, max_suppression, sensitive, l)
    counts = df[weights].to_numpy(dtype=np.int64) if weights is not None else None
    n = int(counts.sum()) if counts is not None else len(df)
    budget = int(math.floor(float(max_suppression) * n + 1e-9))
    if subject is not None and weights is not None:
        raise DeidentificationError("Counting people needs the rows, not aggregated counts.")
    if subject is not None and subject not in df.columns:
        raise DeidentificationError(f"Subject column '{subject}' is not in the table.")
    lattice = _Lattice(df, qis, hierarchies, int(k), l, sensitive, counts, subject)
    heights = tuple(lattice.heights)
    shape = tuple(h + 1 for h in heights)
    size = math.prod(shape)
    if size > MAX_LATTICE_NODES:
        raise DeidentificationError(
            f"The generalisation lattice has {size} nodes (limit {MAX_LATTICE_NODES}); use fewer "
            "quasi-identifiers or shorter hierarchies.")

    cache: dict[tuple[int, ...], int] = {}  # node -> suppressed rows (row keys are not kept)
    lower_bound = np.zeros(shape, dtype=np.int64)

    def evaluate(node: tuple[int, ...]) -> int:
        if node not in cache:
            suppressed = lattice.evaluate(node).suppressed
            cache[node] = suppressed
            if node:
                box = lower_bound[tuple(slice(0, lv + 1) for lv in node)]
                np.maximum(box, suppressed, out=box)
        return cache[node]

    def loss(node: tuple[int, ...], suppressed: int) -> float:
        return lattice.precision(node) + (suppressed / n if n else 0.0)

    top = heights
    top_suppressed = evaluate(top)
    if top_suppressed > budget:
        raise KAnonymityNotReached(int(k), _best_k_within(lattice.evaluate(top), l, budget),
                                   float(max_suppression), budget, qis, l)

    best = (loss(top, top_suppressed), top_suppressed, top)

    def consider(node: tuple[int, ...], suppressed: int) -> None:
        nonlocal best
        if suppressed <= budget:
            candidate = (loss(node, suppressed), suppressed, node)
            if (candidate[0] < best[0] - _EPS
                    or (abs(candidate[0] - best[0]) <= _EPS and candidate[1:] < best[1:])):
                best = candidate

    # Greedy descent for a good first incumbent.
    current = top
    while True:
        children = []
        for i, lv in enumerate(current):
            if lv == 0:
                continue
            child = current[:i] + (lv - 1,) + current[i + 1:]
            if lower_bound[child] > budget:
                continue
            suppressed = evaluate(child)
            consider(child, suppressed)
            if suppressed <= budget:
                children.append((loss(child, suppressed), child))
        if not children:
            break
        current = min(children)[1]

    # Branch and bound over the rest, ancestors first.
    if size > 1:
        grid = np.indices(shape).reshape(len(shape), -1).T
        precision = (grid / np.asarray(heights, dtype=float)).mean(axis=1)
        order = np.lexsort((precision, -grid.sum(axis=1)))
        flat_bound = lower_bound.reshape(-1)  # a view: evaluations keep updating it
        for idx in order:
            bound = flat_bound[idx]
            if bound > budget or precision[idx] + bound / max(n, 1) > best[0] + _EPS:
                continue
            node = tuple(int(v) for v in grid[idx])
            if node in cache:
                continue
            consider(node, evaluate(node))

    _, suppressed, node = best
    nodes_evaluated = lattice.evaluated
    chosen = lattice.evaluate(node)  # again, for its classes and row keys
    kept = chosen.members[~chosen.bad]
    released = n - suppressed
    classes = int(len(kept))
    k_achieved = int(kept.min()) if classes else 0
    l_achieved = None
    if chosen.distinct is not None:
        kept_distinct = chosen.distinct[~chosen.bad]
        l_achieved = int(kept_distinct.min()) if classes else 0
    precision_loss = lattice.precision(node)
    info_loss = {
        "loss": precision_loss + (suppressed / n if n else 0.0),
        "precision": precision_loss,
        "suppression_share": suppressed / n if n else 0.0,
        "discernibility": float(np.sum(kept.astype(np.float64) ** 2) + suppressed * n),
        "avg_class_size_ratio": released / classes / k if classes else 0.0,
        "nodes_evaluated": float(nodes_evaluated),
        "lattice_size": float(size),
    }
    return KAnonResult(
        table=lattice.table(df, node, chosen),
        levels={q: int(lv) for q, lv in zip(qis, node)},
        suppressed=int(suppressed),
        k_achieved=k_achieved,
        classes=classes,
        info_loss=info_loss,
        l_diversity=l_achieved,
    )


def class_sizes(df: pd.DataFrame, quasi_identifiers: Sequence[str],
                subject: str | None = None) -> np.ndarray:
    """Size of every row's class (rows sharing all quasi-identifier values; missing is a value),
    counted in distinct ``subject`` values (people) when that column is named."""
    n = len(df)
    if not quasi_identifiers:
        people = df[subject].nunique(dropna=False) if subject is not None else n
        return np.full(n, people, dtype=np.int64)
    key = np.zeros(n, dtype=np.int64)
    card = 1
    for q in quasi_identifiers:
        codes, uniques = pd.factorize(df[q], use_na_sentinel=False)
        c = max(len(uniques), 1)
        if card * c >= _KEY_LIMIT:
            key, u = pd.factorize(key)
            card = max(len(u), 1)
        key = key * c + codes
        card *= c
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    if subject is not None:
        counts = people_per_class(inverse, df[subject], len(counts))
    return counts[inverse]


def people_per_class(classes: np.ndarray, subjects: pd.Series, count: int) -> np.ndarray:
    """Distinct people in each of ``count`` classes (``classes``: each row's class index)."""
    people, uniques = pd.factorize(subjects, use_na_sentinel=False)
    width = max(len(uniques), 1)
    pairs = np.unique(classes.astype(np.int64) * width + people)
    return np.bincount(pairs // width, minlength=count)


def k_of(df: pd.DataFrame, quasi_identifiers: Sequence[str], subject: str | None = None) -> int:
    """Minimum class size over the quasi-identifiers, in people when ``subject`` is named (0 for
    an empty table)."""
    if len(df) == 0:
        return 0
    return int(class_sizes(df, quasi_identifiers, subject).min())
