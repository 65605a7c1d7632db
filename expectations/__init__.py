"""Great Expectations suites of the quality gate, one module per kind of table.

Each module has ``build_suite(policy, columns=None) -> gx.ExpectationSuite``: the thresholds come
from ``data_catalog/policies/quality.yaml`` (a :class:`seqlife.policy.Policy`), the columns from
the table to validate. A rule whose columns the table lacks is skipped, never guessed; ``columns``
None builds the whole suite (for documentation). Every expectation carries, in its ``meta``, the
policy ``rule`` it comes from and the ``check`` in words, which the pure core
(:mod:`seqlife.quality`) turns into the steward's message with the rule's clause.

- :mod:`expectations.clinical` — subject identifier, codes, lab/age ranges, date order
  (GB/T 39725 §10.1 f, §11.3.4.5 c, §11.3.4.7 e).
- :mod:`expectations.variants` — the variant table derived from VCF (SEQ §5).
- :mod:`expectations.sequencing_qc` — reads, Q30, GC and mapped shares per file (SEQ §5).
- :mod:`expectations.deidentified` — no direct identifier, k-anonymity, date-shift consistency
  (GB/T 39725 §10.2 a, c 3, e); defines the custom ``ExpectQuasiIdentifiersToBeKAnonymous``.

Only ``tasks/quality.py`` imports these modules: GX stays behind the quality stage's task.
"""
